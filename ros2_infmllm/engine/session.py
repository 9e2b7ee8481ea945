"""The streaming session: frames and questions into one model whose KV cache never grows.

The loop of the Inf-MLLM paper (arXiv 2409.09086, Figure 1): every frame becomes one chunk
(time/camera tag + vision tokens or describer text) prefilled against the bounded cache,
which the memory policy then compacts; a question is one more chunk, the answer is decoded
token by token with positions from the cache, and (multi-round, the default) questions and
answers stay in the same stream. Evidence stamps come from the attention mass the memory
tallies per frame while the question and answer are processed. No ROS here.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch

from ..accel.fast_decode import Decoder
from ..memory import BoundedCache, snapshot
from ..memory.kept import kept_tokens
from ..memory.snapshot_check import InvalidState, stamp
from ..models.base import Chunk, ModelAdapter
from .evidence import rank_evidence
from .generation import TokenReader, answer_timings, decode_greedy
from .status import DecodeStatus, FrameInMemory, MemoryStatus, SessionStatus
from .timeline import LOG_INSTRUCTION, MemoryLog, about_time, landmarks, log_for, thing_spans

_LOG = logging.getLogger(__name__)
_LOGGED: set = set()    # (model, reason) pairs already logged: the eager fallback says why once


_PRUNE_FRAMES = 256     # frames remembered before ingest forgets those no longer in memory


def _thumbnail(image: np.ndarray, width: int = 64) -> np.ndarray | None:
    """Small RGB copy of a frame for the memory view (None if it is not an HxWx3 image)."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 \
            or image.dtype != np.uint8 or min(image.shape[:2]) < 1:
        return None
    import cv2
    h = max(1, round(image.shape[0] * width / image.shape[1]))
    return cv2.resize(image, (width, h), interpolation=cv2.INTER_AREA)


def _spans_json(spans: list | None) -> list | None:
    """Return a frame's thing spans as JSON (``[[thing, lo, hi], ...]`` or None)."""
    return None if spans is None else [[t, int(lo), int(hi)] for t, lo, hi in spans]


def _spans_back(spans: Any) -> list[tuple[str, int, int]] | None:
    """Take back :func:`_spans_json` (strings and arrival indices only: a snapshot is data)."""
    if spans is None:
        return None
    if not isinstance(spans, list) or len(spans) > 4096:
        raise InvalidState("frame thing spans must be a list or null")
    out = []
    for row in spans:
        if not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], str) \
                or any(isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 2 ** 40
                       for x in row[1:]) or row[1] > row[2]:
            raise InvalidState(f"frame thing span {row!r:.60} is malformed")
        out.append((row[0], row[1], row[2]))
    return out


