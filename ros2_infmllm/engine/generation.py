"""Greedy decoding of an answer against the bounded cache, token by token. No ROS.

The session prefills the question and hands the first logits here; :func:`decode_greedy`
feeds each chosen token back through the session's one-token step until an end token,
``max_new_tokens`` or ``cancel``. On CUDA the step feeding token ``k`` (after the first) is
launched before token ``k`` is read on the host (:class:`TokenReader`), so the device
never waits for the host's detokenisation and streaming; an end-of-text token fed that
way is rolled back.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch


class Pieces:
    """Incremental detokenisation: each token decodes a few ids, not the whole answer.

    The text of the ids since ``prefix`` is decoded with and without the newest ones; the
    difference is the new piece (held back while it ends in an incomplete character).
    """

    def __init__(self, decode: Callable[[list[int]], str]):
        """``decode``: the adapter's ids -> text."""
        self.decode = decode
        self.ids: list[int] = []
        self.prefix = self.read = 0

    def add(self, token: int) -> str:
        """Take one generated id; return the text it completes ("" if none yet)."""
        self.ids.append(token)
        old = self.decode(self.ids[self.prefix:self.read])
        new = self.decode(self.ids[self.prefix:])
        if len(new) <= len(old) or new.endswith("\ufffd"):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return new[len(old):]


class TokenReader:
    """Reads a chosen token id on the host; on CUDA through pinned memory, asynchronously."""

    def __init__(self, device: torch.device):
        """Pinned host buffer on CUDA (the copy overlaps the next step), plain reads elsewhere."""
        self.pipelined = device.type == "cuda"
        self._host = torch.zeros(1, dtype=torch.long, pin_memory=self.pipelined)

    def start(self, token: torch.Tensor) -> Callable[[], int]:
        """Start copying ``token`` to the host; the returned call waits for it (one sync)."""
        if not self.pipelined:
            return lambda: int(token)
        self._host.copy_(token.view(1), non_blocking=True)
        ready = torch.cuda.Event()
        ready.record()

        def read() -> int:
            ready.synchronize()
            return int(self._host[0])
        return read


@dataclass
class Decoded:
    """What :func:`decode_greedy` produced."""

    ids: list[int]
    fed: bool                       # the last id is already in the cache
    cancelled: bool
    first_token_at: float | None    # perf_counter() when the first id was read


def decode_greedy(logits: torch.Tensor, step: Callable[[torch.Tensor], torch.Tensor],
                  rollback: Callable[[], None], reader: TokenReader, eos_ids: set[int],
                  max_new_tokens: int, cancel: threading.Event | None = None,
                  on_token: Callable[[str], Any] | None = None,
                  detokenize: Callable[[list[int]], str] | None = None) -> Decoded:
    """Greedy ids after the question's ``logits``; ``step`` feeds one token to the cache.

    ``cancel`` is checked before every step; ``on_token(piece)`` gets the text as it
    completes (``detokenize`` turns ids into text); ``rollback`` drops a fed end token.
    """
    ids: list[int] = []
    pieces = Pieces(detokenize) if on_token is not None and detokenize is not None else None
    cancelled = False
    t_first = None
    fed = False
    pipelined = reader.pipelined
    token = torch.argmax(logits).view(1, 1)
    with torch.no_grad():
        while True:
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            more = len(ids) + 1 < max_new_tokens
            # the first token is read before its step is launched: the time to first
            # token is the question's alone, not the launch of a step (or the
            # compaction the question left pending) that the reader would wait behind
            ahead = pipelined and t_first is not None
            read = reader.start(token)
            if more and ahead:
                logits = step(token)            # feeds the token not yet read
            nxt = read()
            if t_first is None:
                t_first = time.perf_counter()
            if nxt in eos_ids:
                if more and ahead:
                    rollback()                  # the end token does not stay
                break
            if more and not ahead:
                logits = step(token)
            ids.append(nxt)
            fed = more
            if pieces is not None:
                piece = pieces.add(nxt)
                if piece:
                    on_token(piece)
            if not more:
                break
            token = torch.argmax(logits).view(1, 1)
    return Decoded(ids, fed, cancelled, t_first)


def answer_timings(wait: float, t0: float, t_prefill: float, decoded: Decoded, t_dec: float,
                   t_end: float, prompt_tokens: int) -> dict[str, float]:
    """Return the ``Answer.timings`` of one exchange (seconds from perf_counter readings)."""
    n = len(decoded.ids)
    t_first = decoded.first_token_at or t_dec
    dec = t_dec - t_first
    return {
        "queue_wait_s": wait, "prefill_s": t_prefill - t0,
        "first_token_s": t_first - t0, "decode_s": dec,
        "decode_tokens_per_s": (n - 1) / dec if n > 1 and dec > 0 else 0.0,
        "total_s": t_end - t0 + wait, "prompt_tokens": float(prompt_tokens),
        "new_tokens": float(n),
    }
