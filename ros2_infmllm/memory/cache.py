"""BoundedCache: a transformers ``Cache`` whose layers keep at most ``budget`` tokens.

Each :class:`BoundedLayer` preallocates ``[1, H_kv, budget + max_chunk + decode_slack, D]``
key and value buffers on its first update (device and dtype of the incoming keys) and
writes new tokens into them; nothing is concatenated per step. When a layer holds more
than ``budget`` tokens after a chunk, compaction is *pending*: it runs at the start of
that layer's next ``update`` (or on :meth:`BoundedCache.compact`), using the scores the
scoring attention computed while that chunk was prefilled. When every layer is pending
at once (the usual case: all layers see the same chunk) the first layer's update compacts
all of them together: the layers' buffers are views of one stacked allocation per role, so
selection, position re-packing and RoPE re-rotation run once over all layers and the
gathers run once per group of layers (a bounded scratch), with no host synchronisation;
the M-RoPE next position stays on the device until :meth:`BoundedCache.next_position`
reads all layers' values in one transfer. Otherwise a layer compacts alone: one gather
per buffer (keys, values, packed metadata) into the same buffers, plus exact RoPE
re-rotation of the kept keys.

Positions and masks. transformers derives default position ids from ``get_seq_length``
and the causal mask from ``get_query_offset`` / ``get_mask_sizes``. This cache answers
``get_seq_length`` with the position of the next token (:meth:`BoundedCache.next_position`)
and the mask queries with the kept length, so ``model(...)`` without ``position_ids`` is
right for every policy: with re-positioning and 1-D RoPE both are the kept length; without
re-positioning (``snapkv``) positions keep growing while the mask covers the kept tokens.

Decode steps (one token) that push a layer over budget do not compact at once: tokens
accumulate for up to ``decode_slack`` steps and are compacted together, so an answer costs
no per-token gather. A one-token step requests no new window scores (for ``"window"``
policies): the compaction reuses the scores of the last scored multi-token chunk (the
question's window, a better relevance estimate than one query). Window-mode compaction
therefore gathers the kept tokens' scores too, so they stay valid after it, and the
tokens appended by unscored one-token steps since those scores (``BoundedLayer.unscored``,
always the newest ones) are forced kept like recent tokens. Only when no scored chunk
covers the older tokens (a multi-token chunk was appended without scores, e.g. under
budget) does the step that leaves the layer pending score its one query, as before; H2O
(``"all"``) scores every step anyway. The decode path does no host synchronisation:
per-token metadata is recorded as Python segments and written to the device tensors only
when needed (compaction, evidence tally, :meth:`BoundedCache.sources_in_memory`). Batch
size 1 only (one stream per cache).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from . import scoring
from .policies import Policy
from .policies.base import SelectionInput
from .rope import RopeSpec, Rotation, repack_positions

_UNKNOWN_SOURCE = 0   # dense index reserved for tokens appended without begin_source
_PRUNE_MIN = 256      # live source entries before begin_source forgets evicted sources
_GROUP_ELEMENTS = 1 << 23   # kept key elements gathered + re-rotated per batched step


def scored_after_compaction(policy: Policy, scored: int, unscored: int,
                            kept: int) -> tuple[int, int]:
    """``(scored_len, unscored)`` of a layer after a compaction kept ``kept`` tokens.

    The compaction is ``policy.select(inp, min_recent=unscored)``.

    Kept indices are ascending, so the kept unscored tokens (all of them, or the newest
    ``budget - n_sink`` and any unscored sinks) end the buffer.
    """
    if policy.score_mode is None:
        return 0, 0
    n_sink = policy.forced()[0]
    if unscored <= policy.capacity - n_sink:
        return kept - unscored, unscored
    left = min(n_sink, scored)
    return left, kept - left


class _Stack:
    """One allocation per buffer role shared by the layers (layer ``i`` uses index ``i``).

    Lets compaction gather every layer's kept tokens in one op. ``spec`` is what a layer
    must match to join (heads, key/value dims, dtype, device, capacity); a layer that
    does not match or later reallocates uses its own buffers, and the stack stops serving
    batched compaction (``complete`` False).
    """

    def __init__(self, n_layers: int, spec: tuple, rows: int):
        h, dk, dv, dtype, dev, cap = spec
        self.spec = spec
        self.k = torch.zeros((n_layers, h, cap, dk), dtype=dtype, device=dev)
        self.v = torch.zeros((n_layers, h, cap, dv), dtype=dtype, device=dev)
        self.meta = torch.zeros((n_layers, rows + 2, h, cap), dtype=torch.long, device=dev)
        self.scores = torch.zeros((n_layers, h, cap), dtype=torch.float32, device=dev)
        self.att = torch.zeros((n_layers, h, cap), dtype=torch.float32, device=dev)
        self.members = [False] * n_layers
        self.complete = True
        self.orphan_bytes = 0        # slots of layers that left (still allocated)

    def slot_bytes(self) -> int:
        """Bytes of one layer's slot (all roles)."""
        return sum(t[0].numel() * t.element_size()
                   for t in (self.k, self.v, self.meta, self.scores, self.att))


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
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, owner: "BoundedCache", layer_idx: int):
        """Create an empty layer; buffers come with the first update."""
        super().__init__()
        self.owner = owner
        self.layer_idx = layer_idx
        self.length = 0
        self.capacity = 0
        self.pending = False
        self._next_pos: int | None = 0    # None: on the device, see BoundedCache._lazy_next
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
        self.att_dirty = False      # ``att`` holds attention not yet folded into the tally
        self.qring: torch.Tensor | None = None
        self.q_count = 0            # newest one-token steps whose query waits in ``qring``
        self.q_scaling = 1.0
        self.undo_epoch = 0
        self.undo_state: tuple = ()
        self.segments: list[list[int]] = []   # [start, end, pos0, arrival0, source] unwritten
        self.meta = self.scores = self.att = None
        self.key_buf = self.value_buf = None

    # ---- storage -------------------------------------------------------------------------
    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """Allocate the buffers on the device/dtype of the first keys."""
        if key_states.shape[0] != 1:
            raise ValueError(f"BoundedCache supports batch size 1, got {key_states.shape[0]}")
        self.device = key_states.device
        self.dtype = key_states.dtype
        self.n_heads = key_states.shape[1]
        self.k_dim = key_states.shape[-1]
        self.v_dim = value_states.shape[-1]
        views = self.owner.stack_views(self)
        if views is None:
            self.allocate(self.owner.initial_capacity)
        else:
            self.key_buf, self.value_buf, self.meta, self.scores, self.att = views
            self.capacity = self.key_buf.shape[2]
            self.in_stack = True
            self.keys = self.key_buf[:, :, :0]
            self.values = self.value_buf[:, :, :0]
        self.is_initialized = True

    @property
    def next_pos(self) -> int:
        """Position of the next implicit token (reads a pending device value once)."""
        if self._next_pos is None:
            self.owner.resolve_next_positions()
        return self._next_pos

    @next_pos.setter
    def next_pos(self, value: int) -> None:
        self._next_pos = value

    def set_length(self, n: int) -> None:
        """Hold the first ``n`` buffered tokens: ``keys`` / ``values`` become their views."""
        self.length = n
        self.keys = self.key_buf[:, :, :n]
        self.values = self.value_buf[:, :, :n]

    def remember_undo(self) -> None:
        """On the first append since the cache's ``mark()``, keep what :meth:`undo` restores.

        Public because the graph runner (accel/cuda_graph.py) books its replayed decode
        steps with the same calls as :meth:`update`.
        """
        epoch = self.owner.epoch
        if epoch and self.undo_epoch != epoch:
            self.undo_epoch = epoch
            self.undo_state = (self.length, self.arrived, self._next_pos, self.pending,
                               self.scored_len, self.unscored, len(self.segments))

    def book_implicit(self, q: int) -> None:
        """Record ``q`` tokens appended after ``length`` at the next implicit positions.

        They join the last unwritten segment when it is the current source's and
        contiguous in position and arrival, else open a new one.
        """
        n, owner = self.length, self.owner
        seg = self.segments[-1] if self.segments else None
        if seg is not None and seg[1] == n and seg[4] == owner.current_source \
                and seg[2] + (n - seg[0]) == self.next_pos \
                and seg[3] + (n - seg[0]) == self.arrived:
            seg[1] = n + q
        else:
            self.segments.append([n, n + q, self.next_pos, self.arrived, owner.current_source])
        self.next_pos += q

    def allocate(self, capacity: int) -> None:
        """(Re)allocate every buffer at ``capacity`` tokens, keeping the first ``length``."""
        n = self.length
        h, dev = self.n_heads, self.device
        rows = self.owner.pos_rows
        new_k = torch.zeros((1, h, capacity, self.k_dim), dtype=self.dtype, device=dev)
        new_v = torch.zeros((1, h, capacity, self.v_dim), dtype=self.dtype, device=dev)
        new_meta = torch.zeros((rows + 2, h, capacity), dtype=torch.long, device=dev)
        new_sc = torch.zeros((h, capacity), dtype=torch.float32, device=dev)
        new_att = torch.zeros((h, capacity), dtype=torch.float32, device=dev)
        if self.key_buf is not None:
            if n:
                new_k[:, :, :n] = self.key_buf[:, :, :n]
                new_v[:, :, :n] = self.value_buf[:, :, :n]
                new_meta[..., :n] = self.meta[..., :n]
                new_sc[:, :n] = self.scores[:, :n]
                new_att[:, :n] = self.att[:, :n]
            self.reallocations += 1
        if self.in_stack:
            self.owner.leave_stack(self)
            self.in_stack = False
        self.key_buf, self.value_buf = new_k, new_v
        self.meta, self.scores, self.att = new_meta, new_sc, new_att
        self.capacity = capacity
        self.keys = self.key_buf[:, :, :n]
        self.values = self.value_buf[:, :, :n]

    @property
    def pos(self) -> torch.Tensor:
        """Current RoPE positions ``[R, H, cap]`` (call :meth:`flush` first)."""
        return self.meta[:self.owner.pos_rows]

    @property
    def arrival(self) -> torch.Tensor:
        """Arrival index in the stream ``[H, cap]`` (call :meth:`flush` first)."""
        return self.meta[self.owner.pos_rows]

    @property
    def source(self) -> torch.Tensor:
        """Dense source index ``[H, cap]`` (call :meth:`flush` first)."""
        return self.meta[self.owner.pos_rows + 1]

    def flush(self) -> None:
        """Write the metadata of tokens appended with implicit positions to the device."""
        if not self.segments:
            return
        rows = self.owner.pos_rows
        for start, end, pos0, arr0, src in self.segments:
            ramp = torch.arange(end - start, device=self.device)
            self.meta[:rows, :, start:end] = (ramp + pos0).expand(rows, self.n_heads, -1)
            self.meta[rows, :, start:end] = ramp + arr0
            self.meta[rows + 1, :, start:end] = src
        self.segments.clear()

    def nbytes(self) -> int:
        """Bytes held by this layer's buffers (keys, values and metadata)."""
        if self.key_buf is None:
            return 0
        return sum(t.numel() * t.element_size() for t in
                   (self.key_buf, self.value_buf, self.meta, self.scores, self.att))

    def kv_nbytes(self) -> int:
        """Bytes of the key/value buffers alone."""
        if self.key_buf is None:
            return 0
        return sum(t.numel() * t.element_size() for t in (self.key_buf, self.value_buf))

    # ---- transformers layer API --------------------------------------------------------------
    def kept_length(self) -> int:
        """Length after any pending compaction."""
        budget = self.owner.policy.capacity
        if self.pending and budget is not None and self.length > budget:
            return budget
        return self.length

    def next_position(self) -> int:
        """Position of the next token after any pending compaction (may compact M-RoPE)."""
        if self.pending and self.owner.policy.repositions:
            if self.owner.pos_rows > 1:
                self.owner.compact_pending(self)   # packed M-RoPE positions depend on it
            else:
                return self.kept_length()
        return self.next_pos

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
        """Compact if pending, append the new tokens, maybe request scores; return all keys."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        if key_states.shape[0] != 1:
            raise ValueError(f"BoundedCache supports batch size 1, got {key_states.shape[0]}")
        if self.pending:
            self.owner.compact_pending(self)
        owner = self.owner
        policy = owner.policy
        q = key_states.shape[-2]
        if self.q_count and (q > 1 or not owner.decode_tally or self.q_count >= owner.ring):
            owner.fold_layer(self)      # stored queries must be the newest tokens' own
        n = self.length
        self.remember_undo()
        end = n + q
        if end > self.capacity:
            grow = max(end, 2 * self.capacity) if not policy.compacts else end + owner.slack
            self.allocate(grow)
        self.key_buf[:, :, n:end] = key_states
        self.value_buf[:, :, n:end] = value_states
        explicit = owner.take_explicit_positions(q)
        if explicit is None:
            self.book_implicit(q)
        else:
            pos, top = explicit
            self.flush()
            rows = owner.pos_rows
            self.meta[:rows, :, n:end] = pos.to(self.device).unsqueeze(1)
            self.meta[rows, :, n:end] = torch.arange(self.arrived, self.arrived + q,
                                                     device=self.device)
            self.meta[rows + 1, :, n:end] = owner.current_source
            self.next_pos = max(self.next_pos, top)
        self.arrived += q
        self.set_length(end)

        budget = policy.capacity
        mode = policy.score_mode
        if policy.keeps_scores:
            self.scores[:, n:end] = 0.0
        self.unscored = self.unscored + 1 if q == 1 else 0   # receive_scores resets it
        over = budget is not None and end > budget and not owner.holding
        self.pending = over and (q > 1 or end >= budget + owner.decode_slack)
        self.tally_now = owner.take_score_request(self.layer_idx)
        self.tally_step = q == 1 and owner.decode_tally and not self.tally_now
        self.score_policy = mode == "all" or self.tally_now or (
            mode == "window" and ((self.pending and (q > 1 or not self.scores_carried()))
                                  or (q > 1 and policy.keeps_scores)))
        self.att_dirty = self.att_dirty or (self.tally_step and self.score_policy)
        if mode == "all":
            scoring.set_awaiting(self, None)
        elif self.score_policy:
            scoring.set_awaiting(self, policy.scoring_window)
        elif self.tally_step:
            scoring.set_awaiting(self, 1, query_only=True)
        else:
            scoring.clear_awaiting()
        return self.keys, self.values

    def scores_carried(self) -> bool:
        """Whether the held scores cover every token but the unscored one-token appends.

        True when a scored chunk (or a compaction that kept its scores) left valid scores
        for the first ``scored_len`` tokens and only one-token steps came after them: a
        window-mode compaction can then run on those scores without a new window.
        """
        return self.scored_len > 0 and self.scored_len + self.unscored >= self.length

    def scores_ready(self) -> bool:
        """Whether a compaction now has the scores its policy needs."""
        mode = self.owner.policy.score_mode
        if mode is None:
            return True
        if mode == "all":
            return self.scored_len >= self.length
        return self.scores_carried()

    def receive_scores(self, scores: torch.Tensor) -> None:
        """Take ``[H_kv, T]`` scores from the attention function.

        A one-token step of an answer (``tally_step``) adds them to ``att`` on the device;
        they feed the policy's scores only when the policy asked for this step's scores.
        """
        t = scores.shape[-1]
        if self.tally_step:
            self.att[:, :t] += scores
            if not self.score_policy:
                return
        policy = self.owner.policy
        if policy.keeps_scores:
            factor = policy.carry_factor(self.arrived - self.scored_arrival)
            if factor != 1.0:
                self.scores[:, :t] *= factor
            weight = policy.score_weight(t)
            self.scores[:, :t] += scores if weight == 1.0 else scores * weight
            self.scored_arrival = self.arrived
        else:
            self.scores[:, :t] = scores
        self.scored_len = t
        self.unscored = 0
        if self.tally_now:
            self.flush()
            self.owner.tally(self, scores)
            self.tally_now = False

    def receive_query(self, query: torch.Tensor, scaling: float) -> None:
        """Store a one-token step's query ``[1, H_q, 1, D]`` for the fold (tally only)."""
        ring = self.owner.ring
        if self.qring is None:
            self.qring = torch.zeros((query.shape[1], ring, query.shape[-1]),
                                     dtype=query.dtype, device=query.device)
        self.qring[:, (self.length - 1) % ring] = query[0, :, -1]
        self.q_scaling = scaling
        self.q_count += 1

    # ---- compaction ---------------------------------------------------------------------------
    def compact(self) -> None:
        """Cut this layer back to the budget now (one gather per buffer + re-rotation)."""
        policy = self.owner.policy
        budget = policy.capacity
        self.pending = False
        if budget is None or self.length <= budget:
            return
        n = self.length
        self.owner.fold_layer(self)
        scores = None
        unscored = 0
        if policy.score_mode is not None:
            if not self.scores_ready():
                raise RuntimeError(
                    f"policy {policy.name!r} needs attention scores but layer {self.layer_idx} "
                    f"got none for its last chunk: call use_scoring_attention(model) before "
                    f"running the model with this cache")
            unscored = n - self.scored_len
            if unscored and not policy.keeps_scores:
                self.scores[:, self.scored_len:n] = 0.0     # slots of earlier tokens
            scores = self.scores[:, :n]
        self.flush()
        rows = self.owner.pos_rows
        age = (self.arrived - 1) - self.meta[rows, :, :n]
        values = self.value_buf[0, :, :n] if policy.needs_values else None
        inp = SelectionInput(scores=scores, age=age, length=n, values=values)
        idx = policy.select(inp, min_recent=unscored)                      # [H, budget]
        k = idx.shape[-1]
        kidx = idx.unsqueeze(0).unsqueeze(-1)
        # gather into the cache's scratch (shared by the layers, allocated once), then copy
        # back into the front of the same buffers: no allocation per compaction
        kept_k = torch.gather(self.key_buf[:, :, :n], 2, kidx.expand(1, -1, -1, self.k_dim),
                              out=self.owner.scratch("k", self.key_buf, k))
        kept_v = torch.gather(self.value_buf[:, :, :n], 2, kidx.expand(1, -1, -1, self.v_dim),
                              out=self.owner.scratch("v", self.value_buf, k))
        kept_meta = torch.gather(self.meta[..., :n], 2,
                                 idx.unsqueeze(0).expand(rows + 2, -1, -1),
                                 out=self.owner.scratch("meta", self.meta, k))
        if scores is not None:          # kept scores stay valid for the next compaction
            self.scores[:, :k] = self.scores[:, :n].gather(1, idx)
        if policy.repositions:
            old_pos = kept_meta[:rows]
            if rows == 1:
                new_pos = torch.arange(k, device=self.device).expand(1, self.n_heads, k)
                self.next_pos = k
            else:
                src = kept_meta[rows + 1]
                run_start = torch.ones_like(src, dtype=torch.bool)
                run_start[:, 1:] = src[:, 1:] != src[:, :-1]
                new_pos = repack_positions(old_pos, run_start)
                self.next_pos = int(new_pos.max().item()) + 1 if k else 0
            self.owner.rope.rotate_(kept_k[0], new_pos - old_pos)
            kept_meta[:rows] = new_pos
        self.key_buf[:, :, :k] = kept_k
        self.value_buf[:, :, :k] = kept_v
        self.meta[..., :k] = kept_meta
        self.evicted += n - k
        self.compactions += 1
        self.set_length(k)
        self.scored_len, self.unscored = scored_after_compaction(policy, self.scored_len,
                                                                 unscored, k)

    def undo(self, epoch: int) -> None:
        """Drop the tokens appended since the cache's ``mark()`` of ``epoch`` (if any)."""
        if self.undo_epoch != epoch or not self.undo_state:
            return
        n, self.arrived, self._next_pos, self.pending, self.scored_len, self.unscored, \
            n_seg = self.undo_state
        del self.segments[n_seg:]
        if self.segments and self.segments[-1][1] > n:
            self.segments[-1][1] = n
        if self.att_dirty:        # slots past n are written again later: no stale attention
            self.att[:, n:self.length] = 0.0
        self.q_count = max(0, self.q_count - (self.length - n))
        self.set_length(n)
        self.undo_state = ()

    def reset(self) -> None:
        """Forget every token; buffers are kept for reuse."""
        self.undo_state = ()
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


