"""A question on its way to the model, and the limits every path into the queue applies.

Why a module of its own: the runner queues :class:`Question`, the admission and the
journal replay check :class:`QuestionLimits`, and neither should import the other.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass
class Question:
    """One question for the worker; whoever asked waits on ``done``."""

    question: str
    camera: str
    max_new_tokens: int
    enqueued: float = field(default_factory=time.perf_counter)
    on_token: Optional[Callable[[str], None]] = None
    cancel: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    success: bool = False
    answer: str = ''
    message: str = ''
    evidence: list[float] = field(default_factory=list)
    latency_s: float = 0.0
    cancelled: bool = False

    def finish(self, success: bool, message: str = '', answer: str = '') -> None:
        """Complete the question (once) and wake whoever waits on it."""
        if self.done.is_set():
            return
        self.success, self.message, self.answer = success, message, answer
        self.latency_s = time.perf_counter() - self.enqueued
        self.done.set()


@dataclass(frozen=True)
class QuestionLimits:
    """What a question may ask for.

    Parameters
    ----------
    max_chars : int
        Longest question (characters).
    max_new_tokens : int
        Most tokens one answer may decode; a request of 0 (or less) gets this many.
    queue_size : int
        Questions waiting at most.
    """

    max_chars: int = 1000
    max_new_tokens: int = 64
    queue_size: int = 8

    def tokens(self, asked: int) -> int:
        """Tokens an answer gets when ``asked`` for: at most ``max_new_tokens``."""
        return min(asked, self.max_new_tokens) if asked > 0 else self.max_new_tokens

    def refusal(self, question: str) -> Optional[tuple[str, str]]:
        """``(kind, reason)`` if the text itself is refused, else None."""
        if not question.strip():
            return 'empty', 'question is empty'
        if len(question) > self.max_chars:
            return 'too_long', (f'question has {len(question)} characters, more than '
                                f'max_question_chars={self.max_chars}')
        return None
