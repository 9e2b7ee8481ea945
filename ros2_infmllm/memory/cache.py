"""BoundedCache: a transformers ``Cache`` whose layers keep at most ``budget`` tokens.

Each :class:`BoundedLayer` preallocates ``[1, H_kv, budget + max_chunk + slack, D]`` key
and value buffers on its first update (device and dtype of the incoming keys) and
writes new tokens into them; nothing is concatenated per step. When a layer holds more
than ``budget`` tokens after a chunk, compaction is *pending*: it runs at the start of
that layer's next ``update`` (or on :meth:`BoundedCache.compact`), using the scores the
scoring attention computed while that chunk was prefilled. Compaction is one gather per
layer into the same buffers, plus exact RoPE re-rotation of the kept keys.

``get_seq_length`` and ``get_mask_sizes`` already report the length after any pending
compaction, so position ids and masks that transformers derives from them are right:
new tokens continue at the kept length ``n`` (kv_length ``n + q``, kv_offset 0).

Decode steps (one token) that push a layer over budget do not compact at once: tokens
accumulate for up to ``decode_slack`` steps and are compacted with the next chunk, so
an answer costs no per-token gather. Batch size 1 only (one stream per cache).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from . import scoring
from .policies import Policy
from .policies.base import SelectionInput
from .rope import RopeSpec, repack_positions

_UNKNOWN_SOURCE = 0   # dense index reserved for tokens appended without begin_source


class BoundedLayer(CacheLayerMixin):
    """One decoder layer's bounded KV storage plus per-token metadata.

    Metadata per (kv-head, token), gathered with the keys on every compaction: current
    RoPE position(s) ``pos`` ``[R, H, cap]`` (R = 3 for M-RoPE), arrival index in the
    stream ``arrival`` ``[H, cap]`` (the original absolute 1-D position), dense source
    index ``source`` ``[H, cap]`` and the policy's running ``scores`` ``[H, cap]``.
    """

    is_sliding = False
    is_compileable = False
    is_croppable = False

    def __init__(self, owner: "BoundedCache", layer_idx: int):
        super().__init__()
        self.owner = owner
        self.layer_idx = layer_idx
        self.length = 0
        self.capacity = 0
        self.pending = False
        self.next_pos = 0
        self.arrived = 0
        self.evicted = 0
        self.compactions = 0
        self.reallocations = 0
        self.scored_len = 0
        self.pos = self.arrival = self.source = self.scores = None
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
        self._allocate(self.owner.initial_capacity)
        self.is_initialized = True

    def _allocate(self, capacity: int) -> None:
        """(Re)allocate every buffer at ``capacity`` tokens, keeping the first ``length``."""
        n = self.length
        h, dev = self.n_heads, self.device
        rows = self.owner.pos_rows
        new_k = torch.zeros((1, h, capacity, self.k_dim), dtype=self.dtype, device=dev)
        new_v = torch.zeros((1, h, capacity, self.v_dim), dtype=self.dtype, device=dev)
        new_pos = torch.zeros((rows, h, capacity), dtype=torch.long, device=dev)
        new_arr = torch.zeros((h, capacity), dtype=torch.long, device=dev)
        new_src = torch.zeros((h, capacity), dtype=torch.long, device=dev)
        new_sc = torch.zeros((h, capacity), dtype=torch.float32, device=dev)
        if self.key_buf is not None and n:
            new_k[:, :, :n] = self.key_buf[:, :, :n]
            new_v[:, :, :n] = self.value_buf[:, :, :n]
            new_pos[..., :n] = self.pos[..., :n]
            new_arr[:, :n] = self.arrival[:, :n]
            new_src[:, :n] = self.source[:, :n]
            new_sc[:, :n] = self.scores[:, :n]
            self.reallocations += 1
        self.key_buf, self.value_buf = new_k, new_v
        self.pos, self.arrival, self.source, self.scores = new_pos, new_arr, new_src, new_sc
        self.capacity = capacity
        self.keys = self.key_buf[:, :, :n]
        self.values = self.value_buf[:, :, :n]

    def nbytes(self) -> int:
        """Bytes held by this layer's buffers (keys, values and metadata)."""
        if self.key_buf is None:
            return 0
        return sum(t.numel() * t.element_size() for t in
                   (self.key_buf, self.value_buf, self.pos, self.arrival, self.source, self.scores))

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
            self.compact()
        owner = self.owner
        policy = owner.policy
        q = key_states.shape[-2]
        n = self.length
        if n + q > self.capacity:
            grow = max(n + q, 2 * self.capacity) if not policy.compacts else n + q + owner.slack
            self._allocate(grow)
        end = n + q
        self.key_buf[:, :, n:end] = key_states
        self.value_buf[:, :, n:end] = value_states
        self.pos[..., n:end] = owner.positions_for(self, q)
        self.arrival[:, n:end] = torch.arange(self.arrived, self.arrived + q,
                                              device=self.device)
        self.source[:, n:end] = owner.current_source
        self.scores[:, n:end] = 0.0
        self.arrived += q
        self.length = end
        self.next_pos = max(self.next_pos, owner.last_next_pos)
        self.keys = self.key_buf[:, :, :end]
        self.values = self.value_buf[:, :, :end]

        budget = policy.capacity
        over = budget is not None and end > budget
        self.pending = over and (q > 1 or end >= budget + owner.decode_slack)
        mode = policy.score_mode
        if mode == "all":
            scoring.set_awaiting(self, None)
        elif (mode == "window" and self.pending) or owner.scores_requested:
            scoring.set_awaiting(self, policy.scoring_window)
        return self.keys, self.values

    def receive_scores(self, scores: torch.Tensor) -> None:
        """Take ``[H_kv, T]`` scores from the attention function."""
        t = scores.shape[-1]
        if self.owner.policy.score_mode == "all":
            self.scores[:, :t] += scores
        else:
            self.scores[:, :t] = scores
        self.scored_len = t
        self.owner.tally(self, scores)

    # ---- compaction ---------------------------------------------------------------------------
    def compact(self) -> None:
        """Cut this layer back to the budget now (one gather + re-rotation)."""
        policy = self.owner.policy
        budget = policy.capacity
        self.pending = False
        if budget is None or self.length <= budget:
            return
        n = self.length
        scores = None
        if policy.score_mode is not None:
            if self.scored_len < n:
                raise RuntimeError(
                    f"policy {policy.name!r} needs attention scores but layer {self.layer_idx} "
                    f"got none for its last chunk: call use_scoring_attention(model) first")
            scores = self.scores[:, :n]
        age = (self.arrived - 1) - self.arrival[:, :n]
        idx = policy.select(SelectionInput(scores=scores, age=age, length=n))   # [H, budget]
        k = idx.shape[-1]
        kidx = idx.unsqueeze(0).unsqueeze(-1)
        kept_k = self.key_buf[:, :, :n].gather(2, kidx.expand(1, -1, -1, self.k_dim))
        kept_v = self.value_buf[:, :, :n].gather(2, kidx.expand(1, -1, -1, self.v_dim))
        old_pos = self.pos[..., :n].gather(2, idx.unsqueeze(0).expand(self.pos.shape[0], -1, -1))
        src = self.source[:, :n].gather(1, idx)
        self.arrival[:, :k] = self.arrival[:, :n].gather(1, idx)
        self.scores[:, :k] = self.scores[:, :n].gather(1, idx)
        self.source[:, :k] = src
        if policy.repositions:
            run_start = torch.ones_like(src, dtype=torch.bool)
            run_start[:, 1:] = src[:, 1:] != src[:, :-1]
            new_pos = repack_positions(old_pos, run_start)
            self.owner.rope.rotate_(kept_k[0], new_pos - old_pos)
            self.pos[..., :k] = new_pos
            self.next_pos = int(new_pos.max().item()) + 1 if k else 0
        else:
            self.pos[..., :k] = old_pos
        self.key_buf[:, :, :k] = kept_k
        self.value_buf[:, :, :k] = kept_v
        self.evicted += n - k
        self.compactions += 1
        self.length = k
        self.scored_len = 0 if policy.score_mode == "window" else k
        self.keys = self.key_buf[:, :, :k]
        self.values = self.value_buf[:, :, :k]

    def reset(self) -> None:
        """Forget every token; buffers are kept for reuse."""
        self.length = 0
        self.pending = False
        self.next_pos = 0
        self.arrived = 0
        self.evicted = 0
        self.compactions = 0
        self.scored_len = 0
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
    """

    def __init__(self, policy: Policy, model_config: Any, max_chunk: int = 512,
                 decode_slack: int = 64):
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a Policy (make_policy(...)), got {type(policy)}")
        if isinstance(max_chunk, bool) or not isinstance(max_chunk, int) or max_chunk < 1:
            raise ValueError(f"max_chunk must be an int >= 1, got {max_chunk!r}")
        if isinstance(decode_slack, bool) or not isinstance(decode_slack, int) \
                or decode_slack < 1:
            raise ValueError(f"decode_slack must be an int >= 1, got {decode_slack!r}")
        text = model_config.get_text_config() if hasattr(model_config, "get_text_config") \
            else model_config
        self.rope = RopeSpec.from_config(text)
        model_type = getattr(text, "model_type", type(text).__name__)
        if self.rope is None and policy.repositions:
            raise ValueError(
                f"model type {model_type!r} has no rotary position embedding (learned/absolute "
                f"positions), so policy {policy.name!r} cannot re-position kept tokens; use a "
                f"policy with reposition=False (positions then keep growing) or 'full'")
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
        self._init_state()

    def _init_state(self) -> None:
        self.scores_requested = False
        self._explicit_pos: torch.Tensor | None = None
        self._explicit_left = 0
        self.last_next_pos = 0
        self.source_ids: list[Any] = [None]            # dense index -> source id
        self.source_index: dict[Any, int] = {}
        self.source_meta: dict[Any, tuple[float, str]] = {}
        self.current_source = _UNKNOWN_SOURCE
        self._tally: torch.Tensor | None = None

    # ---- sources and positions -----------------------------------------------------------
    def begin_source(self, source_id: Any, stamp: float = 0.0, kind: str = "") -> None:
        """Tag the tokens appended next as coming from ``source_id`` (a frame, a question...)."""
        if source_id not in self.source_index:
            self.source_index[source_id] = len(self.source_ids)
            self.source_ids.append(source_id)
        self.source_meta[source_id] = (float(stamp), str(kind))
        self.current_source = self.source_index[source_id]

    def set_next_positions(self, position_ids: torch.Tensor) -> None:
        """Record the RoPE positions of the next forward's tokens (M-RoPE images).

        ``position_ids`` is ``[q]``, ``[1, q]``, ``[R, q]`` or ``[R, 1, q]``. Without this,
        tokens are assumed to sit at ``next_position() + arange(q)`` on every row.
        """
        pos = position_ids.detach().long()
        if pos.dim() == 3:
            pos = pos[:, 0]
        if pos.dim() == 1:
            pos = pos.unsqueeze(0)
        if pos.shape[0] == 1 and self.pos_rows > 1:
            pos = pos.expand(self.pos_rows, -1)
        if pos.shape[0] != self.pos_rows:
            raise ValueError(f"expected {self.pos_rows} position rows, got {tuple(pos.shape)}")
        self._explicit_pos = pos
        self._explicit_left = len(self.layers)

    def positions_for(self, layer: BoundedLayer, q: int) -> torch.Tensor:
        """Positions ``[R, 1, q]`` of the ``q`` tokens being appended to ``layer``."""
        if self._explicit_pos is not None and self._explicit_pos.shape[-1] == q:
            pos = self._explicit_pos.to(layer.device)
            self._explicit_left -= 1
            if self._explicit_left <= 0:
                self._explicit_pos = None
        else:
            start = layer.next_pos
            pos = torch.arange(start, start + q, device=layer.device).expand(self.pos_rows, q)
        self.last_next_pos = int(pos.max().item()) + 1 if q else layer.next_pos
        return pos.unsqueeze(1)

    def next_position(self, layer_idx: int = 0) -> int:
        """Position id of the next token (max kept position + 1, after pending compaction)."""
        layer = self.layers[layer_idx]
        if layer.pending:
            layer.compact()
        return layer.next_pos

    # ---- scores and evidence ---------------------------------------------------------------
    def request_scores(self) -> None:
        """Score the next forward even if no compaction follows (evidence for answers)."""
        scoring.register()
        self.scores_requested = True

    def end_request(self) -> None:
        """Stop scoring forwards that do not need it."""
        self.scores_requested = False

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
        self._tally.scatter_add_(0, layer.source[:, :t].reshape(-1), scores.reshape(-1))

    def reset_attention_tally(self) -> None:
        """Start a new evidence tally."""
        if self._tally is not None:
            self._tally.zero_()

    def source_attention(self) -> dict[Any, float]:
        """Attention mass per source id since the last :meth:`reset_attention_tally`."""
        if self._tally is None:
            return {}
        vals = self._tally[:len(self.source_ids)].tolist()
        return {sid: v for sid, v in zip(self.source_ids, vals) if sid is not None and v > 0}

    def sources_in_memory(self) -> dict[Any, int]:
        """Source id -> tokens still cached (summed over layers and KV heads)."""
        counts = None
        for layer in self.layers:
            if not layer.is_initialized or layer.length == 0:
                continue
            c = torch.bincount(layer.source[:, :layer.length].reshape(-1),
                               minlength=len(self.source_ids)).cpu()
            counts = c if counts is None else counts + c[:len(counts)] if \
                len(c) >= len(counts) else c + counts[:len(c)]
        if counts is None:
            return {}
        return {self.source_ids[i]: int(v) for i, v in enumerate(counts.tolist())
                if v > 0 and self.source_ids[i] is not None}

    # ---- whole-cache operations ----------------------------------------------------------
    def compact(self) -> None:
        """Run every pending compaction now."""
        for layer in self.layers:
            if layer.pending:
                layer.compact()

    def reset(self) -> None:
        """Forget all tokens and sources; keep the buffers."""
        for layer in self.layers:
            layer.reset()
        scoring.clear_awaiting()
        self._init_state()

    def nbytes(self) -> int:
        """Bytes allocated by all layers (keys, values, metadata)."""
        return sum(layer.nbytes() for layer in self.layers)

    def kv_nbytes(self) -> int:
        """Bytes of the key/value buffers of all layers."""
        return sum(layer.kv_nbytes() for layer in self.layers)

    def describe(self) -> dict[str, Any]:
        """Summary for DescribeMemory / diagnostics."""
        return {
            "policy": self.policy.name,
            "params": self.policy.params(),
            "budget": self.policy.capacity,
            "max_chunk": self.max_chunk,
            "tokens_per_layer": [layer.kept_length() for layer in self.layers],
            "tokens_seen": max((layer.arrived for layer in self.layers), default=0),
            "evicted_tokens": sum(layer.evicted for layer in self.layers),
            "compactions": sum(layer.compactions for layer in self.layers),
            "reallocations": sum(layer.reallocations for layer in self.layers),
            "bytes_allocated": self.nbytes(),
            "kv_bytes_allocated": self.kv_nbytes(),
            "next_position": self.layers[0].next_pos if self.layers else 0,
            "sources": {str(sid): {"stamp": m[0], "kind": m[1]}
                        for sid, m in self.source_meta.items()},
        }
