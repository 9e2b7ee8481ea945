"""The eyes test: whether the perception parts name what a person names in real frames.

Each image of ``data/eyes_labels.yaml`` (real photographs and video frames from Debian
packages, labelled by looking at them) goes through the frame describer's parts as a
camera frame (working copy at ``image_max_side``, the camera's frame for QR and text).
Reported per split (``tune`` / ``heldout``) and together:

- images named: share of images whose observations name at least one of their labels;
- labels named: share of all labels that some observation names;
- precision per part: share of a part's observations that name one of the image's labels
  (a wrong noun, person or word counts against the part that gave it).

An object noun or a colour names a label when they are the same word (plural ``s`` and
``person``/``people`` alike); text read in the scene names a label when one contains the
other (case, spaces and punctuation ignored: ``EBY-58-4`` names ``EBY-584``) or when they
share a word of four letters or more (a line read from a page names the page's words).

Usage: ``python -m ros2_infmllm.eval.eyes [--split heldout] [--fast] [--verbose]``.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np
import yaml

from ros2_infmllm.models.images import downscale
from ros2_infmllm.perception.composer import DEFAULT_PARTS, Composer, build_parts
from ros2_infmllm.perception.part import Observation

#: labels with the same meaning (an observation naming one names the others)
SYNONYMS = {"people": "person", "balls": "ball", "sweets": "ball"}
#: images of the fast subset a CI test runs (both splits, every part's kind of scene)
FAST = ("2011_000025.jpg", "2011_000006.jpg", "00000100.jpg", "0001.jpg", "messi5.jpg",
        "butterfly.jpg", "scenetext01.jpg", "scenetext_word01.jpg", "squirrel_cls.jpg",
        "vtest.avi#400")


@dataclass
class Item:
    """One labelled image."""

    path: str
    labels: list[str]
    split: str


@dataclass
class Result:
    """What the parts said about one image, and what of it was right."""

    item: Item
    observations: list[Observation]
    right: list[bool]
    named: list[str] = field(default_factory=list)
    seconds: float = 0.0


def labels_path() -> Path:
    """Return the bundled label file."""
    return Path(str(resources.files("ros2_infmllm.eval") / "data" / "eyes_labels.yaml"))


def load_items(path: Optional[Path] = None) -> list[Item]:
    """Return the labelled images of ``path`` (default: the bundled file)."""
    doc = yaml.safe_load((path or labels_path()).read_text())
    return [Item(str(e["path"]), [str(x) for x in e["labels"]], str(e["split"]))
            for e in doc["images"]]


def read_image(root: Path, path: str) -> np.ndarray:
    """RGB uint8 of an image file, or of frame N of a video (``FILE#N``)."""
    file, _, frame = path.partition("#")
    full = root / file
    if frame:
        cap = cv2.VideoCapture(str(full))
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(frame))
        ok, bgr = cap.read()
        cap.release()
        if not ok:
            raise FileNotFoundError(f"cannot read frame {frame} of {full}")
    else:
        bgr = cv2.imread(str(full), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {full}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _word(text: str) -> str:
    w = text.lower().strip()
    w = SYNONYMS.get(w, w)
    return w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w


def names(obs: Observation) -> list[str]:
    """Return the words an observation names, as compared with labels."""
    if obs.part == "text":
        return [obs.label[len("text '"):-1]]
    if obs.part in ("faces", "people"):
        return ["person"]
    if obs.part == "colours":
        return [obs.label.split()[0]]
    return [obs.label]


def matches(obs: Observation, label: str) -> bool:
    """Whether ``obs`` names ``label`` (see the module docstring)."""
    for said in names(obs):
        if obs.part in ("text", "qr"):
            a, b = _squash(said), _squash(label)
            if len(a) >= 3 and len(b) >= 3 and (a in b or b in a) or \
                    _words(said) & _words(label):
                return True
        elif _word(said) == _word(label):
            return True
    return False


def _squash(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "", text.lower())


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^0-9a-z]+", text.lower()) if len(w) >= 4}


