"""Persistence of a session's memory: snapshots, their policy, and the question journal.

Why here and not in the node: a memory that survives a restart is the engine's promise,
so the offline replay and the benchmarks can save and restore it too, and it is tested
without ROS. One :class:`Persistence` per runner:

- **snapshots** (``memory/snapshot.py``): written atomically (temp file, rename), on
  request, at deactivate and exit, and every ``period`` s while the memory changes;
  restored on start, where a refused file is moved aside with the reason and the session
  starts empty. A path that names a file other than a snapshot is refused, never written.
- **the question journal** beside the snapshot (``PATH.questions.json``): the accepted,
  unanswered questions, rewritten whenever they change, and replayed after a restart
  under the same :class:`~.admission.QuestionLimits` as a fresh question.

Counters and the last errors are a typed :class:`PersistenceStatus`. Every method is safe
from any thread: a snapshot copies the memory under the model lock (the session's
``save_memory``) and writes the copy after it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from ..memory.snapshot import SnapshotError, refuse_foreign
from .questions import Question, QuestionLimits

#: a journal larger than this is not ours (64 questions of at most 100,000 characters)
MAX_JOURNAL_BYTES = 16 << 20


@dataclass(frozen=True)
class PersistenceStatus:
    """What the snapshots and the journal did; the texts are empty when all went well.

    ``restored`` says what the last start restored; ``restore_error`` why a snapshot was
    refused (and where it was moved); ``journal_replayed`` / ``journal_refused`` count the
    questions a start took from the journal and those refused by the limits.
    """

    path: str = ''
    saves: int = 0
    save_failures: int = 0
    last_bytes: int = 0
    last_save_s: float = 0.0
    save_error: str = ''
    restored: str = ''
    restore_error: str = ''
    journal_replayed: int = 0
    journal_refused: int = 0
    journal_error: str = ''

    @property
    def problem(self) -> str:
        """The error a reader should see first (restore, save, journal), or ''."""
        return self.restore_error or self.save_error or self.journal_error


def check_path(path: str) -> Optional[str]:
    """Why ``path`` cannot be the snapshot file, or None (empty: snapshots off)."""
    if not path:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path) or path.endswith('/'):
        return f'memory.snapshot_path must name a file, {path!r} is a folder'
    if not os.path.isdir(folder):
        return f'memory.snapshot_path: folder {folder!r} does not exist'
    try:
        refuse_foreign(path)
        _refuse_foreign_journal(journal_path(path))
    except SnapshotError as exc:
        return f'memory.snapshot_path: {exc}'
    return None


def journal_path(path: str) -> str:
    """Return the journal file beside the snapshot ``path``."""
    return f'{path}.questions.json'


def _refuse_foreign_journal(path: str) -> None:
    """Raise SnapshotError (``foreign``) if ``path`` exists and is not a journal of ours."""
    if not os.path.lexists(path):
        return
    try:
        if os.path.islink(path) or not os.path.isfile(path):
            raise ValueError('not a plain file')
        with open(path, 'rb') as f:
            head = f.read(1)
        if head not in (b'[', b''):
            raise ValueError('not a JSON list')
    except (OSError, ValueError) as exc:
        raise SnapshotError('foreign', f'{path} exists and is not a question journal '
                            f'({exc}): refusing to overwrite it') from exc


def move_aside(path: str) -> str:
    """Rename a refused snapshot to ``PATH.bad-<time>[-N]``, never over an existing file."""
    base = f"{path}.bad-{time.strftime('%Y%m%dT%H%M%S')}"
    for n in range(1000):
        target = base if n == 0 else f'{base}-{n}'
        try:
            os.link(path, target)       # fails if target exists: nothing is overwritten
        except FileExistsError:
            continue
        except OSError as exc:
            return f'(nowhere: {type(exc).__name__}: {exc}; left in place)'
        os.unlink(path)
        return target
    return '(nowhere: 1000 earlier copies; left in place)'


def _ignore(level: str, text: str) -> None:
    """Log nothing (the default ``log``)."""


class Persistence:
    """Snapshots and journal of one session's memory at ``path`` ('' = off).

    ``log(level, text)`` reports what happened (level ``info``, ``warning`` or ``error``).
    """

    def __init__(self, path: str = '', period: float = 60.0,
                 log: Callable[[str, str], None] = _ignore) -> None:
        """Snapshots at ``path`` every ``period`` s while the memory changes (0: never)."""
        self.log = log
        self._lock = threading.Lock()
        self._status = PersistenceStatus(path=path)
        self.period = period
        self._saved_at: Any = None     # (frames ingested, questions answered) at the last save

    @property
    def path(self) -> str:
        """The snapshot file ('' when snapshots are off)."""
        return self._status.path

    def configure(self, path: str, period: float) -> None:
        """Use another path or period (the caller checked the path with :func:`check_path`)."""
        with self._lock:
            self._status = replace(self._status, path=path)
            self.period = period

    def status(self) -> PersistenceStatus:
        """Copy of the counters and last errors."""
        with self._lock:
            return self._status

    def _update(self, **changes: Any) -> None:
        with self._lock:
            self._status = replace(self._status, **changes)

    # ---- snapshots -----------------------------------------------------------------------
    @staticmethod
    def changes(session: Any) -> tuple:
        """Return what a snapshot would differ in: frames ingested, questions answered."""
        return (getattr(session, 'frames_ingested', None),
                getattr(session, 'questions_answered', None))

    def due(self, session: Any) -> bool:
        """Whether the memory changed since the last save (a periodic save is then due)."""
        return bool(self.path) and self.changes(session) != self._saved_at

    def save(self, session: Any, why: str) -> tuple[bool, str]:
        """Write ``session``'s memory to the path (atomic); ``(ok, message)``, never raises."""
        path = self.path
        if not path:
            return False, 'memory.snapshot_path is empty: snapshots are off'
        if session is None:
            return False, 'model not loaded'
        changes = self.changes(session)
        try:
            info = session.save_memory(path)
        except Exception as exc:  # noqa: BLE001 - a failed save is reported, the caller goes on
            text = f'memory snapshot ({why}) to {path} failed: {type(exc).__name__}: {exc}'
            with self._lock:
                self._status = replace(self._status, save_error=text,
                                       save_failures=self._status.save_failures + 1)
            self.log('error', text)
            return False, text
        with self._lock:
            self._saved_at = changes
            self._status = replace(self._status, saves=self._status.saves + 1,
                                   last_bytes=int(info['bytes']),
                                   last_save_s=float(info['total_s']), save_error='')
        return True, (f"memory saved to {path} ({int(info['bytes'])} bytes, "
                      f"{info['total_s']:.3f} s)")

    def restore(self, session: Any) -> bool:
        """Restore the snapshot into ``session`` if there is one; a refused one is moved aside.

        Returns whether a snapshot was restored; the session is empty when not.
        """
        path = self.path
        if not path or not os.path.exists(path):
            self._saved_at = self.changes(session)
            return False
        try:
            info = session.restore_memory(path)
        except Exception as exc:  # noqa: BLE001 - any bad snapshot: start empty, keep the file
            kind = getattr(exc, 'kind', type(exc).__name__)
            aside = move_aside(path)
            text = (f'memory snapshot {path} refused ({kind}): {exc}; starting with an empty '
                    f'memory, the file was moved to {aside}')
            self._update(restore_error=text, restored='')
            self.log('error', text)
            self._saved_at = self.changes(session)
            return False
        done = f"{int(info['frames'])} frames from {path} in {info['seconds']:.2f} s"
        self._update(restored=done, restore_error='')
        self._saved_at = self.changes(session)
        self.log('info', f'memory restored: {done}')
        return True

    # ---- the question journal ------------------------------------------------------------
    def write_journal(self, pending: list[Question]) -> None:
        """Record the accepted, unanswered questions beside the snapshot.

        Why: a question accepted before a kill -9 must not vanish; the restarted process
        answers it again from the restored memory. Written by rename without fsync: a
        crashed process keeps it, a power loss may not.
        """
        path = self.path
        if not path:
            return
        rows = [{'question': r.question, 'camera': r.camera,
                 'max_new_tokens': r.max_new_tokens} for r in pending]
        target = journal_path(path)
        try:
            _refuse_foreign_journal(target)
            fd = os.open(target + '.tmp', os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, 'w') as f:
                json.dump(rows, f)
            os.replace(target + '.tmp', target)
        except (OSError, SnapshotError) as exc:
            text = f'question journal {target} not written: {exc}'
            self._update(journal_error=text)
            self.log('error', text)

    def read_journal(self, limits: QuestionLimits) -> list[Question]:
        """Return the questions a previous process accepted, never answered, within ``limits``.

        Each is checked as a fresh question would be (length, tokens capped, at most
        ``queue_size``); a refused one is logged with the reason and counted. Never raises.
        """
        path = journal_path(self.path) if self.path else ''
        if not path or not os.path.exists(path):
            return []
        try:
            if os.path.getsize(path) > MAX_JOURNAL_BYTES:
                raise ValueError(f'{os.path.getsize(path)} bytes, more than a journal holds')
            with open(path, 'rb') as f:
                rows = json.loads(f.read().decode('utf-8'))
            if not isinstance(rows, list):
                raise ValueError('not a list')
        except (OSError, ValueError, RecursionError) as exc:
            text = (f'question journal {path} unreadable ({str(exc)[:200]}): questions '
                    'accepted before the restart are lost; resubmit them')
            self._update(journal_error=text)
            self.log('error', text)
            return []
        taken, refused = [], []
        for row in rows:
            question, why = self._journal_row(row, limits)
            if question is None or len(taken) >= limits.queue_size:
                refused.append(why or f'queue_size {limits.queue_size} reached')
            else:
                taken.append(question)
        if refused:
            self.log('warning', f'{len(refused)} question(s) of the journal refused: '
                     + '; '.join(refused[:5]))
        if taken:
            self.log('warning', f'{len(taken)} question(s) accepted before the node stopped '
                     'were never answered: answering them again from the restored memory '
                     '(on ~/answers): ' + '; '.join(repr(q.question[:80]) for q in taken))
        with self._lock:
            self._status = replace(
                self._status, journal_replayed=self._status.journal_replayed + len(taken),
                journal_refused=self._status.journal_refused + len(refused))
        return taken

    @staticmethod
    def _journal_row(row: Any, limits: QuestionLimits) -> tuple[Optional[Question], str]:
        """One journal entry as a Question within ``limits``, or (None, why not)."""
        if not isinstance(row, dict) or not isinstance(row.get('question'), str) \
                or not isinstance(row.get('camera', ''), str) \
                or isinstance(row.get('max_new_tokens'), bool) \
                or not isinstance(row.get('max_new_tokens'), int):
            return None, f'malformed entry {str(row)[:60]!r}'
        refused = limits.refusal(row['question'])
        if refused is not None:
            return None, refused[1]
        return Question(row['question'], row.get('camera', '')[:256],
                        limits.tokens(row['max_new_tokens'])), ''