class BoundedCache(Cache):
    """A transformers Cache that keeps at most ``policy.budget`` tokens per layer.

    Parameters
    ----------
    policy : Policy
        Eviction policy (see :func:`ros2_infmllm.memory.make_policy`).
    model_config : PretrainedConfig
        The model's config (multimodal configs use their text config).
    max_chunk : int
        Largest number of tokens one forward appends; buffers hold ``budget + max_chunk +
        decode_slack`` tokens. Larger chunks still work but reallocate the buffers.
    decode_slack : int
        One-token steps that may accumulate past the budget before compaction.
    rotation : Rotation
        The model's RoPE kind, as its adapter declares it (``ModelAdapter.rotation``).
    """

    def __init__(self, policy: Policy, model_config: Any, max_chunk: int = 512,
                 decode_slack: int = 64, rotation: Rotation = Rotation.ROTATE_HALF):
        """Validate the arguments and create one empty layer per decoder layer."""
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy (make_policy(...)), got {type(policy)}")
        if isinstance(max_chunk, bool) or not isinstance(max_chunk, int) or max_chunk < 1:
            raise ValueError(f"max_chunk must be an int >= 1, got {max_chunk!r}")
        if isinstance(decode_slack, bool) or not isinstance(decode_slack, int) \
                or decode_slack < 1:
            raise ValueError(f"decode_slack must be an int >= 1, got {decode_slack!r}")
        text = model_config.get_text_config() if hasattr(model_config, "get_text_config") \
            else model_config
        model_type = getattr(text, "model_type", type(text).__name__)
        self.rope = RopeSpec.from_config(text, rotation)
        if self.rope is None and policy.repositions:
            raise ValueError(
                f"model type {model_type!r} has no rotary position embedding (learned/absolute "
                f"positions), so policy {policy.name!r} cannot re-position kept tokens; pass "
                f"reposition=False (positions then keep growing) or use policy 'full'")
        budget = policy.capacity
        top = (budget or 0) + max_chunk + decode_slack
        if self.rope is not None and self.rope.exact_below and policy.repositions \
                and top > self.rope.exact_below:
            raise ValueError(
                f"{self.rope.rope_type} RoPE changes its frequencies past position "
                f"{self.rope.exact_below}; budget + max_chunk + decode_slack = {top} would "
                f"pass it and make re-rotation inexact: lower the budget or max_chunk")
        n_layers = getattr(text, "num_hidden_layers", None)
        if n_layers is None:
            raise ValueError(f"config of {model_type!r} has no num_hidden_layers")
        self.policy = policy
        self.max_chunk = max_chunk
        self.decode_slack = decode_slack
        self.slack = max_chunk + decode_slack
        budget = policy.capacity
        self.initial_capacity = (budget + self.slack) if budget is not None else max_chunk
        self.pos_rows = self.rope.rows if self.rope is not None else 1
        self.model_type = model_type
        layers = [BoundedLayer(self, i) for i in range(n_layers)]
        super().__init__(layers=layers)
        self._scratch: dict[tuple, torch.Tensor] = {}
        self._stack: _Stack | None = None
        self.batched = True      # False: every layer compacts alone (reference path)
        self.decode_tally = False   # one-token steps add their attention to the evidence
        self.ring = decode_slack + 2    # queries stored per layer before a forced fold
        self._init_state()

    def scratch(self, role: str, like: torch.Tensor, k: int) -> torch.Tensor:
        """Compaction scratch ``role`` shaped like ``like`` with ``k`` tokens (made once)."""
        shape = tuple(like.shape[:-2]) + (k,) + tuple(like.shape[-1:]) if like.dim() == 4 \
            else tuple(like.shape[:-1]) + (k,)
        return self._scratch_buffer(role, shape, like)

    def _init_state(self) -> None:
        self.epoch = 0
        self._score_layers: set[int] = set()
        self._explicit_pos: torch.Tensor | None = None
        self._explicit_top = 0
        self._explicit_left = 0
        self.source_ids: list[Any] = [None]            # dense index -> source id
        self.source_index: dict[Any, int] = {}
        self.source_meta: dict[Any, tuple[float, str]] = {}
        self._free_sources: list[int] = []             # dense indices no token carries
        self._prune_at = _PRUNE_MIN
        self.current_source = _UNKNOWN_SOURCE
        self._tally: torch.Tensor | None = None
        self._lazy_next: torch.Tensor | None = None    # [L] next positions, on the device
        self._lazy_vals: list | None = None
        self._held: dict | None = None                 # hold(): the state rewind() restores

    @property
    def holding(self) -> bool:
        """Whether :meth:`hold` is in force (nothing is compacted until :meth:`rewind`)."""
        return self._held is not None

    # ---- transformers Cache API ---------------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Position of the next token: transformers' default position ids start here."""
        if layer_idx >= len(self.layers):
            return 0
        return self.layers[layer_idx].next_position()

    def get_query_offset(self, layer_idx: int = 0) -> int:
        """Kept length after pending compaction: the causal mask's query offset."""
        if layer_idx >= len(self.layers):
            return 0
        return self.layers[layer_idx].kept_length()

    # ---- sources and positions -----------------------------------------------------------
    def begin_source(self, source_id: Any, stamp: float = 0.0, kind: str = "") -> None:
        """Tag the tokens appended next as coming from ``source_id`` (a frame, a question...)."""
        if source_id is None:
            raise ValueError("source_id must not be None (None marks untagged tokens)")
        if source_id not in self.source_index:
            if len(self.source_ids) - len(self._free_sources) >= self._prune_at:
                self.sources_in_memory()          # forgets sources with no token left
                live = len(self.source_ids) - len(self._free_sources)
                self._prune_at = max(_PRUNE_MIN, 2 * live)
            if self._free_sources:
                idx = self._free_sources.pop()
                self.source_ids[idx] = source_id
            else:
                idx = len(self.source_ids)
                self.source_ids.append(source_id)
            self.source_index[source_id] = idx
        self.source_meta[source_id] = (float(stamp), str(kind))
        self.current_source = self.source_index[source_id]

    def set_next_positions(self, position_ids: torch.Tensor) -> None:
        """Record the RoPE positions of the next forward's tokens (M-RoPE images).

        ``position_ids`` is ``[q]``, ``[1, q]``, ``[R, q]`` or ``[R, 1, q]`` (the last two
        as given to Qwen2-VL). Without this, tokens are assumed to sit at
        ``next_position() + arange(q)`` on every row. Costs one host sync (the maximum).
        """
        pos = position_ids.detach().long()
        if pos.dim() == 3:
            pos = pos[:, 0]
        if pos.dim() == 1:
            pos = pos.unsqueeze(0)
        if pos.dim() != 2:
            raise ValueError(f"position_ids must have 1 to 3 dims, got "
                             f"{tuple(position_ids.shape)}")
        if pos.shape[0] > self.pos_rows:
            pos = pos[-self.pos_rows:]     # e.g. a leading text-position row
        if pos.shape[0] == 1 and self.pos_rows > 1:
            pos = pos.expand(self.pos_rows, -1)
        if pos.shape[0] != self.pos_rows:
            raise ValueError(f"expected {self.pos_rows} position rows, got {tuple(pos.shape)}")
        self._explicit_pos = pos
        self._explicit_top = int(pos.max().item()) + 1 if pos.numel() else 0
        self._explicit_left = len(self.layers)

    def take_explicit_positions(self, q: int) -> tuple[torch.Tensor, int] | None:
        """Explicit positions for a ``q``-token update, if :meth:`set_next_positions` set them."""
        if self._explicit_pos is None:
            return None
        if self._explicit_pos.shape[-1] != q:
            raise ValueError(f"set_next_positions got {self._explicit_pos.shape[-1]} positions "
                             f"but the forward appends {q} tokens")
        out = (self._explicit_pos, self._explicit_top)
        self._explicit_left -= 1
        if self._explicit_left <= 0:
            self._explicit_pos = None
        return out

    def next_position(self, layer_idx: int = 0) -> int:
        """Position id of the next token (max kept position + 1, after pending compaction)."""
        return self.layers[layer_idx].next_position()

    # ---- scores and evidence ---------------------------------------------------------------
    def request_scores(self) -> None:
        """Score the next forward even if no compaction follows, and tally it as evidence."""
        scoring.register()
        self._score_layers = set(range(len(self.layers)))

    def end_request(self) -> None:
        """Cancel a :meth:`request_scores` whose forward did not run."""
        self._score_layers = set()

    def take_score_request(self, layer_idx: int) -> bool:
        """Return True once per layer after :meth:`request_scores` (the layer's next forward)."""
        if layer_idx in self._score_layers:
            self._score_layers.discard(layer_idx)
            return True
        return False

    def tally(self, layer: BoundedLayer, scores: torch.Tensor) -> None:
        """Add the scored attention mass per source (over heads) to the running tally."""
        t = scores.shape[-1]
        n_src = len(self.source_ids)
        if self._tally is None or self._tally.numel() < n_src or self._tally.device != \
                scores.device:
            old = self._tally
            self._tally = torch.zeros(max(n_src, 16) * 2, dtype=torch.float32,
                                      device=scores.device)
            if old is not None:
                self._tally[:old.numel()] += old.to(scores.device)
        self._tally.scatter_add_(0, layer.source[:, :t].reshape(-1), scores.reshape(-1).float())

    def reset_attention_tally(self) -> None:
        """Start a new evidence tally."""
        if self._tally is not None:
            self._tally.zero_()
        for layer in self.layers:
            if layer.att_dirty:
                layer.att[:, :layer.length] = 0.0
                layer.att_dirty = False
            layer.q_count = 0

    def fold_layer(self, layer: BoundedLayer) -> None:
        """Add ``layer``'s per-slot decode attention to the per-source tally, then clear it.

        Runs before a compaction moves slots and before the tally is read; device ops only.
        """
        n, s = layer.length, layer.q_count
        if s:
            layer.q_count = 0
            idx = (torch.arange(s, device=layer.qring.device) + (n - s)) % self.ring
            with torch.no_grad():
                scores = scoring.window_scores(layer.qring[:, idx].unsqueeze(0), layer.keys,
                                               None, layer.q_scaling, None)
            layer.flush()
            self.tally(layer, scores)
        if not layer.att_dirty:
            return
        layer.att_dirty = False
        if n:
            layer.flush()
            self.tally(layer, layer.att[:, :n])
            layer.att[:, :n] = 0.0

    @property
    def scores_requested(self) -> bool:
        """Whether some layer still waits for the attention scores :meth:`request_scores` asked."""
        return bool(self._score_layers)

    @property
    def positions_given(self) -> bool:
        """Whether :meth:`set_next_positions` gave positions that no update has taken yet."""
        return self._explicit_pos is not None

    def source_state(self) -> tuple[dict[str, Any], torch.Tensor | None]:
        """Per-source bookkeeping as JSON values, and the folded evidence tally (or None).

        What a snapshot needs to bring the sources back with :meth:`restore_sources`; the
        tally is ``[n_sources]`` float32 on the device, as folded so far (per-slot decode
        attention not yet folded is left where it is, so reading this changes nothing).
        """
        state = {
            "source_ids": list(self.source_ids),
            "source_meta": [[sid, m[0], m[1]] for sid, m in self.source_meta.items()],
            "free_sources": list(self._free_sources), "prune_at": self._prune_at,
            "current_source": self.current_source,
        }
        tally = None if self._tally is None else self._tally[:len(self.source_ids)]
        return state, tally

    def restore_sources(self, state: dict[str, Any], tally: torch.Tensor | None,
                        device: torch.device | str) -> None:
        """Take back a :meth:`source_state` result (the layers hold the matching tokens)."""
        self.source_ids = list(state["source_ids"])
        self.source_index = {sid: i for i, sid in enumerate(self.source_ids) if sid is not None}
        self.source_meta = {sid: (float(stamp), str(kind))
                            for sid, stamp, kind in state["source_meta"]}
        self._free_sources = list(state["free_sources"])
        self._prune_at = int(state["prune_at"])
        self.current_source = int(state["current_source"])
        if tally is not None:
            dev = next((la.key_buf.device for la in self.layers if la.key_buf is not None),
                       torch.device(device))
            self._tally = torch.zeros(max(tally.numel(), 16) * 2, dtype=torch.float32,
                                      device=dev)
            self._tally[:tally.numel()] = tally.to(dev)

    def fold_tally(self) -> None:
        """Fold every layer's decode attention into the tally (see :meth:`fold_layer`)."""
        for layer in self.layers:
            self.fold_layer(layer)

    def source_attention(self) -> dict[Any, float]:
        """Attention mass per source id since the last :meth:`reset_attention_tally`.

        Sums, over layers and KV heads, the window attention of every forward scored after
        :meth:`request_scores`. Untagged tokens are left out.
        """
        if any(layer.tally_now for layer in self.layers):
            raise RuntimeError("request_scores() was called but the model's attention did not "
                               "deliver scores: call use_scoring_attention(model) first")
        self.fold_tally()
        if self._tally is None:
            return {}
        vals = self._tally[:len(self.source_ids)].tolist()
        return {sid: v for sid, v in zip(self.source_ids, vals) if sid is not None and v > 0}

    def sources_in_memory(self) -> dict[Any, int]:
        """Source id -> tokens still cached (summed over layers and KV heads).

        Sources with no token left anywhere (and no evidence tally) are forgotten here, so
        the per-source bookkeeping stays bounded on an endless stream.
        """
        n_src = len(self.source_ids)
        counts = torch.zeros(n_src, dtype=torch.long)
        for layer in self.layers:
            if not layer.is_initialized:
                continue
            if layer.pending:
                self.compact_pending(layer)
            layer.flush()
            n = layer.length
            if n == 0:
                continue
            counts += torch.bincount(layer.source[:, :n].reshape(-1), minlength=n_src).cpu()
        counts = counts.tolist()
        tally = self._tally[:n_src].tolist() if self._tally is not None else [0.0] * n_src
        for i in range(1, n_src):
            sid = self.source_ids[i]
            if sid is not None and counts[i] == 0 and tally[i] == 0 and i != self.current_source:
                del self.source_index[sid]
                self.source_meta.pop(sid, None)
                self.source_ids[i] = None
                self._free_sources.append(i)
        return {self.source_ids[i]: int(v) for i, v in enumerate(counts)
                if v > 0 and self.source_ids[i] is not None}

    # ---- whole-cache operations ----------------------------------------------------------
    def mark(self) -> None:
        """Remember the state before a forward, so :meth:`rollback` can undo its appends."""
        self.epoch += 1

    def rollback(self) -> None:
        """Undo the tokens appended since :meth:`mark` (after a forward that raised).

        Every layer returns to its length before that forward, so all layers agree again;
        compactions that forward already ran stay (they are what lazy compaction would do).
        H2O scores accumulated by the failed forward are not subtracted.
        """
        for layer in self.layers:
            layer.undo(self.epoch)
        scoring.clear_awaiting()
        self._score_layers = set()
        self._explicit_pos = None

    _LAYER_STATE = ("length", "_next_pos", "arrived", "evicted", "compactions", "scored_len",
                    "unscored", "scored_arrival")
    _CACHE_STATE = ("_score_layers", "_explicit_pos", "_explicit_top", "_explicit_left",
                    "source_ids", "source_index", "source_meta", "_free_sources", "_prune_at",
                    "current_source", "_lazy_vals")

    def hold(self) -> None:
        """Keep what is cached now until :meth:`rewind` (an exchange that leaves no trace).

        Pending compactions run first (what the next chunk would run anyway); then nothing
        is compacted until :meth:`rewind`: new tokens go to the buffers' slack (growing
        them if they overflow). Only what those tokens can change is saved: every layer's
        counters and metadata segments, the policy's scores of the kept tokens, the source
        bookkeeping and the evidence tally (no key/value copy: kept slots are not touched).
        """
        if self._held is not None:
            raise RuntimeError("hold() twice without rewind()")
        self.compact()
        layers = []
        for layer in self.layers:
            state = {k: getattr(layer, k) for k in self._LAYER_STATE}
            state["segments"] = [list(seg) for seg in layer.segments]
            state["scores"] = layer.scores[:, :layer.length].clone() \
                if layer.scores is not None else None
            layers.append(state)
        cache = {k: copy.copy(getattr(self, k)) for k in self._CACHE_STATE}
        cache["_tally"] = self._tally.clone() if self._tally is not None else None
        cache["_lazy_next"] = self._lazy_next.clone() if self._lazy_next is not None else None
        self._held = {"layers": layers, "cache": cache}

    def rewind(self) -> None:
        """Return to the state :meth:`hold` saved: drop every token appended since."""
        held, self._held = self._held, None
        if held is None:
            raise RuntimeError("rewind() without hold()")
        for layer, state in zip(self.layers, held["layers"]):
            if layer.att_dirty:
                layer.att[:, :max(layer.length, state["length"])] = 0.0
                layer.att_dirty = False
            layer.q_count = 0
            for k in self._LAYER_STATE:
                setattr(layer, k, state[k])
            layer.segments = state["segments"]
            layer.pending = layer.tally_now = False
            layer.undo_state = ()
            n = layer.length
            if state["scores"] is not None:
                layer.scores[:, :n] = state["scores"]
            if layer.key_buf is not None:
                layer.keys = layer.key_buf[:, :, :n]
                layer.values = layer.value_buf[:, :, :n]
        for k, v in held["cache"].items():
            setattr(self, k, v)
        scoring.clear_awaiting()

    def compact(self) -> None:
        """Run every pending compaction now (all layers together when they allow it)."""
        if self._compact_stacked():
            return
        for layer in self.layers:
            if layer.pending:
                layer.compact()

    def compact_pending(self, layer: BoundedLayer) -> None:
        """Compact ``layer`` (pending): with every other layer at once if they allow it.

        The result is the same as each layer compacting at its own next update: a layer's
        compaction depends only on its own tokens and scores, fixed since its last chunk.
        """
        if not self._compact_stacked():
            layer.compact()

    # ---- stacked storage and batched compaction ---------------------------------------------
    def stack_views(self, layer: BoundedLayer) -> tuple | None:
        """Buffers for ``layer`` as views of the shared stack, or None (own buffers)."""
        if not self.policy.compacts or not self.batched:
            return None
        spec = (layer.n_heads, layer.k_dim, layer.v_dim, layer.dtype, str(layer.device),
                self.initial_capacity)
        st = self._stack
        if st is None:
            st = self._stack = _Stack(len(self.layers), spec[:4] + (layer.device,) + spec[5:],
                                      self.pos_rows)
            st.spec = spec
        if st.spec != spec:
            st.complete = False
            return None
        i = layer.layer_idx
        st.members[i] = True
        return st.k[i:i + 1], st.v[i:i + 1], st.meta[i], st.scores[i], st.att[i]

    def leave_stack(self, layer: BoundedLayer) -> None:
        """``layer`` reallocated its own buffers: its stack slot is no longer used."""
        st = self._stack
        if st is not None and st.members[layer.layer_idx]:
            st.members[layer.layer_idx] = False
            st.complete = False
            st.orphan_bytes += st.slot_bytes()

    def resolve_next_positions(self) -> None:
        """Read the device-side next positions of the last batched compaction (one sync)."""
        if self._lazy_vals is None:
            if self._lazy_next is None:
                raise RuntimeError("internal: next position pending without a device value")
            self._lazy_vals = self._lazy_next.tolist()
        for layer, v in zip(self.layers, self._lazy_vals):
            if layer._next_pos is None:
                layer._next_pos = int(v)

    def _stack_ready(self) -> bool:
        """Tell whether every layer is pending in the complete stack with the same state."""
        st = self._stack
        if st is None or not st.complete or not self.batched:
            return False
        first = self.layers[0]
        budget = self.policy.capacity
        if budget is None or not first.pending or first.length <= budget:
            return False
        n, arrived, scored = first.length, first.arrived, first.scored_len
        need = self.policy.score_mode is not None
        for layer in self.layers:
            if not (layer.in_stack and layer.pending and layer.length == n
                    and layer.arrived == arrived) \
                    or (need and (layer.scored_len != scored or not layer.scores_ready())):
                return False
        return True

    def _flush_all(self) -> None:
        """Write every layer's implicit-position metadata (once for all if they agree)."""
        first = self.layers[0].segments
        if any(layer.segments != first for layer in self.layers):
            for layer in self.layers:
                layer.flush()
            return
        meta, rows = self._stack.meta, self.pos_rows
        dev = meta.device
        for start, end, pos0, arr0, src in first:
            ramp = torch.arange(end - start, device=dev)
            meta[:, :rows, :, start:end] = (ramp + pos0).expand(rows, meta.shape[2], -1)
            meta[:, rows, :, start:end] = ramp + arr0
            meta[:, rows + 1, :, start:end] = src
        for layer in self.layers:
            layer.segments.clear()

    def _scratch_buffer(self, role: str, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        """Compaction scratch ``role`` of ``shape`` (made once, counted in :meth:`nbytes`)."""
        key = (role, shape, like.dtype, str(like.device))
        buf = self._scratch.get(key)
        if buf is None:
            buf = self._scratch[key] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    def _compact_stacked(self) -> bool:
        """Compact every layer together; False (nothing done) if they are not all ready.

        Selection, M-RoPE re-packing and the metadata gather run once over all layers;
        keys and values are gathered and re-rotated per group of layers (bounded scratch).
        No host synchronisation: the M-RoPE next position stays on the device.
        """
        if not self._stack_ready():
            return False
        st, policy, layers = self._stack, self.policy, self.layers
        self.fold_tally()
        first = layers[0]
        n, arrived = first.length, first.arrived
        n_layers, h, rows = len(layers), first.n_heads, self.pos_rows
        self._flush_all()
        meta = st.meta[..., :n]                                          # [L, R+2, H, n]
        age = ((arrived - 1) - meta[:, rows]).reshape(n_layers * h, n)
        scores = None
        unscored = 0
        if policy.score_mode is not None:
            unscored = n - first.scored_len
            if unscored and not policy.keeps_scores:
                st.scores[:, :, first.scored_len:n] = 0.0       # slots of earlier tokens
            scores = st.scores[:, :, :n].reshape(n_layers * h, n)
        values = st.v[:, :, :n].reshape(n_layers * h, n, first.v_dim) \
            if policy.needs_values else None
        inp = SelectionInput(scores=scores, age=age, length=n, values=values)
        idx = policy.select(inp, min_recent=unscored)
        k = idx.shape[-1]
        idx = idx.view(n_layers, h, k)
        kept_meta = torch.gather(meta, 3, idx.unsqueeze(1).expand(-1, rows + 2, -1, -1))
        if scores is not None:          # kept scores stay valid for the next compaction
            st.scores[:, :, :k] = st.scores[:, :, :n].gather(2, idx)
        delta = None
        if policy.repositions:
            old_pos = kept_meta[:, :rows]                                # [L, R, H, k]
            if rows == 1:
                new_pos = torch.arange(k, device=meta.device).expand(n_layers, 1, h, k)
                next_pos: int | None = k
            else:
                src = kept_meta[:, rows + 1]
                run_start = torch.ones_like(src, dtype=torch.bool)
                run_start[..., 1:] = src[..., 1:] != src[..., :-1]
                flat_pos = old_pos.transpose(0, 1).reshape(rows, n_layers * h, k)
                new_pos = repack_positions(flat_pos, run_start.reshape(n_layers * h, k))
                new_pos = new_pos.view(rows, n_layers, h, k).transpose(0, 1)
                if k:
                    self._lazy_next = new_pos.amax(dim=(1, 2, 3)) + 1    # [L], on device
                    self._lazy_vals = None
                    next_pos = None
                else:
                    next_pos = 0
            delta = new_pos - old_pos
            kept_meta[:, :rows] = new_pos
        st.meta[..., :k] = kept_meta
        per_layer = max(1, h * k * max(first.k_dim, first.v_dim))
        group = max(1, min(n_layers, _GROUP_ELEMENTS // per_layer))
        for g0 in range(0, n_layers, group):
            g1 = min(n_layers, g0 + group)
            g = g1 - g0
            gidx = idx[g0:g1].unsqueeze(-1)
            kk = self._scratch_buffer("sk", (group, h, k, first.k_dim), st.k)[:g]
            torch.gather(st.k[g0:g1, :, :n], 2, gidx.expand(-1, -1, -1, first.k_dim), out=kk)
            if delta is not None:
                d = delta[g0:g1].transpose(0, 1).reshape(rows, g * h, k)
                self.rope.rotate_(kk.view(g * h, k, first.k_dim), d)
            st.k[g0:g1, :, :k] = kk
            vv = self._scratch_buffer("sv", (group, h, k, first.v_dim), st.v)[:g]
            torch.gather(st.v[g0:g1, :, :n], 2, gidx.expand(-1, -1, -1, first.v_dim), out=vv)
            st.v[g0:g1, :, :k] = vv
        scored, unscored = scored_after_compaction(policy, first.scored_len, unscored, k)
        for layer in layers:
            layer.pending = False
            if policy.repositions:
                layer._next_pos = next_pos
            layer.evicted += n - k
            layer.compactions += 1
            layer.set_length(k)
            layer.scored_len, layer.unscored = scored, unscored
        return True

    def reset(self) -> None:
        """Forget all tokens and sources; keep the buffers."""
        for layer in self.layers:
            layer.reset()
        scoring.clear_awaiting()
        self._init_state()

    def nbytes(self) -> int:
        """Bytes allocated by all layers (keys, values, metadata) and the compaction scratch."""
        orphans = self._stack.orphan_bytes if self._stack is not None else 0
        return sum(layer.nbytes() for layer in self.layers) + orphans + sum(
            t.numel() * t.element_size() for t in self._scratch.values())

    def kv_nbytes(self) -> int:
        """Bytes of the key/value buffers of all layers."""
        return sum(layer.kv_nbytes() for layer in self.layers)

    def describe(self) -> dict[str, Any]:
        """Summary for DescribeMemory / diagnostics (compacts pending layers first)."""
        in_memory = self.sources_in_memory()
        return {
            "policy": self.policy.name,
            "params": self.policy.params(),
            "budget": self.policy.capacity,
            "max_chunk": self.max_chunk,
            "decode_slack": self.decode_slack,
            "tokens_per_layer": [layer.kept_length() for layer in self.layers],
            "tokens_seen": max((layer.arrived for layer in self.layers), default=0),
            "evicted_tokens": sum(layer.evicted for layer in self.layers),
            "compactions": sum(layer.compactions for layer in self.layers),
            "reallocations": sum(layer.reallocations for layer in self.layers),
            "bytes_allocated": self.nbytes(),
            "kv_bytes_allocated": self.kv_nbytes(),
            "next_position": self.layers[0].next_pos if self.layers else 0,
            "sources": {str(sid): {"stamp": m[0], "kind": m[1],
                                   "tokens_in_memory": in_memory.get(sid, 0)}
                        for sid, m in self.source_meta.items()},
        }
