"""ros2_infmllm.engine.heap: freed heap pages really leave the resident set after trim_heap()."""

import ctypes
import os

import pytest

from ros2_infmllm.engine import heap

CHUNK = 2048               # above glibc's tcache and fastbin sizes, below the mmap threshold
CHUNKS = 16384             # 32 MiB


def _rss() -> int:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def test_trim_heap_returns_free_pages_between_live_chunks():
    """32 MiB freed below a live chunk stay resident until trim_heap() releases them."""
    libc = heap._glibc()
    if libc is None:
        pytest.skip('not glibc')
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    blocks = [libc.malloc(CHUNK) for _ in range(CHUNKS)]
    pin = libc.malloc(CHUNK)          # live chunk above them: free() cannot shrink the heap
    try:
        for b in blocks:
            ctypes.memset(b, 1, CHUNK)
        for b in blocks:
            libc.free(b)
        before = _rss()
        assert heap.trim_heap() is True
        released = before - _rss()
    finally:
        libc.free(pin)
    assert released >= 0.75 * CHUNK * CHUNKS, f'only {released / 2**20:.1f} MiB released'


def test_arena_cap_leaves_a_user_setting_alone(monkeypatch):
    """MALLOC_ARENA_MAX in the environment wins: the cap is not applied."""
    monkeypatch.setenv('MALLOC_ARENA_MAX', '4')
    assert heap.limit_malloc_arenas() is False
