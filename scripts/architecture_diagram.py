#!/usr/bin/env python3
"""Draw docs/architecture_flow.png: how a frame and a question flow through the package.

    python scripts/architecture_diagram.py                 # writes docs/architecture_flow.png
    python scripts/architecture_diagram.py --out /tmp/flow.png

One picture for docs/architecture.md (frame -> describe/encode -> chunk -> cache + policy
-> answer), drawn from the table below so the boxes name the modules that do each step.
The same flow is in that file as a text diagram; change both together.
"""

from __future__ import annotations

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: package group -> box colour (the legend of the picture)
GROUPS = {
    "ROS side (ros/node.py, ros/imaging.py)": "#cfe2f3",
    "engine/": "#fce5cd",
    "models/": "#d9ead3",
    "memory/": "#ead1dc",
    "accel/": "#fff2cc",
}

#: name -> (x, y, group, text): box centres in axes units (0..1), the flow's steps
BOXES = {
    "camera": (0.20, 0.93, "ROS side (ros/node.py, ros/imaging.py)",
               "camera topics: Image / CompressedImage\n"
               "node.py checks stamps, hands frames to the runner"),
    "worker": (0.20, 0.79, "engine/",
               "engine/runner.py: newest frame per camera; its worker\n"
               "feeds one every 1/frame_rate s (imaging.py decodes)"),
    "ingest": (0.20, 0.65, "engine/", "StreamingSession.ingest_frame(image, stamp, camera)"),
    "frame": (0.20, 0.51, "models/",
              "adapter.frame_chunk: describe (text LM:\n"
              "FrameDescriber line) or encode (VLM: vision tokens)"),
    "query": (0.80, 0.93, "ROS side (ros/node.py, ros/imaging.py)",
              "~/query service, ~/ask action\nnode.py -> runner: question queue, same worker"),
    "ask": (0.80, 0.65, "engine/", "StreamingSession.ask(question, camera)"),
    "text": (0.80, 0.51, "models/", "adapter.text_chunk(question, 'user')\n+ answer_prefix()"),
    "chunk": (0.45, 0.38, "models/", "Chunk: token ids + source (stamp, camera, kind)"),
    "forward": (0.45, 0.245, "memory/",
                "adapter.forward(chunk, cache): prefill against the cache\n"
                "(CUDA: accel/chunk_graph.py, captured pieces per layer)\n"
                "scoring.py: last `window` queries -> score per cached token"),
    "cache": (0.30, 0.08, "memory/",
              "BoundedCache + policy: over budget keep\n"
              "n_sink + n_recent + top-k relevant (pooled,\n"
              "age-biased scores); keys re-positioned 0..n-1"),
    "decode": (0.80, 0.08, "accel/",
               "decode steps, one token each against the\n"
               "cache: accel/fast_decode.py (CUDA graphs | eager)\n"
               "-> Answer(text, evidence stamps)"),
    "answer": (0.80, 0.245, "ROS side (ros/node.py, ros/imaging.py)",
               "node.py: ~/answers, query response,\naction feedback (tokens as they come)"),
}

#: (from box, side, to box, side, label): the arrows, each from one box edge to another
ARROWS = [
    ("camera", "bottom", "worker", "top", ""), ("worker", "bottom", "ingest", "top", ""),
    ("ingest", "bottom", "frame", "top", ""), ("frame", "bottom", "chunk", "left", "frame"),
    ("query", "bottom", "ask", "top", ""), ("ask", "bottom", "text", "top", ""),
    ("text", "bottom", "chunk", "right", "question"),
    ("chunk", "bottom", "forward", "top", ""), ("forward", "bottom", "cache", "top", ""),
    ("cache", "right", "decode", "left", "after a question"),
    ("decode", "top", "answer", "bottom", ""),
]


def _edge(box, side: str) -> tuple[float, float]:
    """Midpoint of one side of a drawn box, in axes units."""
    x0, y0, x1, y1 = box
    return {"top": ((x0 + x1) / 2, y1), "bottom": ((x0 + x1) / 2, y0),
            "left": (x0, (y0 + y1) / 2), "right": (x1, (y0 + y1) / 2)}[side]


def draw(out: Path) -> None:
    """Render the boxes and arrows above into ``out`` (PNG, 150 dpi)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(13, 8.5))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    texts = {name: ax.text(x, y, text, ha="center", va="center", fontsize=9.5,
                           family="monospace",
                           bbox=dict(boxstyle="round,pad=0.5", fc=GROUPS[group], ec="#555555"))
             for name, (x, y, group, text) in BOXES.items()}
    ax.legend(handles=[Patch(fc=c, ec="#555555", label=g) for g, c in GROUPS.items()],
              loc="center", bbox_to_anchor=(0.5, 0.78), fontsize=9, title="package")
    ax.set_title("ros2_infmllm: frame -> describe/encode -> chunk -> cache + policy -> answer",
                 fontsize=12)
    fig.tight_layout()
    fig.canvas.draw()                                 # box sizes are known after a draw
    to_axes = ax.transAxes.inverted()
    boxes = {}
    for name, t in texts.items():
        (x0, y0), (x1, y1) = to_axes.transform(t.get_bbox_patch().get_window_extent())
        boxes[name] = (x0, y0, x1, y1)
    for a, side_a, b, side_b, label in ARROWS:
        start, end = _edge(boxes[a], side_a), _edge(boxes[b], side_b)
        ax.annotate("", xy=end, xytext=start,
                    arrowprops=dict(arrowstyle="->", color="#333333", lw=1.4))
        if label:
            ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.012, label,
                    ha="center", fontsize=9, style="italic", color="#333333")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150)
    plt.close(fig)


def main() -> int:
    """Parse ``--out`` and draw the picture."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "architecture_flow.png")
    draw(ap.parse_args().out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
