"""``python -m ros2_infmllm.train.evaluate``: per-frame accuracy from pixels, by question kind.

Through the product's own path: ``model: lite0-qwen2.5-0.5b`` in a streaming session
(full cache), one held-out rendered frame ingested as visual tokens (no perception line),
then each of its questions asked (the memory is rewound after each answer). Held-out
frames come from the seed stream training never draws (``data.HELDOUT``). An answer
that names another candidate of its kind besides the right one is wrong.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..models.visual_tokens import NAME, load_projector
from .__main__ import correct
from .data import CAMERAS, HELDOUT, scene, slot_words
from .scenes import questions


class WordTokens(torch.nn.Module):
    """The ceiling diagnostic's projector: the exact embeddings of the truth's slot words.

    Why: it tells whether the slot and prompt design (what the frozen LM makes of perfect
    tokens) or the projector limits the accuracy.
    """

    def __init__(self, table: torch.Tensor, ids: list) -> None:
        """Hold the rows ``ids`` of the LM's embedding ``table``, one per slot."""
        super().__init__()
        self.rows = table[ids].detach().float().clone()

    def forward(self, cells: torch.Tensor) -> torch.Tensor:
        """Return the same words for any frame: ``[n, slots, hidden]``."""
        return self.rows.unsqueeze(0).expand(cells.shape[0], -1, -1)


def evaluate(session, n_frames: int, seed: int = 0, progress: bool = True,
             ceiling: bool = False) -> dict:
    """Ask every question of ``n_frames`` held-out frames; accuracy by kind + examples.

    ``ceiling``: the slots get the exact embeddings of the truth's words instead of the
    projector's output (the adapter's projector is put back after).
    """
    from tqdm import tqdm
    adapter = session.adapter
    projector = adapter.projector
    rng = np.random.default_rng([seed, 39])
    table: dict = {}
    shown, latencies = [], []
    frames = tqdm(range(n_frames), desc="held-out frames", disable=not progress)
    for i in frames:
        truth, rgb, _ = scene(HELDOUT, i)
        session.reset()
        cam = str(rng.choice(CAMERAS))
        if ceiling:
            ids = [adapter.tokenizer(w, add_special_tokens=False)["input_ids"][0]
                   for w in slot_words(truth)]
            adapter.projector = WordTokens(adapter.model.get_input_embeddings().weight, ids)
        t0 = time.perf_counter()
        session.ingest_frame(rgb, 1_700_000_000.0 + 10.0 * i, cam)
        latencies.append(time.perf_counter() - t0)
        for kind, q, expected in questions(truth, rng):
            if kind == "caption":
                continue
            answer = session.ask(q, max_new_tokens=16).text
            ok = correct(answer, expected, kind)
            n, k = table.get(kind, (0, 0))
            table[kind] = (n + 1, k + int(ok))
            if len(shown) < 30:
                shown.append({"frame": i, "q": q, "expected": expected, "answer": answer,
                              "ok": ok})
    adapter.projector = projector
    return {"by_kind": {k: {"n": n, "accuracy": round(c / n, 4)}
                        for k, (n, c) in sorted(table.items())},
            "ingest_ms_p50": round(1000 * float(np.percentile(latencies, 50)), 1),
            "ingest_ms_p95": round(1000 * float(np.percentile(latencies, 95)), 1),
            "examples": shown}


def evaluate_real(session, progress: bool = True) -> dict:
    """Ask labelled real images (eval/eyes_labels.yaml) what they show; is a label named.

    The question is open ("What do you see?"); a label named in the answer counts (the
    eyes test's own rule, whole words). None of these images was used in training.
    """
    from tqdm import tqdm

    from ..eval.eyes import load_items, read_image
    from ..eval.real_imagery import ImageryMissing, find_root
    try:
        root = find_root()
    except ImageryMissing as exc:
        return {"skipped": str(exc)}
    table: dict = {}
    shown = []
    for item in tqdm(load_items(), desc="real images", disable=not progress):
        session.reset()
        session.ingest_frame(read_image(root, item.path), 1_700_000_000.0, "camera")
        answer = session.ask("What do you see in the frame?", max_new_tokens=16).text
        words = set("".join(c if c.isalnum() else " " for c in answer.lower()).split())
        named = [lb for lb in item.labels if set(lb.lower().split()) <= words]
        n, k = table.get(item.split, (0, 0))
        table[item.split] = (n + 1, k + int(bool(named)))
        shown.append({"path": item.path, "labels": item.labels, "answer": answer})
    return {"named_a_label": {k: {"n": n, "rate": round(c / n, 4)}
                              for k, (n, c) in sorted(table.items())}, "answers": shown}


def plot_losses(losses: Path, png: Path) -> Path:
    """Draw the training run's loss curves (``loss.json``: stage 1 and stage 2) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    data = json.loads(Path(losses).read_text())
    stage1 = "stage 1: word cross-entropy (training batches)"
    stages = [(k, v) for k, v in ((stage1, data.get("align", [])),
                                  ("stage 2: LM loss", data.get("lm", []))) if v]
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.2), squeeze=False)
    for ax, (title, values) in zip(axes[0], stages):
        ax.plot(values, lw=0.6, color="0.6")
        k = max(1, len(values) // 50)
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax.plot(np.arange(len(smooth)) + k - 1, smooth, color="C0")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    return png


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Evaluate the shipped model on held-out rendered frames; print and write JSON."""
    ap = argparse.ArgumentParser(prog="python -m ros2_infmllm.train.evaluate",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", default="results/visual_tokens/heldout_eval.json")
    ap.add_argument("--real", action="store_true", help="also the labelled real images")
    ap.add_argument("--ceiling", action="store_true",
                    help="also the diagnostic: the truth's exact word embeddings in the slots")
    ap.add_argument("--text", default=None,
                    help="diagnostic: JSON list replacing the words around the tokens (TEXT)")
    ap.add_argument("--skip-trained", action="store_true",
                    help="with --ceiling: only the ceiling")
    ap.add_argument("--projector", default=None,
                    help="a trained projector file instead of the shipped one (no checksum)")
    ap.add_argument("--plot-loss", nargs=2, metavar=("LOSS_JSON", "PNG"), default=None,
                    help="only draw a training run's loss curves")
    args = ap.parse_args(argv)
    if args.plot_loss:
        print(plot_losses(Path(args.plot_loss[0]), Path(args.plot_loss[1])))
        return 0
    from ..engine import SessionConfig, build_session
    t0 = time.perf_counter()
    # pixels only: no memory log (text about the frames) and no earlier turns (each
    # question is asked of the frame alone)
    session = build_session(SessionConfig(model=NAME, device=args.device, dtype=args.dtype,
                                          policy="full", budget=4096, memory_log=False,
                                          multi_round=False))
    load_s = time.perf_counter() - t0
    if args.projector:
        session.adapter.projector = load_projector(Path(args.projector), None)[0]
    if args.text:
        session.adapter.set_wording(json.loads(args.text))
    result = {} if args.skip_trained and args.ceiling else evaluate(session, args.frames)
    if args.ceiling:
        result["ceiling"] = evaluate(session, args.frames, ceiling=True)
    if args.real:
        result["real_images"] = evaluate_real(session)
    result.update(model=NAME, frames=args.frames, load_s=round(load_s, 2),
                  device=args.device, projector=args.projector or "shipped",
                  text=json.loads(args.text) if args.text else None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k not in ("examples", "ceiling")},
                     indent=1))
    if args.ceiling:
        print("ceiling:", json.dumps(result["ceiling"]["by_kind"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
