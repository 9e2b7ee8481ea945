"""Qwen2-VL's vision tower in one CUDA graph for the adapter's fixed frame shape.

Why: every frame has the same side (``Qwen2VLAdapter.frame_side``), so the tower runs the
same shapes each time, yet the class's forward launches about a thousand small kernels
from Python and syncs with the host once per block (its SDPA path splits attention by
``cu_seqlens.tolist()``). On the H200 the 2B-shape frame ingest was host-bound: about
68 ms of host time for 15 ms of GPU work (issue 20's profile). One frame is one image of
one temporal patch, so attention spans all its patches and needs no splitting:
:func:`tower_forward` runs the tower's own modules block by block with one SDPA call each,
and :class:`VisionGraph` captures that once and replays it per frame.

Only the Qwen2-VL tower layout is taken (Qwen2.5-VL's windowed attention is not):
:func:`vision_graph_unavailable` says why not for anything else.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F

from .cuda_graph import no_collection

#: the tower class whose block layout :func:`tower_forward` reproduces
SUPPORTED_TOWER = "Qwen2VisionTransformerPretrainedModel"


def vision_tower(adapter: Any) -> Any:
    """Return the adapter model's vision tower (``model.model.visual``), or None."""
    inner = getattr(adapter.model, "model", None)
    return getattr(inner, "visual", None)


def vision_graph_unavailable(adapter: Any) -> Optional[str]:
    """Why the frames of ``adapter`` cannot take the graph-captured tower, or None."""
    if not hasattr(adapter, "image_encoder") or not hasattr(adapter, "frame_grid"):
        return "the adapter has no fixed-shape image encoder seam"
    tower = vision_tower(adapter)
    if tower is None:
        return "the model has no vision tower"
    if type(tower).__name__ != SUPPORTED_TOWER:
        return f"vision tower {type(tower).__name__} is not {SUPPORTED_TOWER}"
    dev = next(tower.parameters()).device
    if dev.type != "cuda":
        return f"the vision tower is on {dev}: CUDA graphs need a CUDA device"
    return None


def rotary_tables(tower: Any, grid_thw: tuple[int, int, int], device: torch.device
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the tower's rotary ``cos, sin`` for one image of ``grid_thw`` as its forward does."""
    from transformers.vision_utils import get_vision_position_ids
    grid = torch.tensor([grid_thw], dtype=torch.long, device=device)
    pos = get_vision_position_ids(grid, tower.spatial_merge_size, kwargs={})
    probe = torch.empty(1, device=device)
    return tower.rotary_pos_emb(probe, pos)


def _attention(attn: Any, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
               ) -> torch.Tensor:
    """One block's self-attention over all of ``h`` ``[n, dim]`` (one image, one segment)."""
    from transformers.models.qwen2_vl.modeling_qwen2_vl import apply_rotary_pos_emb_vision
    n = h.shape[0]
    q, k, v = attn.qkv(h).reshape(n, 3, attn.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
    out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1),
                                         v.transpose(0, 1), scale=attn.scaling)
    return attn.proj(out.transpose(0, 1).reshape(n, -1))


def tower_forward(tower: Any, pixels: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
                  ) -> torch.Tensor:
    """Return the merged image features ``[n / merge^2, hidden]`` of one image's ``pixels``.

    The same modules in the same order as the tower's forward, without the host syncs:
    patch embedding, each block (pre-norm attention and MLP), the patch merger.
    """
    x = tower.patch_embed(pixels)
    for blk in tower.blocks:
        x = x + _attention(blk.attn, blk.norm1(x), cos, sin)
        x = x + blk.mlp(blk.norm2(x))
    return tower.merger(x)


class VisionGraph:
    """The tower for one frame shape, captured once, replayed per frame.

    Parameters
    ----------
    tower : nn.Module
        A Qwen2-VL vision tower on a CUDA device.
    grid_thw : tuple of int
        The frame's patch grid ``(1, h, w)``.
    patch_dim : int
        Length of one flattened patch (``pixel_values`` columns).
    """

    def __init__(self, tower: Any, grid_thw: tuple[int, int, int], patch_dim: int):
        """Build the rotary tables and capture (after two warm-up runs on a side stream)."""
        if grid_thw[0] != 1:
            raise ValueError(f"one still frame has one temporal patch, got grid {grid_thw}")
        p = next(tower.parameters())
        self.shape = (grid_thw[1] * grid_thw[2], patch_dim)
        self.replays = 0
        with torch.no_grad():
            self._cos, self._sin = rotary_tables(tower, grid_thw, p.device)
            self._pixels = torch.zeros(self.shape, dtype=p.dtype, device=p.device)
            side = torch.cuda.Stream(p.device)
            side.wait_stream(torch.cuda.current_stream(p.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    tower_forward(tower, self._pixels, self._cos, self._sin)
            torch.cuda.current_stream(p.device).wait_stream(side)
            self._graph = torch.cuda.CUDAGraph()
            with no_collection(), torch.cuda.graph(self._graph):
                self._out = tower_forward(tower, self._pixels, self._cos, self._sin)
        torch.cuda.synchronize(p.device)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image features of ``pixels`` (the captured shape); a copy the next frame keeps."""
        if tuple(pixels.shape) != self.shape:
            raise ValueError(f"pixel_values {tuple(pixels.shape)} are not the captured "
                             f"frame shape {self.shape}")
        self._pixels.copy_(pixels)
        self._graph.replay()
        self.replays += 1
        return self._out.clone()


def install_vision_graph(adapter: Any) -> Optional[VisionGraph]:
    """Give ``adapter`` the graph-captured tower (once per adapter); None if unavailable."""
    if vision_graph_unavailable(adapter) is not None:
        return None
    if isinstance(adapter.image_encoder, VisionGraph):
        return adapter.image_encoder
    graph = VisionGraph(vision_tower(adapter), adapter.frame_grid,
                        adapter.preprocess.patch_dim)
    adapter.image_encoder = graph
    return graph
