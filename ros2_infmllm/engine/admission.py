"""Which questions enter the queue: one set of limits for every path into it.

Why one place: a question reaches the runner from the ROS service, the action, and the
journal a restarted process replays. Each path used to check its own way, and the journal
replayed a 100 kB question with max_new_tokens 100000 uncapped. :class:`QuestionLimits`
says what is accepted (length, tokens, queue size); :class:`Admission` applies it with the
per-caller rate limit and counts every refusal by reason. No ROS here.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable, Optional

from .questions import Question, QuestionLimits

#: why a question is refused at once (counted per reason)
REFUSALS = ('empty', 'too_long', 'unknown_camera', 'not_loaded', 'rate_limited',
            'queue_full')
#: rate buckets kept; full (idle) ones are forgotten beyond this
MAX_CALLERS = 4096


class Admission:
    """Limits, per-caller token buckets and refusal counts in front of a runner's queue.

    ``submit(question) -> bool`` queues an accepted question (the runner's), False when
    the queue is full.
    """

    def __init__(self, submit: Callable[[Question], bool]) -> None:
        """Start with default limits, no caller seen, nothing counted."""
        self.submit = submit
        self.limits = QuestionLimits()
        self.caller_rate, self.caller_burst = 10.0, 64
        self.accepted = 0
        self.refused = dict.fromkeys(REFUSALS, 0)
        self._buckets: dict[str, list[float]] = {}    # caller -> [questions left, at]
        self._lock = threading.Lock()

    @property
    def callers(self) -> int:
        """Callers whose bucket is kept."""
        return len(self._buckets)

    def rate_wait(self, caller: str) -> float:
        """Take one question from ``caller``'s bucket; 0, or seconds until one is left.

        Token bucket per caller: ``caller_burst`` questions at once, refilled at
        ``caller_rate`` per second, so one busy or hostile client cannot fill the queue
        every other caller shares.
        """
        rate, burst = self.caller_rate, self.caller_burst
        now = time.monotonic()
        with self._lock:
            left, at = self._buckets.get(caller, (float(burst), now))
            left = min(float(burst), left + (now - at) * rate)
            if left < 1.0:
                self._buckets[caller] = [left, now]
                return (1.0 - left) / rate
            self._buckets[caller] = [left - 1.0, now]
            if len(self._buckets) > MAX_CALLERS:
                self._buckets = {c: b for c, b in self._buckets.items()
                                 if b[0] + (now - b[1]) * rate < burst}
        return 0.0

    def admit(self, question: str, camera: str, max_new_tokens: int,
              on_token: Optional[Callable[[str], None]] = None, caller: str = '',
              cameras: Iterable[str] = (), not_loaded: str = '') -> Question:
        """Check and queue one question; the returned one is finished at once if refused.

        ``cameras`` are the names a question may ask about; ``not_loaded`` (non-empty)
        says why no model can answer now.
        """
        limits = self.limits
        req = Question(question, camera, limits.tokens(int(max_new_tokens)), on_token=on_token)
        refused = limits.refusal(question)
        cameras = list(cameras)
        if refused is None and camera and camera not in cameras:
            refused = 'unknown_camera', (f'unknown camera {camera!r}; cameras: '
                                         f"{', '.join(cameras) or 'none'}")
        if refused is None and not_loaded:
            refused = 'not_loaded', not_loaded
        if refused is None and (wait := self.rate_wait(caller[:256])) > 0:
            refused = 'rate_limited', (
                f'rate limit: caller {caller[:64] or "(anonymous)"!r} asked more than '
                f'{self.caller_burst} questions at once or more than {self.caller_rate:g} '
                f'per second (limits.caller_burst, limits.caller_rate); retry in {wait:.1f} s')
        if refused is None and not self.submit(req):
            refused = 'queue_full', (f'question queue full ({limits.queue_size} waiting, '
                                     'query_queue_size); try again later')
        with self._lock:
            if refused is not None:
                self.refused[refused[0]] += 1
                req.finish(False, refused[1])
            else:
                self.accepted += 1
        return req

    @property
    def refused_total(self) -> int:
        """Questions refused at once, all reasons."""
        return sum(self.refused.values())
