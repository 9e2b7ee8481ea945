"""The runner: one worker thread between cameras, questions and a session. No ROS here.

Callers (the ROS node's callbacks, a test, a tool) only hand over work and never wait on
the model: :meth:`Runner.offer` keeps the newest frame per camera, :meth:`Runner.submit`
queues a :class:`Question` in a bounded FIFO. One worker thread does everything model
related, in this order of priority: a memory rebuild, the oldest question, a periodic
chore (the node's snapshot), then the due frame: at most one frame every 1/frame_rate s
per camera, cameras in turn, the longest-waiting first. Frames are decoded only when fed
(a superseded frame never is) by the caller's ``decode``; each drop is counted per camera
and reason. What happens is reported through callbacks (an answer, a drop, an error, the
set of questions not yet answered for a journal), never under the caller's locks. The
worker survives any exception; an accepted question is always finished, answered or failed
with the reason.

The session may be any object with the :class:`StreamingSession` methods ``ingest_frame``,
``ask``, ``reset`` and ``status``. A ``store`` (:class:`~.persistence.Persistence`) makes
the memory survive restarts: :meth:`Runner.start` restores the snapshot and replays the
journal under the runner's :class:`~.questions.QuestionLimits`, the worker saves
periodically, :meth:`Runner.save_soon` and :meth:`Runner.stop` save on request.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import threading
import time
from typing import Any, Callable, Optional, Protocol

import numpy as np

from . import heap
from .questions import Question, QuestionLimits
from .status import CameraStats, RunnerStatus, SessionStatus

#: questions waiting at most (the node's query_queue_size is 1..this)
MAX_QUEUE = 64
#: models need 2x2 pixels; a smaller decoded frame is the frame's fault
MIN_FRAME_SIDE = 2
#: the worker returns freed heap pages at most this often (see heap.trim_heap)
TRIM_EVERY_S = 5.0
#: longest sleep of an idle worker (it then looks for due work again)
IDLE_WAIT_S = 0.5
#: cameras no longer fed whose counters are kept (for a topic listed again)
MAX_RETIRED = 64
#: the message and answer of a question asked while the memory holds no frame
NO_FRAMES = 'no frames in memory yet'
NO_FRAMES_ANSWER = ('No frames in memory yet: nothing has been seen, so there is nothing to '
                    'answer from.')


class Session(Protocol):
    """What the runner needs of a session (:class:`StreamingSession` has it)."""

    def ingest_frame(self, image: np.ndarray, stamp: float, camera: str) -> Any:
        """Prefill one frame."""

    def ask(self, question: str, camera: Optional[str] = None, max_new_tokens: int = 64,
            on_token: Optional[Callable[[str], Any]] = None,
            cancel: Optional[threading.Event] = None,
            enqueue_time: Optional[float] = None) -> Any:
        """Answer a question from memory."""

    def reset(self) -> None:
        """Forget every frame and turn."""

    def status(self) -> SessionStatus:
        """Typed snapshot of the session."""


class MemoryStore(Protocol):
    """What the runner needs of its persistence (:class:`~.persistence.Persistence`)."""

    path: str
    period: float

    def restore(self, session: Any) -> bool:
        """Restore the snapshot into ``session``."""

    def read_journal(self, limits: QuestionLimits) -> list[Question]:
        """Questions accepted before a restart, within ``limits``."""

    def write_journal(self, pending: list[Question]) -> None:
        """Record the questions not yet answered."""

    def due(self, session: Any) -> bool:
        """Whether the memory changed since the last save."""

    def save(self, session: Any, why: str) -> tuple[bool, str]:
        """Save ``session``'s memory; ``(ok, message)``."""


class DroppedFrame(Exception):
    """A frame that the ``decode`` callback cannot turn into RGB.

    ``reason`` is the drop counter's key (``unknown_encoding``, ``truncated`` ...), the
    message the detail.
    """

    def __init__(self, reason: str, detail: str) -> None:
        """Drop reason and a readable detail."""
        super().__init__(detail)
        self.reason = reason