def check_stream_state(state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Check the session's part of a snapshot (frames, counters, describer) before use.

    Raises InvalidState naming the field; the cache's part is checked by memory.snapshot.
    """
    sess = state.get("session")
    if not isinstance(sess, dict):
        raise InvalidState("session state missing")
    ints = {k: sess.get(k) for k in ("next_id", "frames_ingested", "questions_answered",
                                     "errors")}
    for name, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 40:
            raise InvalidState(f"session {name} must be an integer >= 0, got {value!r:.40}")
    if not isinstance(sess.get("started"), bool):
        raise InvalidState("session started must be true or false")
    frames, texts = sess.get("frames"), sess.get("frame_text", [])
    if not isinstance(frames, list) or not isinstance(texts, list) \
            or len(frames) > ints["frames_ingested"] or len(texts) > len(frames):
        raise InvalidState("session frames must be a list of at most frames_ingested frames")
    seen = set()
    for row in frames + texts:
        if not isinstance(row, list) or len(row) not in (2, 3) \
                or isinstance(row[0], bool) or not isinstance(row[0], int) \
                or not 0 <= row[0] < ints["next_id"] \
                or not all(isinstance(x, str) and len(x) < 100000 for x in row[2:]):
            raise InvalidState(f"session frame entry {row!r:.80} is malformed")
        if len(row) == 3:
            if row[0] in seen:
                raise InvalidState(f"session frame {row[0]} listed twice")
            seen.add(row[0])
            stamp(row[1], f"frame {row[0]} stamp")
        elif not isinstance(row[1], str) or row[0] not in seen:
            raise InvalidState(f"frame text of an unknown frame {row[0]!r:.20}")
    seen = sess.get("frame_seen", [])
    if not isinstance(seen, list) or len(seen) > len(frames):
        raise InvalidState("session frame_seen must be a list of at most one entry a frame")
    for row in seen:
        if not isinstance(row, list) or len(row) != 2 or isinstance(row[0], bool) \
                or not isinstance(row[0], int):
            raise InvalidState(f"session frame_seen entry {row!r:.60} is malformed")
        _spans_back(row[1])
    described = state.get("describer")
    if not isinstance(described, list):
        raise InvalidState("describer state missing")
    for i, row in enumerate(described):
        if not isinstance(row, list) or len(row) != 3 or not isinstance(row[0], str) \
                or not isinstance(row[1], bool) or not isinstance(row[2], (str, type(None))):
            raise InvalidState(f"describer entry {i} is malformed")
        prev = tensors.get(f"describer.{i}")
        if row[1] and (prev is None or prev.dtype != torch.uint8 or prev.dim() != 2):
            raise InvalidState(f"describer.{i} must be a 2-D uint8 tensor")


class EngineError(RuntimeError):
    """A model failure during ingest/ask; the session stays usable (memory rolled back)."""


@dataclass
class FrameResult:
    """Outcome of one ingested frame.

    Parameters
    ----------
    stamp : float
        The frame's stamp (seconds).
    camera : str
        Camera name.
    tokens : int
        Tokens the frame chunk appended.
    seconds : float
        Wall time of the ingest (chunk building + prefill).
    cache_tokens : int
        Tokens kept per layer after the ingest (before lazy compaction).
    text : str
        The chunk's text part (tag + describer line for text models).
    """

    stamp: float
    camera: str
    tokens: int
    seconds: float
    cache_tokens: int
    text: str = ""


@dataclass
class Answer:
    """An answer and what it rests on.

    Parameters
    ----------
    text : str
        The generated answer (special tokens dropped, stripped).
    evidence_stamps : list of float
        Stamps of the frames with the most attention during question + answer, at most
        ``evidence_k``, by weight; only frames still in memory.
    timings : dict
        ``queue_wait_s``, ``prefill_s``, ``first_token_s``, ``decode_s``,
        ``decode_tokens_per_s``, ``total_s``, ``prompt_tokens``, ``new_tokens``.
    cancelled : bool
        True if ``cancel`` was set before the answer finished (text is the partial answer).
    memory_log : str
        The memory log shown with a question about time (:mod:`.timeline`), "" for other
        questions: what the answer read, for the operator and the eval records.
    """

    text: str
    evidence_stamps: list[float] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cancelled: bool = False
    memory_log: str = ""


class StreamingSession:
    """One camera stream + conversation over a bounded KV cache. Thread-safe.

    All model work runs under the adapter's lock (shared by sessions of one model), so
    frames and questions are serialised; ``cancel`` is checked before every decode step.
    A frame or a closed turn that leaves the memory over its budget is compacted before
    the lock is released (the same compaction the next chunk would start with: it uses
    that chunk's own scores), so a question never waits for a frame's compaction.
    ``decode`` picks the one-token path (``accel/fast_decode.py``: ``auto`` takes the owned
    step + CUDA graphs where the model allows it); its warm-up runs here, before the first
    question.
    """

    def __init__(self, adapter: ModelAdapter, policy: Any, max_chunk: int = 512,
                 evidence_k: int = 3, multi_round: bool = True, decode_slack: int = 64,
                 decode: str = "auto", memory_log: bool = True):
        """Build the bounded cache for ``adapter.model`` with ``policy``; warm up decode.

        ``memory_log``: show each question the log of the frames in memory
        (:mod:`.timeline`); it leaves no trace in the stream.
        """
        if isinstance(evidence_k, bool) or not isinstance(evidence_k, int) or evidence_k < 0:
            raise ValueError(f"evidence_k must be an int >= 0, got {evidence_k!r}")
        self.adapter = adapter
        self.policy = policy
        self.evidence_k = evidence_k
        self.multi_round = bool(multi_round)
        self.memory_log = bool(memory_log)
        self.cache = BoundedCache(policy, adapter.model.config, max_chunk=max_chunk,
                                  decode_slack=decode_slack, rotation=adapter.rotation)
        self._lock = adapter.lock
        with self._lock:
            # sessions of one model share its adapter and frame describer: a new session
            # must not describe its first frame as motion against another session's last
            adapter.describer.reset()
            self.decoder = Decoder(adapter, self.cache, decode)
            self.decoder.warm_up(self.cache, tally=evidence_k > 0)
        if self.decoder.reason is not None and decode == "auto" \
                and (adapter.name, self.decoder.reason) not in _LOGGED:
            _LOGGED.add((adapter.name, self.decoder.reason))
            _LOG.warning("decode: eager for %s: %s", adapter.name, self.decoder.reason)
        # the device reads a token into pinned memory while the next step runs
        self._reader = TokenReader(adapter.device)
        self._reset_state()

    def _reset_state(self) -> None:
        self._next_id = 0
        self._frame_meta: dict[int, tuple[float, str]] = {}
        self._prune_at = _PRUNE_FRAMES
        self._thumbs: dict[int, np.ndarray] = {}    # frame source id -> small RGB copy
        self._frame_text: dict[int, str] = {}      # frame source id -> its describer line
        # frame source id -> its things' token spans as arrival indices (None: no change.)
        self._frame_seen: dict[int, list[tuple[str, int, int]] | None] = {}
        self._started = False
        self.frames_ingested = 0
        self.questions_answered = 0
        self.errors = 0

    # ---- internals -----------------------------------------------------------------------
    def _new_source(self, kind: str, stamp: float = 0.0) -> int:
        sid = self._next_id
        self._next_id += 1
        self.cache.begin_source(sid, stamp=stamp, kind=kind)
        return sid

    def _run(self, chunk: Chunk, step: Callable[[], torch.Tensor] | None = None,
             logits: bool = True) -> torch.Tensor | None:
        """One forward with rollback on failure (memory stays consistent)."""
        self.cache.mark()
        try:
            if step is not None:
                return step()
            return self.adapter.forward(chunk, self.cache, logits)
        except Exception as exc:
            self.cache.rollback()
            self.errors += 1
            raise EngineError(f"model forward failed ({chunk.kind} chunk, {chunk.n_tokens} "
                              f"tokens): {type(exc).__name__}: {exc}") from exc

    def _ensure_started(self) -> None:
        if self._started:
            return
        # Always open with a system turn (empty if the adapter has no prompt), so the
        # attention-sink tokens belong to the "system" source and never make the first
        # frame look like evidence.
        chunk = self.adapter.text_chunk(self.adapter.system_prompt or "", "system")
        self._new_source("system")
        self._run(chunk, logits=False)
        self._started = True

    def _cache_tokens(self) -> int:
        layer = self.cache.layers[0]
        return int(layer.kept_length()) if layer.is_initialized else 0

    # ---- public API --------------------------------------------------------------------
    def ingest_frame(self, image: np.ndarray, stamp: float, camera: str) -> FrameResult:
        """Prefill one frame as one chunk (tag + vision tokens / describer text).

        Raises ValueError for a bad image or stamp, EngineError if the model fails.
        """
        if not isinstance(stamp, (int, float)) or isinstance(stamp, bool) \
                or not math.isfinite(float(stamp)):
            raise ValueError(f"stamp must be a finite number of seconds, got {stamp!r}")
        camera = str(camera or "camera")
        t0 = time.perf_counter()
        with self._lock:
            self._ensure_started()
            chunk = self.adapter.frame_chunk(image, float(stamp), camera)
            sid = self._new_source("frame", float(stamp))
            self._frame_meta[sid] = (float(stamp), camera)
            self._thumbs[sid] = _thumbnail(image)
            self._frame_text[sid] = chunk.text
            self._frame_seen[sid] = self._spans(chunk.text)
            self._set_landmarks()
            self._run(chunk, logits=False)
            self.cache.compact()
            self.frames_ingested += 1
            if len(self._frame_meta) >= self._prune_at:
                self._prune_frames(self.cache.sources_in_memory())
                self._prune_at = max(_PRUNE_FRAMES, 2 * len(self._frame_meta))
            n = self._cache_tokens()
        return FrameResult(float(stamp), camera, chunk.n_tokens, time.perf_counter() - t0, n,
                           chunk.text)

    def ask(self, question: str, camera: str | None = None, max_new_tokens: int = 64,
            on_token: Callable[[str], Any] | None = None,
            cancel: threading.Event | None = None,
            enqueue_time: float | None = None) -> Answer:
        """Answer ``question`` from what memory holds (greedy decoding).

        ``on_token(text_piece)`` is called for each decoded piece; ``cancel`` is checked
        before every decode step; ``enqueue_time`` (``time.perf_counter()`` when the caller
        queued the request) makes ``queue_wait_s`` include the caller's queue.
        """
        if not isinstance(question, str) or not question.strip():
            raise ValueError("question must be a non-empty string")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) \
                or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        t_call = time.perf_counter()
        with self._lock:
            t0 = time.perf_counter()
            wait = t0 - (enqueue_time if enqueue_time is not None else t_call)
            return self._ask_locked(question.strip(), camera, max_new_tokens, on_token, cancel,
                                    max(0.0, wait), t0)

    def _ask_locked(self, question: str, camera: str | None, max_new_tokens: int,
                    on_token: Callable[[str], Any] | None, cancel: threading.Event | None,
                    wait: float, t0: float) -> Answer:
        self._ensure_started()
        log = self._memory_log() if self.memory_log and about_time(question) else None
        if self.multi_round and log is None:
            return self._exchange(question, camera, max_new_tokens, on_token, cancel, wait,
                                  t0)[0]
        # leave no trace: nothing is compacted meanwhile, and the cache is truncated back
        self.cache.hold()
        try:
            answer, ids = self._exchange(question, camera, max_new_tokens, on_token, cancel,
                                         wait, t0, log)
        finally:
            self.cache.rewind()
        if self.multi_round:
            # the turn stays as asked: the question and its answer, without the log
            self._keep_turn(self._question_text(question, camera), ids)
        return answer

    def _spans(self, text: str) -> list[tuple[str, int, int]] | None:
        """Token spans (arrival indices) of the things a frame line names, for the log."""
        spans = thing_spans(text)
        if spans is None:
            return None
        layer = self.cache.layers[0]
        start = int(layer.arrived) if layer.is_initialized else 0

        def at(c: int) -> int:
            # without the trailing space: BPE tokenizers join a space to the word after it
            # (" dark" is one token), so text[:c] with its space would count one token more
            # and a one-word span would come out empty
            head = text[:c].rstrip()
            return start + (self.adapter.encode(head, literal=True).shape[1] if head else 0)
        return [(thing, at(lo), at(hi)) for thing, lo, hi in spans]

    def _set_landmarks(self) -> None:
        """Tell the cache which tokens time questions need (first sightings, departures).

        Recomputed from every frame line still known (a few hundred), so a restored
        session gets the same landmarks; a policy without a ``landmarks`` share skips it.
        """
        if not self.cache.policy.landmark_tokens:
            return
        frames = [(self._frame_meta[sid][1], self._frame_seen.get(sid))
                  for sid in sorted(self._frame_meta)]
        self.cache.set_landmarks([r for r in landmarks(frames) if r[1] > r[0]])

    def _memory_log(self) -> MemoryLog | None:
        """Build the log of what memory keeps (None when no frame line has words to read)."""
        live = self.cache.sources_in_memory()
        kept = set(kept_tokens(self.cache)["arrival"])
        log = log_for(self._frame_meta, self._frame_seen, live, kept)
        return log if log.frames else None

    def _question_text(self, question: str, camera: str | None) -> str:
        q_text = question if not camera else f"(camera {camera}) {question}"
        instruction = self.adapter.answer_instruction
        return f"{q_text} {instruction}" if instruction else q_text

    def _keep_turn(self, q_text: str, ids: list[int]) -> None:
        """Append a question turn and its answer to the stream (the log shown is not kept)."""
        ad = self.adapter
        q_chunk = ad.text_chunk(q_text, "user")
        prefix = ad.answer_prefix()
        self._new_source("question")
        self._run(Chunk(torch.cat([q_chunk.input_ids, prefix.input_ids], dim=1), "user",
                        q_chunk.text + prefix.text), logits=False)
        self._new_source("answer")
        tail = ad.encode(ad.answer_suffix())
        if ids:
            tail = torch.cat([torch.tensor([ids], device=tail.device), tail], dim=1)
        self._run(Chunk(tail, "assistant", ad.answer_suffix()), logits=False)
        self.cache.compact()

    def _step(self, token: torch.Tensor) -> torch.Tensor:
        """One decode step (``token`` on the device) with rollback on failure."""
        self.cache.mark()
        try:
            return self.decoder.step(token, self.cache)
        except Exception as exc:
            self.cache.rollback()
            self.errors += 1
            raise EngineError(f"model forward failed (decode step): {type(exc).__name__}: "
                              f"{exc}") from exc

    def _exchange(self, question: str, camera: str | None, max_new_tokens: int,
                  on_token: Callable[[str], Any] | None, cancel: threading.Event | None,
                  wait: float, t0: float, log: MemoryLog | None = None
                  ) -> tuple[Answer, list[int]]:
        """Question prefill, greedy decode (:mod:`.generation`), closing turn, evidence.

        With ``log`` the question is shown after the memory log (the caller holds the
        cache and keeps the turn without it).
        """
        ad = self.adapter
        q_text = self._question_text(question, camera)
        shown = ""
        if log is not None:
            shown = log.render(question)
            # above the log the usual instruction lost: the model answered in sentences
            q_text = f"{shown}\nQuestion: {q_text} {LOG_INSTRUCTION}"
        q_chunk = ad.text_chunk(q_text, "user")
        prefix = ad.answer_prefix()
        chunk = Chunk(torch.cat([q_chunk.input_ids, prefix.input_ids], dim=1), "user",
                      q_chunk.text + prefix.text)
        self.cache.reset_attention_tally()
        self._new_source("question")
        self.cache.request_scores()
        try:
            logits = self._run(chunk)
        except EngineError:
            self.cache.end_request()
            raise
        t_prefill = time.perf_counter()
        self._new_source("answer")
        self.cache.decode_tally = self.evidence_k > 0
        try:
            decoded = decode_greedy(logits, self._step, self.cache.rollback, self._reader,
                                    ad.eos_token_ids, max_new_tokens, cancel, on_token,
                                    ad.decode)
        finally:
            self.cache.decode_tally = False
            self.cache.end_request()
        t_dec = time.perf_counter()
        ids = decoded.ids
        text = ad.decode(ids)
        if self.multi_round and log is None:
            # close the turn: the last token (if not fed) and the end-of-turn marker
            tail = ad.encode(ad.answer_suffix())
            if ids and not decoded.fed:
                tail = torch.cat([torch.tensor([[ids[-1]]], device=tail.device), tail], dim=1)
            self._run(Chunk(tail, "assistant", ad.answer_suffix()), logits=False)
            self.cache.compact()
        # after the turn is closed (its compaction may evict): only frames still in memory
        evidence = self._evidence(text, log)
        self.questions_answered += 1
        timings = answer_timings(wait, t0, t_prefill, decoded, t_dec, time.perf_counter(),
                                 chunk.n_tokens)
        return Answer(text.strip(), evidence, timings, decoded.cancelled, shown), ids

    def _evidence(self, answer: str, log: MemoryLog | None = None) -> list[float]:
        """Stamps of the frames still in memory that support ``answer``, at most ``evidence_k``.

        Frames whose time the answer names in the log's clock first ("when" answers rest
        on them), then the answer's attention per frame, checked against the frames'
        describer text (:mod:`.evidence`).
        """
        if self.evidence_k == 0:
            return []
        att = self.cache.source_attention()
        live = self.cache.sources_in_memory()
        frames = {sid: w for sid, w in att.items()
                  if sid in self._frame_meta and live.get(sid, 0) > 0}
        # equal attention: the newer frame first
        frames = dict(sorted(frames.items(), key=lambda x: -self._frame_meta[x[0]][0]))
        texts = {sid: self._frame_text.get(sid, "") for sid in frames}
        named = set(log.stamps(answer)) if log is not None else set()
        timed = sorted((sid for sid in frames if self._frame_meta[sid][0] in named),
                       key=lambda sid: self._frame_meta[sid][0])
        chosen = timed + [sid for sid in rank_evidence(answer, frames, texts, self.evidence_k)
                          if sid not in timed]
        chosen = chosen[:self.evidence_k]
        self._prune_frames(live)
        return [self._frame_meta[sid][0] for sid in chosen]

    def _prune_frames(self, live: dict) -> None:
        """Forget frames no longer in memory (bounded on an endless stream)."""
        for sid in [s for s in self._frame_meta if live.get(s, 0) == 0]:
            del self._frame_meta[sid]
            self._thumbs.pop(sid, None)
            self._frame_text.pop(sid, None)
            self._frame_seen.pop(sid, None)

    def reset(self) -> None:
        """Forget every frame and turn (buffers kept)."""
        with self._lock:
            self.cache.reset()
            self.adapter.describer.reset()
            self._reset_state()

    def status(self) -> SessionStatus:
        """Model, policy, counters, frames still in memory, the cache and the decode path."""
        with self._lock:
            mem = MemoryStatus.from_cache(self.cache.describe())
            per = mem.tokens_per_layer or [0]
            live = {sid: mem.sources[str(sid)].tokens_in_memory for sid in self._frame_meta
                    if str(sid) in mem.sources}
            self._prune_frames(live)
            frames = sorted(FrameInMemory(stamp, camera, int(live[sid]))
                            for sid, (stamp, camera) in self._frame_meta.items())
            return SessionStatus(
                model=self.adapter.describe(), policy=self.policy.name,
                budget=self.policy.capacity, multi_round=self.multi_round,
                frames_ingested=self.frames_ingested,
                questions_answered=self.questions_answered, errors=self.errors,
                frames=frames, cache_tokens=int(max(per)), memory=mem,
                decode=DecodeStatus.from_decoder(self.decoder.describe()))

    def memory_map(self) -> dict[str, Any]:
        """Return what the memory keeps per token, with frame thumbnails (the memory view).

        ``tokens`` lists ``(arrival, source id, kind)`` of layer 0 / KV head 0 in cache
        order; ``frames`` maps live frame ids to ``(stamp, camera, thumbnail or None)``;
        ``n_sink``/``n_recent`` say which kept tokens the policy forces.
        """
        with self._lock:
            kept = kept_tokens(self.cache)
            kinds = {sid: meta[1] for sid, meta in kept["sources"].items()}
            frames = {sid: (*self._frame_meta[sid], self._thumbs.get(sid))
                      for sid in kinds if sid in self._frame_meta}
            n_sink, n_recent = self.policy.forced()
            pairs = zip(kept["arrival"], kept["source"])
            return {"tokens": [(a, s, kinds.get(s, "")) for a, s in pairs],
                    "tokens_seen": kept["tokens_seen"], "frames": frames, "n_sink": n_sink,
                    "n_recent": n_recent, "budget": self.policy.capacity,
                    "policy": self.policy.name}

    # ---- snapshots ---------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """Return what a snapshot must match to be restored here (model, dtype, policy...)."""
        info = self.adapter.describe()
        return {"model": self.adapter.name, "family": info["family"], "dtype": info["dtype"],
                "parameters": int(info["parameters"]), "policy": self.policy.name,
                "policy_params": self.policy.params(), "budget": self.policy.capacity,
                "multi_round": self.multi_round}

    def save_memory(self, path: str) -> dict[str, float]:
        """Write the memory and the stream's bookkeeping to ``path`` (atomic, see memory.snapshot).

        Only the copy to the host runs under the model lock; checksum and file writing
        run after it, so frames and questions wait for the copy alone. Returns ``bytes``,
        ``copy_s`` (under the lock) and ``total_s``.
        """
        t0 = time.perf_counter()
        with self._lock:
            tensors, state = snapshot.cache_state(self.cache)
            state["session"] = {
                "next_id": self._next_id, "started": self._started,
                "frames": [[sid, stamp, cam] for sid, (stamp, cam) in self._frame_meta.items()],
                "frame_text": [[sid, t] for sid, t in self._frame_text.items()],
                # the memory log's view of each frame: the token spans of what it names
                "frame_seen": [[sid, _spans_json(v)] for sid, v in self._frame_seen.items()],
                "frames_ingested": self.frames_ingested,
                "questions_answered": self.questions_answered, "errors": self.errors}
            described = []
            for i, (cam, (prev, line)) in enumerate(sorted(
                    self.adapter.describer.get_state().items())):
                if prev is not None:
                    tensors[f"describer.{i}"] = torch.from_numpy(prev)
                described.append([cam, prev is not None, line])
            state["describer"] = described
        t_copy = time.perf_counter()
        size = snapshot.write_snapshot(path, tensors, self.identity(), state)
        return {"bytes": float(size), "copy_s": t_copy - t0,
                "total_s": time.perf_counter() - t0}

    def restore_memory(self, path: str) -> dict[str, float]:
        """Replace the memory with the snapshot at ``path``; returns ``frames``, ``seconds``.

        Raises memory.snapshot.SnapshotError (the memory is then empty) for a snapshot of
        another model, policy or budget, or a truncated / corrupted file; OSError if the
        file cannot be read.
        """
        t0 = time.perf_counter()
        try:
            tensors, state = snapshot.read_snapshot(path, self.identity())
            check_stream_state(state, tensors)
        except InvalidState as exc:
            self.reset()
            raise snapshot.SnapshotError("invalid", f"snapshot state out of range: {exc}") \
                from exc
        except snapshot.SnapshotError:
            self.reset()
            raise
        with self._lock:
            try:
                snapshot.restore_cache(self.cache, tensors, state, self.adapter.device)
                sess = state["session"]
                self._reset_state()
                self._next_id = int(sess["next_id"])
                self._started = bool(sess["started"])
                self._frame_meta = {int(sid): (float(stamp), str(cam))
                                    for sid, stamp, cam in sess["frames"]}
                self._frame_text = {int(sid): str(t) for sid, t in sess.get("frame_text", [])}
                self._frame_seen = {int(sid): _spans_back(v)
                                    for sid, v in sess.get("frame_seen", [])}
                self._prune_at = max(_PRUNE_FRAMES, 2 * len(self._frame_meta))
                self._set_landmarks()
                self.frames_ingested = int(sess["frames_ingested"])
                self.questions_answered = int(sess["questions_answered"])
                self.errors = int(sess["errors"])
                self.adapter.describer.set_state(
                    {cam: (tensors[f"describer.{i}"].numpy() if has else None, line)
                     for i, (cam, has, line) in enumerate(state["describer"])})
            except Exception as exc:
                self.cache.reset()
                self.adapter.describer.reset()
                self._reset_state()
                if isinstance(exc, snapshot.SnapshotError):
                    raise
                raise snapshot.SnapshotError(
                    "corrupt", f"snapshot state unusable: {type(exc).__name__}: {exc}") from exc
        return {"frames": float(len(self._frame_meta)), "seconds": time.perf_counter() - t0}
