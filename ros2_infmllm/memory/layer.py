"""BoundedLayer: one decoder layer's bounded KV storage plus per-token metadata.

The layer stores and books; it makes no decision that involves other layers or the
policy (when to compact, what to score, where the buffers come from): its
:class:`~ros2_infmllm.memory.cache.BoundedCache` makes those and calls the layer with
what it decided. As in transformers' ``cache_utils``, a layer knows nothing of its cache;
it holds the evidence tally it adds to (:class:`~.evidence.EvidenceTally`), given at
construction.
"""

from __future__ import annotations

import dataclasses

import torch
from transformers.cache_utils import CacheLayerMixin

from .compaction import Compacted, DeviceInts
from .evidence import EvidenceTally
from .scoring import ScoreRequest, window_scores
from .segments import Segment, write_segments
from .storage import Buffers


class BoundedLayer(CacheLayerMixin):
    """One decoder layer's bounded KV storage plus per-token metadata.

    Metadata per (kv-head, token) lives in one int64 tensor ``meta`` ``[R + 2, H, cap]``,
    gathered with the keys on every compaction: rows ``0..R-1`` the current RoPE
    position(s) (R = 3 for M-RoPE), row ``R`` the arrival index in the stream (the
    original absolute 1-D position) and row ``R + 1`` the dense source index. The
    policy's running ``scores`` ``[H, cap]`` float32 sit beside it, and ``att`` ``[H, cap]``
    float32 sums the attention of one-token steps per slot while the cache's
    ``decode_tally`` is on (the evidence tally of an answer, folded per source at the next
    compaction or read, so a decode step adds to it on the device without host work).
    Steps whose scores the policy does not need only store their query in ``qring``
    (``[H_q, ring, D]``, slot ``i`` at ``i % ring``): the fold scores all stored queries
    in one batch (causal over the keys they saw: nothing moves between a step and its
    fold), the same sum as scoring each step, at one copy per step instead of a score.

    Parameters: ``layer_idx``; ``pos_rows`` (R); ``budget`` (the policy's capacity, None
    for no bound); ``ring`` (queries stored before a fold); ``keeps_scores`` (new scores
    add to the running ones instead of replacing them); ``evidence`` (the tally shared by
    the cache's layers).
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, layer_idx: int, pos_rows: int, budget: int | None, ring: int,
                 keeps_scores: bool, evidence: EvidenceTally):
        """Create an empty layer; buffers come with the first update."""
        super().__init__()
        self.layer_idx = layer_idx
        self.pos_rows = pos_rows
        self.budget = budget
        self.ring = ring
        self.keeps_scores = keeps_scores
        self.evidence = evidence
        self.length = 0
        self.capacity = 0
        self.pending = False
        self._next_pos: int | tuple[DeviceInts, int] = 0   # a tuple: on the device
        self.in_stack = False
        self.arrived = 0
        self.evicted = 0
        self.compactions = 0
        self.reallocations = 0
        self.scored_len = 0         # leading tokens whose scores are valid
        self.unscored = 0           # newest tokens appended by unscored one-token steps
        self.scored_arrival = 0     # stream arrival count at the last received scores
        self.tally_now = False
        self.tally_step = False     # this one-token step's attention goes to the tally
        self.score_policy = False   # this forward's scores go to the policy's ``scores``
        self.score_decay = 1.0      # factor on the running scores before this forward's
        self.score_weight = 1.0     # weight of this forward's scores
        self.att_dirty = False      # ``att`` holds attention not yet folded into the tally
        self.score_request: ScoreRequest | None = None   # read by the scoring attention
        self.qring: torch.Tensor | None = None
        self.q_count = 0            # newest one-token steps whose query waits in ``qring``
        self.q_scaling = 1.0
        self.undo_epoch = 0
        self.undo_state: tuple = ()
        self.segments: list[Segment] = []   # appended runs whose metadata is not written
        self.store: Buffers | None = None
        self.meta = self.scores = self.att = None
        self.key_buf = self.value_buf = None

    # ---- storage -------------------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor,
                            store: Buffers | None = None, capacity: int = 0) -> None:
        """Take ``store`` (a slot of the cache's stack) or allocate ``capacity`` tokens.

        Device, dtype and shapes are those of the first keys and values.
        """
        if key_states.shape[0] != 1:
            raise ValueError(f"BoundedCache supports batch size 1, got {key_states.shape[0]}")
        self.device = key_states.device
        self.dtype = key_states.dtype
        self.n_heads = key_states.shape[1]
        self.k_dim = key_states.shape[-1]
        self.v_dim = value_states.shape[-1]
        if store is None:
            self.allocate(capacity)
        else:
            self._take(store)
            self.in_stack = True
        self.is_initialized = True

    def _take(self, store: Buffers) -> None:
        """Use ``store`` (one layer's buffers) from now on; ``length`` tokens stay."""
        self.store = store
        self.key_buf, self.value_buf = store.keys, store.values
        self.meta, self.scores, self.att = store.meta[0], store.scores[0], store.att[0]
        self.capacity = store.keys.shape[2]
        self.set_length(self.length)

    def allocate(self, capacity: int) -> None:
        """(Re)allocate own buffers at ``capacity`` tokens, keeping the first ``length``.

        A layer in the cache's stack leaves it (``in_stack`` False).
        """
        new = Buffers.zeros(1, self.n_heads, capacity, self.k_dim, self.v_dim,
                            self.pos_rows, self.dtype, self.device)
        if self.store is not None:
            if self.length:
                new.copy_prefix(self.store, self.length)
            self.reallocations += 1
        self.in_stack = False
        self._take(new)

    @property
    def next_pos(self) -> int:
        """Position of the next implicit token (reads a device value once)."""
        if isinstance(self._next_pos, tuple):
            values, i = self._next_pos
            self._next_pos = values.get(i)
        return self._next_pos

    @next_pos.setter
    def next_pos(self, value: int) -> None:
        self._next_pos = value

    def set_length(self, n: int) -> None:
        """Hold the first ``n`` buffered tokens: ``keys`` / ``values`` become their views."""
        self.length = n
        self.keys = self.key_buf[:, :, :n]
        self.values = self.value_buf[:, :, :n]

    def remember_undo(self, epoch: int) -> None:
        """Keep what :meth:`undo` restores, on the first append since ``mark()`` (``epoch``)."""
        if epoch and self.undo_epoch != epoch:
            self.undo_epoch = epoch
            self.undo_state = (self.length, self.arrived, self._next_pos, self.pending,
                               self.scored_len, self.unscored, len(self.segments))

    def book_implicit(self, q: int, source: int) -> None:
        """Record ``q`` tokens of ``source`` appended after ``length`` at the next positions.

        They join the last unwritten segment when it continues it, else open a new one.
        """
        n = self.length
        if self.segments and self.segments[-1].extends_to(n, self.next_pos, self.arrived,
                                                          source):
            self.segments[-1].end = n + q
        else:
            self.segments.append(Segment(n, n + q, self.next_pos, self.arrived, source))
        self.next_pos += q

    def append(self, key_states: torch.Tensor, value_states: torch.Tensor, source: int,
               explicit: tuple[torch.Tensor, int] | None) -> None:
        """Write ``q`` new tokens after ``length`` (the buffers must have room).

        ``explicit``: their positions ``[R, q]`` and the next position after them, or None
        for the next implicit positions (booked as a segment, written later).
        """
        n = self.length
        q = key_states.shape[-2]
        end = n + q
        self.key_buf[:, :, n:end] = key_states
        self.value_buf[:, :, n:end] = value_states
        if explicit is None:
            self.book_implicit(q, source)
        else:
            pos, top = explicit
            self.flush()
            rows = self.pos_rows
            self.meta[:rows, :, n:end] = pos.to(self.device).unsqueeze(1)
            self.meta[rows, :, n:end] = torch.arange(self.arrived, self.arrived + q,
                                                     device=self.device)
            self.meta[rows + 1, :, n:end] = source
            self.next_pos = max(self.next_pos, top)
        self.arrived += q
        self.set_length(end)

    @property
    def pos(self) -> torch.Tensor:
        """Current RoPE positions ``[R, H, cap]`` (call :meth:`flush` first)."""
        return self.meta[:self.pos_rows]

    @property
    def arrival(self) -> torch.Tensor:
        """Arrival index in the stream ``[H, cap]`` (call :meth:`flush` first)."""
        return self.meta[self.pos_rows]

    @property
    def source(self) -> torch.Tensor:
        """Dense source index ``[H, cap]`` (call :meth:`flush` first)."""
        return self.meta[self.pos_rows + 1]

    def flush(self) -> None:
        """Write the metadata of tokens appended with implicit positions to the device."""
        if self.segments:
            write_segments(self.meta, self.segments, self.pos_rows)
            self.segments.clear()

    def nbytes(self) -> int:
        """Bytes held by this layer's buffers (keys, values and metadata)."""
        return 0 if self.store is None else self.store.nbytes()

    def kv_nbytes(self) -> int:
        """Bytes of the key/value buffers alone."""
        if self.key_buf is None:
            return 0
        return sum(t.numel() * t.element_size() for t in (self.key_buf, self.value_buf))

    # ---- transformers layer API --------------------------------------------------------------
    def kept_length(self) -> int:
        """Length after any pending compaction."""
        if self.pending and self.budget is not None and self.length > self.budget:
            return self.budget
        return self.length

    def get_seq_length(self) -> int:
        """Kept length after any pending compaction."""
        return self.kept_length()

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """``(kept + q, 0)``: the keys this layer will return for a ``query_length`` chunk."""
        return self.kept_length() + query_length, 0

    def get_max_length(self) -> int:
        """-1: the cache streams without bound (it keeps the budget, not a max length)."""
        return -1

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args,
               **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Not used: what to do with new tokens is the cache's call (BoundedCache.update)."""
        raise TypeError("a BoundedLayer is updated through BoundedCache.update")

    # ---- scores --------------------------------------------------------------------------
    def expect_scores(self, request: ScoreRequest | None, to_policy: bool, to_slots: bool,
                      to_tally: bool, decay: float = 1.0, weight: float = 1.0) -> None:
        """Say what this forward's attention call delivers and where its scores go.

        ``to_policy``: into the running ``scores`` (times ``decay`` first, the new ones
        times ``weight`` when ``keeps_scores``); ``to_slots``: added to ``att`` (a
        one-token step of an answer); ``to_tally``: to the evidence tally at once.
        """
        self.score_request = request
        self.score_policy = to_policy
        self.tally_step = to_slots
        self.tally_now = to_tally
        self.score_decay, self.score_weight = decay, weight
        self.att_dirty = self.att_dirty or (to_slots and to_policy)

    def scores_carried(self) -> bool:
        """Whether the held scores cover every token but the unscored one-token appends.

        True when a scored chunk (or a compaction that kept its scores) left valid scores
        for the first ``scored_len`` tokens and only one-token steps came after them: a
        window-mode compaction can then run on those scores without a new window.
        """
        return self.scored_len > 0 and self.scored_len + self.unscored >= self.length

    def receive_scores(self, scores: torch.Tensor) -> None:
        """Take ``[H_kv, T]`` scores from the attention function (see :meth:`expect_scores`)."""
        t = scores.shape[-1]
        if self.tally_step:
            self.att[:, :t] += scores
            if not self.score_policy:
                return
        if self.keeps_scores:
            if self.score_decay != 1.0:
                self.scores[:, :t] *= self.score_decay
            self.scores[:, :t] += scores if self.score_weight == 1.0 \
                else scores * self.score_weight
            self.scored_arrival = self.arrived
        else:
            self.scores[:, :t] = scores
        self.scored_len = t
        self.unscored = 0
        if self.tally_now:
            self.flush()
            self.evidence.add(self.source[:, :t], scores)
            self.tally_now = False

    def receive_query(self, query: torch.Tensor, scaling: float) -> None:
        """Store a one-token step's query ``[1, H_q, 1, D]`` for the fold (tally only)."""
        if self.qring is None:
            self.qring = torch.zeros((query.shape[1], self.ring, query.shape[-1]),
                                     dtype=query.dtype, device=query.device)
        self.qring[:, (self.length - 1) % self.ring] = query[0, :, -1]
        self.q_scaling = scaling
        self.q_count += 1

    def fold_attention(self) -> None:
        """Add the per-slot decode attention (stored queries, ``att``) to the evidence tally.

        Runs before a compaction moves slots and before the tally is read; device ops only.
        """
        n, s = self.length, self.q_count
        if s:
            self.q_count = 0
            idx = (torch.arange(s, device=self.qring.device) + (n - s)) % self.ring
            with torch.no_grad():
                scores = window_scores(self.qring[:, idx].unsqueeze(0), self.keys, None,
                                       self.q_scaling, None)
            self.flush()
            self.evidence.add(self.source[:, :n], scores)
        if not self.att_dirty:
            return
        self.att_dirty = False
        if n:
            self.flush()
            self.evidence.add(self.source[:, :n], self.att[:, :n])
            self.att[:, :n] = 0.0

    def clear_attention(self) -> None:
        """Drop decode attention not yet folded (a new tally starts)."""
        if self.att_dirty:
            self.att[:, :self.length] = 0.0
            self.att_dirty = False
        self.q_count = 0

    # ---- compaction, undo, reset -----------------------------------------------------------
    def compacted(self, result: Compacted, index: int) -> None:
        """Book a compaction of this layer (entry ``index`` of the layers it ran over)."""
        self.pending = False
        if isinstance(result.next_position, DeviceInts):
            self._next_pos = (result.next_position, index)
        elif result.next_position is not None:
            self._next_pos = result.next_position
        self.evicted += result.evicted
        self.compactions += 1
        self.set_length(result.kept)
        self.scored_len, self.unscored = result.scored_len, result.unscored

    def undo(self, epoch: int) -> None:
        """Drop the tokens appended since the cache's ``mark()`` of ``epoch`` (if any)."""
        self.score_request = None
        if self.undo_epoch != epoch or not self.undo_state:
            return
        n, self.arrived, self._next_pos, self.pending, self.scored_len, self.unscored, \
            n_seg = self.undo_state
        del self.segments[n_seg:]
        if self.segments and self.segments[-1].end > n:
            self.segments[-1].end = n
        if self.att_dirty:        # slots past n are written again later: no stale attention
            self.att[:, n:self.length] = 0.0
        self.q_count = max(0, self.q_count - (self.length - n))
        self.set_length(n)
        self.undo_state = ()

    STATE = ("length", "_next_pos", "arrived", "evicted", "compactions", "scored_len",
             "unscored", "scored_arrival")

    def saved_state(self) -> dict:
        """Return what :meth:`restore_state` needs to drop every token appended after now.

        The counters, the metadata segments and the scores of the kept tokens (appends
        never touch the kept slots' keys and values).
        """
        state = {k: getattr(self, k) for k in self.STATE}
        state["segments"] = [dataclasses.replace(seg) for seg in self.segments]
        state["scores"] = self.scores[:, :self.length].clone() \
            if self.scores is not None else None
        return state

    def restore_state(self, state: dict) -> None:
        """Return to a :meth:`saved_state`."""
        if self.att_dirty:
            self.att[:, :max(self.length, state["length"])] = 0.0
            self.att_dirty = False
        self.q_count = 0
        for k in self.STATE:
            setattr(self, k, state[k])
        self.segments = state["segments"]
        self.pending = self.tally_now = False
        self.score_request = None
        self.undo_state = ()
        if state["scores"] is not None:
            self.scores[:, :self.length] = state["scores"]
        if self.key_buf is not None:
            self.set_length(self.length)

    def reset(self) -> None:
        """Forget every token; buffers are kept for reuse."""
        self.undo_state = ()
        self.score_request = None
        self.length = 0
        self.pending = False
        self._next_pos = 0
        self.arrived = 0
        self.evicted = 0
        self.compactions = 0
        self.scored_len = 0
        self.unscored = 0
        self.scored_arrival = 0
        self.tally_now = False
        if self.att_dirty:
            self.att.zero_()
            self.att_dirty = False
        self.q_count = 0
        self.segments.clear()
        if self.key_buf is not None:
            self.keys = self.key_buf[:, :, :0]
            self.values = self.value_buf[:, :, :0]

    def crop(self, tokens_to_remove: int) -> None:
        """Not supported: evicted tokens cannot be restored."""
        raise NotImplementedError("BoundedCache does not support crop()")