class CameraFeed:
    """One camera's newest frame not yet fed, its pacing and its counters."""

    def __init__(self, camera: str) -> None:
        """No frame, nothing counted."""
        self.camera = camera
        self.frame: Optional[tuple[Any, float]] = None     # (payload, stamp)
        self.next_due = 0.0
        self.ingested = 0
        self.drops: dict[str, int] = collections.defaultdict(int)

    def stats(self) -> CameraStats:
        """Copy of the counters."""
        return CameraStats(self.camera, self.ingested, dict(self.drops))


def _ignore(*args: Any) -> None:
    """Do nothing: the default of every callback."""


class Runner:
    """Question queue, worker thread, frame pacing and drop counting around one session.

    ``decode(payload, max_side)`` turns an offered frame into an HxWx3 uint8 RGB array
    downscaled to ``max_side`` (raising :class:`DroppedFrame` for a bad one; any other
    exception counts as ``decode_failed``). Callbacks, all from the worker thread unless
    said otherwise: ``on_answer(question)`` after a successful answer;
    ``on_drop(camera, reason, count, detail)`` for every dropped frame (also from the
    thread of :meth:`count_drop`); ``on_error(key, text)`` for a model or worker failure;
    ``on_pending(questions)`` whenever the questions not yet answered change (accepted,
    taken, finished), with the runner's lock held, so a journal it writes is in order
    (``store``'s journal is written the same way). With ``require_frames`` a question
    asked while the memory holds no frame is not put to the model: its answer says so
    (:data:`NO_FRAMES_ANSWER`, message :data:`NO_FRAMES`, no evidence).
    """

    def __init__(self, decode: Callable[[Any, int], np.ndarray], *,
                 frame_rate: float = 1.0, image_max_side: int = 384, queue_size: int = 8,
                 on_answer: Callable[[Question], None] = _ignore,
                 on_drop: Callable[[str, str, int, str], None] = _ignore,
                 on_error: Callable[[str, str], None] = _ignore,
                 on_pending: Callable[[list[Question]], None] = _ignore,
                 store: Optional[MemoryStore] = None, require_frames: bool = False) -> None:
        """Idle, without a session: :meth:`start` gives it one and starts the worker."""
        self.decode = decode
        self.frame_rate = frame_rate
        self.image_max_side = image_max_side
        self.limits = QuestionLimits(queue_size=queue_size)
        self.store = store
        self.require_frames = require_frames
        self.on_answer, self.on_drop, self.on_error = on_answer, on_drop, on_error
        self._on_pending = on_pending
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._queue: collections.deque[Question] = collections.deque()
        self._feeds: dict[str, CameraFeed] = {}
        self._retired: dict[str, CameraFeed] = {}    # cameras no longer fed, counters kept
        self._feeding = False
        self._session: Optional[Session] = None
        self._session_status: Optional[SessionStatus] = None
        self._session_error = ''
        self._rebuild: Optional[Callable[[], Session]] = None
        self._chore: Callable[[], None] = _ignore
        self._chore_every = math.inf
        self._next_chore = math.inf
        self._stopping = threading.Event()
        self._worker: Optional[threading.Thread] = None
        self._current: Optional[Question] = None
        self._next_trim = 0.0
        # saves asked for by save_soon, run by the worker: (why, set when done)
        self._saves: list[tuple[str, threading.Event]] = []
        self.model_error = ''
        self.answered = self.failed = self.no_frames = 0
        self.last_latency_s = 0.0

    @property
    def queue_size(self) -> int:
        """Questions waiting at most (``limits.queue_size``)."""
        return self.limits.queue_size

    @queue_size.setter
    def queue_size(self, size: int) -> None:
        self.limits = dataclasses.replace(self.limits, queue_size=size)

    def on_pending(self, pending: list[Question]) -> None:
        """Report the questions not yet answered to the journal and the caller (lock held)."""
        if self.store is not None:
            self.store.write_journal(pending)
        self._on_pending(pending)

    # ---- what callers hand over ----------------------------------------------------------
    @property
    def session(self) -> Optional[Session]:
        """The session the worker feeds (None before start and after stop)."""
        return self._session

    def set_cameras(self, cameras: list[str]) -> None:
        """Feed exactly these cameras; a camera kept, or listed again later, keeps its counters.

        Why: re-subscribing a topic (a QoS or topic-list change) must not reset what
        /diagnostics and describe_memory count for it.
        """
        with self._lock:
            known = {**self._retired, **self._feeds}
            self._feeds = {c: known.get(c) or CameraFeed(c) for c in cameras}
            for c, feed in known.items():
                if c not in self._feeds:
                    feed.frame = None
                    self._retired[c] = feed
            self._retired = {c: f for c, f in list(self._retired.items())[-MAX_RETIRED:]
                             if c not in self._feeds}

    def set_feeding(self, feeding: bool) -> None:
        """Feed frames (True) or hold them back (False; questions are still answered)."""
        with self._lock:
            self._feeding = feeding
            self._wake.notify_all()

    def offer(self, camera: str, payload: Any, stamp: float) -> None:
        """Keep ``payload`` as ``camera``'s newest frame; a frame not yet fed is superseded."""
        with self._lock:
            feed = self._feeds.get(camera)
            if feed is None:
                return
            if feed.frame is not None:
                feed.drops['superseded'] += 1
            feed.frame = (payload, stamp)
            self._wake.notify_all()

    def clear_frames(self) -> None:
        """Forget every frame not yet fed (not counted as drops)."""
        with self._lock:
            for feed in self._feeds.values():
                feed.frame = None

    def count_drop(self, camera: str, reason: str, detail: str) -> None:
        """Count a frame the caller refused (e.g. its stamp) as ``reason`` for ``camera``."""
        with self._lock:
            feed = self._feeds.get(camera)
            if feed is None:
                return
            feed.drops[reason] += 1
            count = feed.drops[reason]
        self.on_drop(camera, reason, count, detail)

    def submit(self, question: Question) -> bool:
        """Queue ``question``; False (nothing queued) when ``queue_size`` already wait."""
        with self._lock:
            if len(self._queue) >= self.queue_size:
                return False
            self._queue.append(question)
            self.on_pending(self._pending())
            self._wake.notify_all()
            return True

    def requeue(self, questions: list[Question]) -> None:
        """Queue questions accepted before (a journal's) ahead of new ones, without a limit."""
        with self._lock:
            self._queue.extend(questions)
            self._wake.notify_all()

    def rebuild(self, make_session: Callable[[], Session]) -> None:
        """Replace the session with ``make_session()`` in the worker, between two steps."""
        with self._lock:
            self._rebuild = make_session
            self._wake.notify_all()

    def every(self, seconds: float, chore: Callable[[], None]) -> None:
        """Run ``chore`` in the worker every ``seconds`` (from now; inf or <= 0: never)."""
        with self._lock:
            self._chore = chore
            self._chore_every = seconds if seconds > 0 else math.inf
            self._next_chore = time.monotonic() + self._chore_every
            self._wake.notify_all()

    def reset(self) -> None:
        """Empty the session's memory and the frames not yet fed.

        An answer in progress is cancelled first (it ends within one decode step with its
        partial text), so a reset never waits for a long answer.
        """
        session = self._session
        if session is None:
            return
        with self._lock:
            if self._current is not None:
                self._current.cancel.set()
        session.reset()
        self.clear_frames()
        self._refresh(session)

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self, session: Session) -> None:
        """Feed ``session`` from a new worker thread.

        With a store: its snapshot is restored first (a refused one leaves the memory
        empty), the journal's questions are queued ahead of new ones within ``limits``, and
        periodic saves are scheduled.
        """
        if self.store is not None:
            self.store.restore(session)
            self.requeue(self.store.read_journal(self.limits))
            self.schedule_saves()
        status, error = self._describe(session)
        with self._lock:
            self._session, self._session_status, self._session_error = session, status, error
            self.model_error = ''
            self._stopping.clear()
            self._worker = threading.Thread(target=self._work, name='infmllm_worker',
                                            daemon=True)
            self._worker.start()

    def schedule_saves(self) -> None:
        """Save through the store every ``store.period`` s while the memory changes."""
        store = self.store
        period = store.period if store is not None and store.path else math.inf
        self.every(period, self._periodic_save)

    def _periodic_save(self) -> None:
        session = self._session
        if session is not None and self.store is not None and self.store.due(session):
            self.store.save(session, 'periodic')

    def save_memory(self, why: str) -> tuple[bool, str]:
        """Save the memory now from this thread (waits for the model's current step)."""
        if self.store is None:
            return False, 'no snapshot store'
        return self.store.save(self._session, why)

    def save_soon(self, why: str) -> threading.Event:
        """Have the worker save the memory after its current step; returns at once.

        Why: deactivate must answer within seconds even during a long answer; the save
        follows that answer. The event is set once the save ran (or was dropped by stop).
        """
        done = threading.Event()
        with self._lock:
            self._saves.append((why, done))
            self._wake.notify_all()
        return done

    def stop(self, reason: str, save_as: str = '') -> None:
        """Stop the worker (an answer in progress is cancelled) and fail queued questions.

        ``save_as`` (e.g. ``exit``): save the memory through the store once the worker has
        stopped, so an exit never waits for a long answer and never races a step.
        """
        with self._lock:
            self._stopping.set()
            self._wake.notify_all()
            worker = self._worker
            if self._current is not None:     # stop a long answer within one decode step
                self._current.cancel.set()
        if worker is not None and worker is not threading.current_thread():
            worker.join()
        if save_as and self.store is not None and self._session is not None:
            self.store.save(self._session, save_as)
        with self._lock:
            for _, done in self._saves:
                done.set()
            self._saves.clear()
            while self._queue:
                self._queue.popleft().finish(False, reason)
            self.on_pending(self._pending())
            self._session, self._session_status, self._worker = None, None, None
            self._session_error = ''

    def status(self) -> RunnerStatus:
        """Snapshot taken by the worker after each step (so a caller never waits on it)."""
        with self._lock:
            return RunnerStatus(
                session=self._session_status, session_error=self._session_error,
                cameras={c: f.stats() for c, f in self._feeds.items()},
                queue_depth=len(self._queue), questions_answered=self.answered,
                questions_failed=self.failed, last_latency_s=self.last_latency_s,
                model_error=self.model_error, questions_without_frames=self.no_frames)

    # ---- the worker ----------------------------------------------------------------------
    def _pending(self) -> list[Question]:
        """Questions accepted and not finished: the one being answered, then the queue."""
        taken = [self._current] if self._current is not None else []
        return [q for q in taken + list(self._queue) if not q.done.is_set()]

    def _next_job(self) -> tuple[Optional[tuple[str, Any]], float]:
        """Return the job to run now and, without one, how long to wait (lock held)."""
        if self._rebuild is not None:
            job, self._rebuild = ('rebuild', self._rebuild), None
            return job, 0.0
        if self._saves:
            return ('save', self._saves.pop(0)), 0.0
        if self._queue:
            self._current = self._queue.popleft()
            return ('ask', self._current), 0.0
        now = time.monotonic()
        if now >= self._next_chore:
            return ('chore', None), 0.0
        feed, wait = self._due_feed(now)
        return (('frame', feed) if feed is not None else None), wait

    def _due_feed(self, now: float) -> tuple[Optional[CameraFeed], float]:
        """Camera whose newest frame is due now, else (None, seconds to wait)."""
        if not self._feeding:
            return None, IDLE_WAIT_S
        period = 1.0 / self.frame_rate
        best, wait = None, IDLE_WAIT_S
        for feed in self._feeds.values():
            if feed.frame is None:
                continue
            if feed.next_due <= now and (best is None or feed.next_due < best.next_due):
                best = feed
            else:
                wait = min(wait, max(0.001, feed.next_due - now))
        if best is not None:
            best.next_due = max(best.next_due + period, now)
        return best, wait

    def _work(self) -> None:
        """Run due jobs until stopped; never dies on an error."""
        while not self._stopping.is_set():
            with self._lock:
                job, wait = self._next_job()
                if job is None:
                    self._wake.wait(timeout=wait)
                    continue
            kind, arg = job
            try:
                if kind == 'rebuild':
                    session = arg()
                    with self._lock:
                        self._session = session
                    self._refresh(session)
                elif kind == 'save':
                    try:
                        self.save_memory(arg[0])
                    finally:
                        arg[1].set()
                elif kind == 'chore':
                    self._chore()
                    with self._lock:
                        self._next_chore = time.monotonic() + self._chore_every
                elif kind == 'ask':
                    self._answer(arg)
                else:
                    self._feed(arg)
            except Exception as exc:  # noqa: BLE001 - the worker must survive anything
                self.model_error = f'{type(exc).__name__}: {exc}'
                self.on_error('worker', f'worker error: {self.model_error}')
                if kind == 'ask':
                    self.failed += 1
                    arg.finish(False, f'model error: {self.model_error}')
            finally:
                with self._lock:
                    self._current = None
                    if kind == 'ask':
                        self.on_pending(self._pending())
            self._trim_heap()

    def _trim_heap(self) -> None:
        """Return freed heap pages to the OS every ``TRIM_EVERY_S`` (see heap.trim_heap)."""
        now = time.monotonic()
        if now >= self._next_trim:
            self._next_trim = now + TRIM_EVERY_S
            heap.trim_heap()

    def _drop(self, feed: CameraFeed, reason: str, detail: str) -> None:
        with self._lock:
            feed.drops[reason] += 1
            count = feed.drops[reason]
        self.on_drop(feed.camera, reason, count, detail)

    def _decode(self, feed: CameraFeed, payload: Any, max_side: int) -> Optional[np.ndarray]:
        """Payload -> RGB downscaled to ``max_side``; None (a counted drop) if bad."""
        try:
            rgb = self.decode(payload, max_side)
        except DroppedFrame as exc:
            self._drop(feed, exc.reason, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - a frame must never kill the worker
            self._drop(feed, 'decode_failed', f'{type(exc).__name__}: {exc}')
            return None
        if min(rgb.shape[:2]) < MIN_FRAME_SIDE:
            self._drop(feed, 'too_small', f'frame is {rgb.shape[1]}x{rgb.shape[0]} after '
                       f'decoding (image_max_side {max_side}), smaller than '
                       f'{MIN_FRAME_SIDE}x{MIN_FRAME_SIDE} pixels')
            return None
        return rgb

    def _feed(self, feed: CameraFeed) -> None:
        with self._lock:
            frame, feed.frame = feed.frame, None
            session = self._session
            max_side = self.image_max_side
        if frame is None or session is None:
            return
        payload, stamp = frame
        rgb = self._decode(feed, payload, max_side)
        if rgb is None:
            return
        try:
            session.ingest_frame(rgb, stamp, feed.camera)
        except ValueError as exc:  # the engine's answer to a frame it cannot take
            self._drop(feed, 'frame_rejected', str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - model failure: count, report, go on
            self.model_error = f'{type(exc).__name__}: {exc}'
            self._drop(feed, 'model_error', self.model_error)
            return
        with self._lock:
            feed.ingested += 1
            self.model_error = ''
        self._refresh(session)

    def _answer(self, question: Question) -> None:
        session = self._session
        if session is None:
            question.finish(False, 'model not loaded')
            return
        status = self._session_status
        if self.require_frames and status is not None and status.frames_in_memory == 0:
            # the model would invent an answer from no frame ("The box is blue."): say so
            with self._lock:
                self.no_frames += 1
            question.finish(True, NO_FRAMES, NO_FRAMES_ANSWER)
            self.on_answer(question)
            return
        try:
            ans = session.ask(question.question, camera=question.camera or None,
                              max_new_tokens=question.max_new_tokens,
                              on_token=question.on_token, cancel=question.cancel,
                              enqueue_time=question.enqueued)
        except ValueError as exc:
            self.failed += 1
            question.finish(False, f'question rejected: {exc}')
            return
        except Exception as exc:  # noqa: BLE001 - model failure: this question fails only
            self.model_error = f'{type(exc).__name__}: {exc}'
            self.failed += 1
            self.on_error('ask', f'answer failed: {self.model_error}')
            question.finish(False, f'model error: {self.model_error}')
            self._refresh(session)
            return
        question.evidence = list(ans.evidence_stamps)
        question.cancelled = bool(ans.cancelled)
        question.finish(True, 'cancelled' if ans.cancelled else '', ans.text)
        with self._lock:
            self.answered += 1
            self.last_latency_s = question.latency_s
            self.model_error = ''
        self._refresh(session)
        self.on_answer(question)

    def _describe(self, session: Session) -> tuple[Optional[SessionStatus], str]:
        try:
            return session.status(), ''
        except Exception as exc:  # noqa: BLE001 - a status must not kill the worker
            return None, f'{type(exc).__name__}: {exc}'

    def _refresh(self, session: Session) -> None:
        """Take the session's status for :meth:`status` (if it is still the session fed)."""
        status, error = self._describe(session)
        with self._lock:
            if session is self._session:
                self._session_status, self._session_error = status, error