def judge(item: Item, observations: list[Observation]) -> Result:
    """Which observations are right, and which labels they name."""
    right = [any(matches(o, lab) for lab in item.labels) for o in observations]
    named = [lab for lab in item.labels if any(matches(o, lab) for o in observations)]
    return Result(item, observations, right, named)


def run(items: Sequence[Item], root: Path, composer: Composer,
        image_max_side: int = 384) -> list[Result]:
    """Each image through the composer's parts as a fresh camera (no schedule carry-over)."""
    out = []
    for k, item in enumerate(items):
        full = read_image(root, item.path)
        t0 = time.perf_counter()
        desc = composer.analyse(downscale(full, image_max_side), f"eyes{k}", full)
        result = judge(item, desc.items)
        result.seconds = time.perf_counter() - t0
        out.append(result)
    return out


def summary(results: Sequence[Result]) -> dict:
    """Images named, labels named, precision per part and overall."""
    per_part: dict[str, list[int]] = {}
    for r in results:
        for o, ok in zip(r.observations, r.right):
            per_part.setdefault(o.part, [0, 0])
            per_part[o.part][0] += int(ok)
            per_part[o.part][1] += 1
    said = sum(n for _, n in per_part.values())
    return {"images": len(results),
            "images_named": sum(bool(r.named) for r in results) / max(1, len(results)),
            "labels": sum(len(r.item.labels) for r in results),
            "labels_named": sum(len(r.named) for r in results)
            / max(1, sum(len(r.item.labels) for r in results)),
            "precision": sum(k for k, _ in per_part.values()) / said if said else 1.0,
            "observations": said,
            "per_part": {p: {"right": k, "said": n, "precision": k / n}
                         for p, (k, n) in sorted(per_part.items())}}


def table(rows: dict[str, dict]) -> str:
    """Markdown table of summaries by split."""
    parts = sorted({p for s in rows.values() for p in s["per_part"]})
    head = ("| split | images | named | labels | labels named | precision | "
            + " | ".join(f"{p} (right/said)" for p in parts) + " |")
    lines = [head, "|" + "---|" * (6 + len(parts))]
    for name, s in rows.items():
        cells = [f"{s['per_part'][p]['right']}/{s['per_part'][p]['said']}"
                 if p in s["per_part"] else "-" for p in parts]
        lines.append(f"| {name} | {s['images']} | {s['images_named']:.0%} | {s['labels']} | "
                     f"{s['labels_named']:.0%} | {s['precision']:.2f} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the eyes test and print its table (and each image's line with --verbose)."""
    from ros2_infmllm.eval.real_imagery import install_for_cli
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", choices=["tune", "heldout", "all"], default="all")
    ap.add_argument("--fast", action="store_true", help="the CI subset only")
    ap.add_argument("--parts", default=",".join(DEFAULT_PARTS))
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    root = install_for_cli()
    if root is None:
        return 2
    items = load_items()
    if args.fast:
        items = [i for i in items if i.path.rsplit("/", 1)[-1] in FAST]
    if args.split != "all":
        items = [i for i in items if i.split == args.split]
    composer = Composer(build_parts(args.parts.split(",")), report_unchanged=False)
    results = run(items, root, composer)
    if args.verbose:
        for r in results:
            said = ", ".join(f"{o.label}{'' if ok else ' (WRONG)'}"
                             for o, ok in zip(r.observations, r.right))
            print(f"{'+' if r.named else '-'} {r.item.path.rsplit('/', 1)[-1]}: "
                  f"{said or 'nothing'}  | named {r.named} of {r.item.labels}")
    rows = {s: summary([r for r in results if r.item.split == s])
            for s in ("tune", "heldout") if any(r.item.split == s for r in results)}
    rows["all"] = summary(results)
    print(table(rows))
    cost = composer.costs()
    print("part cost per run (ms, mean / max): " + ", ".join(
        f"{p} {c['mean_s'] * 1e3:.0f} / {c['max_s'] * 1e3:.0f}" for p, c in cost.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
