"""What native libraries print to the process's stderr during a call, kept for the caller.

Why: libjpeg reports a damaged stream ("Corrupt JPEG data: premature end of data
segment") only as a warning on stderr and fills the missing part with grey; OpenCV's
decoder then returns a whole-looking frame. Reading those warnings is the one way to tell
a partly decoded frame from a real one. File descriptor 2 is pointed at a pipe for the
call; whatever else was written meanwhile (other threads' logs) is written back to the
real stderr unchanged. One capture at a time (a lock); the pipe is non-blocking, so a
flood of output is cut rather than blocking the writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from typing import Iterator

_LOCK = threading.Lock()
_MAX_READ = 1 << 16


@contextlib.contextmanager
def native_stderr(prefixes: tuple[str, ...]) -> Iterator[list[str]]:
    """Capture fd 2 inside the block; the yielded list gets the lines starting with ``prefixes``.

    Lines that do not start with one of ``prefixes`` go back to the real stderr.
    """
    caught: list[str] = []
    with _LOCK:
        try:
            read_end, write_end = os.pipe()
        except OSError:
            yield caught          # no pipe: nothing captured, the call still runs
            return
        saved = os.dup(2)
        try:
            fcntl.fcntl(write_end, fcntl.F_SETFL, os.O_NONBLOCK)
            fcntl.fcntl(read_end, fcntl.F_SETFL, os.O_NONBLOCK)
            os.dup2(write_end, 2)
            try:
                yield caught
            finally:
                os.dup2(saved, 2)
            os.close(write_end)
            write_end = -1
            try:
                data = os.read(read_end, _MAX_READ)
            except BlockingIOError:
                data = b''
            other = []
            for line in data.decode('utf-8', 'replace').splitlines(keepends=True):
                (caught if line.startswith(prefixes) else other).append(line)
            caught[:] = [c.strip() for c in caught]
            if other:
                os.write(2, ''.join(other).encode())
        finally:
            os.close(saved)
            os.close(read_end)
            if write_end >= 0:
                os.close(write_end)
