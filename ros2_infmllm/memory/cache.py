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
reads all layers' values in one transfer. Otherwise a layer compacts alone, through the
same routine (:func:`~ros2_infmllm.memory.compaction.compact`) on its own buffers.

Who does what. This class is the Cache API and makes every decision that involves the
policy or more than one layer: when a layer compacts and with which others, what its
attention call must score, growth, the sources and the shared stack of buffers. A
:class:`~ros2_infmllm.memory.layer.BoundedLayer` stores one layer's tokens and books them
as told; it never calls back into its cache. ``storage.py`` holds the buffers,
``compaction.py`` the one compaction, ``segments.py`` the host-side metadata runs,
``evidence.py`` the per-source evidence tally and ``scoring.py`` the attention function.

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
from typing import Any, Sequence

import torch
from transformers.cache_utils import Cache

from . import compaction, scoring
from .evidence import EvidenceTally
from .layer import BoundedLayer
from .policies import Policy
from .rope import RopeSpec, Rotation
from .scoring import ScoreRequest
from .segments import write_segments
from .storage import Buffers, Stack

_UNKNOWN_SOURCE = 0   # dense index reserved for tokens appended without begin_source
_PRUNE_MIN = 256      # live source entries before begin_source forgets evicted sources


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
        self.ring = decode_slack + 2    # queries stored per layer before a forced fold
        self.evidence = EvidenceTally()  # shared with the layers, which add to it
        layers = [BoundedLayer(i, self.pos_rows, budget, self.ring, policy.keeps_scores,
                               self.evidence) for i in range(n_layers)]
        super().__init__(layers=layers)
        self._scratch = compaction.Scratch()
        self._stack: Stack | None = None
        self.batched = True      # False: every layer compacts alone (reference path)
        self.decode_tally = False   # one-token steps add their attention to the evidence
        self._init_state()

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
        self.evidence.values = None
        self.evidence.sources = len(self.source_ids)
        self._held: dict | None = None                 # hold(): the state rewind() restores
        self._landmarks: list[tuple[int, int, int]] = []   # (lo, hi, rank), best first

    @property
    def holding(self) -> bool:
        """Whether :meth:`hold` is in force (nothing is compacted until :meth:`rewind`)."""
        return self._held is not None

    # ---- transformers Cache API ---------------------------------------------------------------
    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Position of the next token: transformers' default position ids start here."""
        if layer_idx >= len(self.layers):
            return 0
        return self.next_position(layer_idx)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int,
               *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Compact if pending, append the new tokens, maybe request scores; return all keys.

        The keys returned name their layer (``scoring.LAYER_ATTR``) when it asked the
        attention call for scores.
        """
        layer = self.layers[layer_idx]
        if not layer.is_initialized:
            self.initialize_layer(layer_idx, key_states, value_states)
        if key_states.shape[0] != 1:
            raise ValueError(f"BoundedCache supports batch size 1, got {key_states.shape[0]}")
        if layer.pending:
            self.compact_pending(layer)
        policy = self.policy
        q = key_states.shape[-2]
        if layer.q_count and (q > 1 or not self.decode_tally or layer.q_count >= self.ring):
            layer.fold_attention()      # stored queries must be the newest tokens' own
        n = layer.length
        layer.remember_undo(self.epoch)
        end = n + q
        if end > layer.capacity:
            layer.allocate(max(end, 2 * layer.capacity) if not policy.compacts
                           else end + self.slack)
        layer.append(key_states, value_states, self.current_source,
                     self.take_explicit_positions(q))
        mode = policy.score_mode
        if policy.keeps_scores:
            layer.scores[:, n:end] = 0.0
        layer.unscored = layer.unscored + 1 if q == 1 else 0   # receive_scores resets it
        layer.pending = self._pending_after(end, q)
        tally_now = self.take_score_request(layer_idx)
        tally_step = q == 1 and self.decode_tally and not tally_now
        to_policy = mode == "all" or tally_now or (
            mode == "window" and ((layer.pending and (q > 1 or not layer.scores_carried()))
                                  or (q > 1 and policy.keeps_scores)))
        if mode == "all":
            request = ScoreRequest(None)
        elif to_policy:
            request = ScoreRequest(policy.scoring_window)
        elif tally_step:
            request = ScoreRequest(1, query_only=True)
        else:
            request = None
        decay = weight = 1.0
        if request is not None and policy.keeps_scores:
            decay = policy.carry_factor(layer.arrived - layer.scored_arrival)
            weight = policy.score_weight(end)
        layer.expect_scores(request, to_policy, tally_step, tally_now, decay, weight)
        if request is not None:
            setattr(layer.keys, scoring.LAYER_ATTR, layer)    # what the attention call reads
        return layer.keys, layer.values

    def _pending_after(self, end: int, q: int) -> bool:
        """Whether a layer that holds ``end`` tokens after a ``q``-token step must compact."""
        budget = self.policy.capacity
        over = budget is not None and end > budget and not self.holding
        return over and (q > 1 or end >= budget + self.decode_slack)

    def book_replayed_step(self) -> None:
        """Book on every layer a one-token decode step that a CUDA graph replayed.

        The host side of what :meth:`update` does for a step with implicit positions, that
        compacts nothing first and asks for no window scores (``accel/cuda_graph.py``
        checks that before it replays); H2O's every-step scores were computed in the graph.
        """
        policy = self.policy
        for layer in self.layers:
            end = layer.length + 1
            layer.remember_undo(self.epoch)
            layer.book_implicit(1, self.current_source)
            layer.arrived += 1
            layer.set_length(end)
            layer.pending = self._pending_after(end, 1)
            if self.decode_tally:       # the graph added to ``att`` (H2O) or stored the query
                if policy.score_mode == "all":
                    layer.att_dirty = True
                else:
                    layer.q_count += 1
            if policy.score_mode == "all":         # scored inside the graph (every query)
                layer.scored_len = end
                layer.unscored = 0
            else:
                layer.unscored += 1

    def initialize_layer(self, layer_idx: int, key_states: torch.Tensor,
                         value_states: torch.Tensor) -> None:
        """Give layer ``layer_idx`` its buffers (a slot of the stack when it fits one).

        Device, dtype and shapes come from ``key_states`` / ``value_states`` (the first
        update's, or empty ones of the right shape when a snapshot is restored).
        """
        layer = self.layers[layer_idx]
        heads, k_dim, v_dim = key_states.shape[1], key_states.shape[-1], value_states.shape[-1]
        layer.lazy_initialization(
            key_states, value_states,
            self._stack_slot(layer_idx, (heads, k_dim, v_dim, key_states.dtype,
                                         str(key_states.device), self.initial_capacity),
                             key_states.device),
            self.initial_capacity)

    def next_position(self, layer_idx: int = 0) -> int:
        """Position id of the next token (max kept position + 1, after pending compaction)."""
        layer = self.layers[layer_idx]
        if layer.pending and self.policy.repositions:
            if self.pos_rows > 1:
                self.compact_pending(layer)   # packed M-RoPE positions depend on it
            else:
                return layer.kept_length()
        return layer.next_pos

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
                self.evidence.sources = len(self.source_ids)
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

    def reset_attention_tally(self) -> None:
        """Start a new evidence tally."""
        if self.evidence.values is not None:
            self.evidence.values.zero_()
        for layer in self.layers:
            layer.clear_attention()

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
        tally = None if self.evidence.values is None \
            else self.evidence.values[:len(self.source_ids)]
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
        self.evidence.sources = len(self.source_ids)
        if tally is not None:
            dev = next((la.key_buf.device for la in self.layers if la.key_buf is not None),
                       torch.device(device))
            self.evidence.values = torch.zeros(max(tally.numel(), 16) * 2,
                                               dtype=torch.float32, device=dev)
            self.evidence.values[:tally.numel()] = tally.to(dev)

    def fold_tally(self) -> None:
        """Fold every layer's decode attention into the tally (``fold_attention``)."""
        for layer in self.layers:
            layer.fold_attention()

    def source_attention(self) -> dict[Any, float]:
        """Attention mass per source id since the last :meth:`reset_attention_tally`.

        Sums, over layers and KV heads, the window attention of every forward scored after
        :meth:`request_scores`. Untagged tokens are left out.
        """
        if any(layer.tally_now for layer in self.layers):
            raise RuntimeError("request_scores() was called but the model's attention did not "
                               "deliver scores: call use_scoring_attention(model) first")
        self.fold_tally()
        if self.evidence.values is None:
            return {}
        vals = self.evidence.values[:len(self.source_ids)].tolist()
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
        tally = self.evidence.values[:n_src].tolist() if self.evidence.values is not None \
            else [0.0] * n_src
        for i in range(1, n_src):
            sid = self.source_ids[i]
            if sid is not None and counts[i] == 0 and tally[i] == 0 and i != self.current_source:
                del self.source_index[sid]
                self.source_meta.pop(sid, None)
                self.source_ids[i] = None
                self._free_sources.append(i)
        return {self.source_ids[i]: int(v) for i, v in enumerate(counts)
                if v > 0 and self.source_ids[i] is not None}

    def set_landmarks(self, ranges: Sequence[tuple[int, int, int]]) -> None:
        """Replace the landmarks: arrival ranges ``[lo, hi)`` with a rank (0 = most wanted).

        A policy with a ``landmarks`` share keeps their tokens: ranges are taken best rank
        first, the newest first within a rank, while their tokens fit
        :attr:`~.policies.base.Policy.landmark_tokens`; the rest compete by score like any
        token. Arrival indices are those of the cache's metadata (``kept_tokens``); a range
        already evicted costs nothing but its share. Policies without the parameter ignore
        landmarks. The caller (the engine, which knows what a chunk says) decides which
        tokens matter; this layer only keeps them.
        """
        out = []
        for row in ranges:
            lo, hi, rank = (int(v) for v in row)
            if lo < 0 or hi <= lo or rank < 0:
                raise ValueError(f"landmark {row!r}: need 0 <= lo < hi and rank >= 0")
            out.append((lo, hi, rank))
        self._landmarks = sorted(out, key=lambda r: (r[2], -r[0]))

    def landmark_ranges(self) -> list[tuple[int, int]]:
        """Return the landmark ranges the policy keeps now (merged, ascending; [] when none)."""
        room = self.policy.landmark_tokens
        chosen = []
        for lo, hi, _ in self._landmarks:
            if hi - lo <= room:
                chosen.append((lo, hi))
                room -= hi - lo
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted(chosen):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        return merged

    def _landmark_bounds(self, device: torch.device) -> torch.Tensor | None:
        """Return the kept landmark ranges as flat sorted bounds ``[lo0, hi0, ...]`` (or None)."""
        merged = self.landmark_ranges()
        if not merged:
            return None
        return torch.tensor([v for r in merged for v in r], dtype=torch.int64, device=device)

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
        self._score_layers = set()
        self._explicit_pos = None

    _CACHE_STATE = ("_score_layers", "_explicit_pos", "_explicit_top", "_explicit_left",
                    "source_ids", "source_index", "source_meta", "_free_sources", "_prune_at",
                    "current_source")

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
        cache = {k: copy.copy(getattr(self, k)) for k in self._CACHE_STATE}
        tally = self.evidence.values
        self._held = {"layers": [layer.saved_state() for layer in self.layers],
                      "cache": cache, "tally": tally.clone() if tally is not None else None}

    def rewind(self) -> None:
        """Return to the state :meth:`hold` saved: drop every token appended since."""
        held, self._held = self._held, None
        if held is None:
            raise RuntimeError("rewind() without hold()")
        for layer, state in zip(self.layers, held["layers"]):
            layer.restore_state(state)
        for k, v in held["cache"].items():
            setattr(self, k, v)
        self.evidence.values = held["tally"]
        self.evidence.sources = len(self.source_ids)

    def compact(self) -> None:
        """Run every pending compaction now (all layers together when they allow it)."""
        if self._compact_stack():
            return
        for layer in self.layers:
            if layer.pending:
                self._compact_alone(layer)

    def compact_pending(self, layer: BoundedLayer) -> None:
        """Compact ``layer`` (pending): with every other layer at once if they allow it.

        The result is the same as each layer compacting at its own next update: a layer's
        compaction depends only on its own tokens and scores, fixed since its last chunk.
        """
        if not self._compact_stack():
            self._compact_alone(layer)

    def _compact_stack(self) -> bool:
        """Compact every layer in one run over the stack; False if they are not all ready."""
        if not self._stack_ready():
            return False
        self._compact(self.layers, self._stack.buffers)
        return True

    def _compact_alone(self, layer: BoundedLayer) -> None:
        """Cut ``layer`` back to the budget now, on its own buffers."""
        layer.pending = False
        budget = self.policy.capacity
        if budget is None or layer.length <= budget:
            return
        if not self._scores_ready(layer):
            raise RuntimeError(
                f"policy {self.policy.name!r} needs attention scores but layer "
                f"{layer.layer_idx} got none for its last chunk: call "
                f"use_scoring_attention(model) before running the model with this cache")
        self._compact(layers=[layer], buffers=layer.store)

    def _compact(self, layers: list[BoundedLayer], buffers: Buffers) -> None:
        """Fold, write the metadata of, and compact ``layers`` (whose buffers are ``buffers``).

        The one path of every compaction (:func:`compaction.compact`); the layers hold the
        same number of tokens, arrivals and scored tokens.
        """
        for layer in layers:
            layer.fold_attention()
        first = layers[0]
        if all(layer.segments == first.segments for layer in layers):
            write_segments(buffers.meta, first.segments, self.pos_rows)
            for layer in layers:
                layer.segments.clear()
        else:
            for layer in layers:
                layer.flush()
        result = compaction.compact(buffers, self.policy, self.rope, self.pos_rows,
                                    first.length, first.arrived, first.scored_len,
                                    self._scratch, self._landmark_bounds(buffers.meta.device))
        for i, layer in enumerate(layers):
            layer.compacted(result, i)

    # ---- the shared stack ----------------------------------------------------------------
    def _stack_slot(self, layer_idx: int, spec: tuple, device: torch.device) -> Buffers | None:
        """Buffers for layer ``layer_idx`` as views of the shared stack, or None (own ones)."""
        if not self.policy.compacts or not self.batched:
            return None
        st = self._stack
        if st is None:
            st = self._stack = Stack(len(self.layers), spec, self.pos_rows, device)
        if st.spec != spec:
            st.refused = True
            return None
        st.members[layer_idx] = True
        return st.buffers.layer(layer_idx)

    def _stack_ready(self) -> bool:
        """Tell whether every layer is pending in the complete stack with the same state."""
        st = self._stack
        if st is None or st.refused or not self.batched:
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
                    or (need and (layer.scored_len != scored or not self._scores_ready(layer))):
                return False
        return True

    def _scores_ready(self, layer: BoundedLayer) -> bool:
        """Whether a compaction of ``layer`` now has the scores its policy needs."""
        mode = self.policy.score_mode
        if mode is None:
            return True
        if mode == "all":
            return layer.scored_len >= layer.length
        return layer.scores_carried()

    def reset(self) -> None:
        """Forget all tokens and sources; keep the buffers."""
        for layer in self.layers:
            layer.reset()
        self._init_state()

    def nbytes(self) -> int:
        """Bytes allocated by all layers (keys, values, metadata) and the compaction scratch."""
        st = self._stack
        orphans = 0 if st is None else st.slot_bytes() * sum(
            joined and not layer.in_stack for joined, layer in zip(st.members, self.layers))
        return sum(layer.nbytes() for layer in self.layers) + orphans + self._scratch.nbytes()

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
            "landmarks": {"given": len(self._landmarks),
                          "kept_tokens": sum(hi - lo for lo, hi in self.landmark_ranges())},
            "sources": {str(sid): {"stamp": m[0], "kind": m[1],
                                   "tokens_in_memory": in_memory.get(sid, 0)}
                        for sid, m in self.source_meta.items()},
        }
