"""``python -m ros2_infmllm.eval.pixels``: the bags' "pixels" column (frames as visual tokens).

The questions of a bag's question file tagged ``pixels`` (colours and places of boxes
named by their frames' time of day) and its light questions (what visual tokens can
show; marker ids and QR text they cannot) are answered by
``model: lite0-qwen2.5-0.5b`` from visual tokens alone (no perception line, no memory
log), replayed offline at the demo's frame rate, by inf_mllm, streaming_llm and the full
cache (the oracle) at the demo's budget. The memory view after each question is saved
for inf_mllm (which frames' visual tokens survive).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from ros2_infmllm.eval.bagio import bag_start
from ros2_infmllm.eval.questions import load_questions, questions_path
from ros2_infmllm.eval.replay import pick_topics, run_offline

POLICIES = ("inf_mllm", "streaming_llm", "full")
#: a light question (these candidates) is one pixels can answer too
LIGHTS = ("dark", "dim", "normal", "bright")
MODEL = "lite0-qwen2.5-0.5b"


class MemoryViews:
    """The session, plus what its memory keeps after each answer (frames and their tokens).

    Why: the memory view says which frames' visual tokens survive; run_offline only
    calls ``ask``, so this records the view there.
    """

    def __init__(self, session, start: float) -> None:
        """Wrap ``session``; frame times are reported in seconds from ``start``."""
        self.session = session
        self.start = start
        self.views: list = []

    def __getattr__(self, name: str):
        """Everything else is the session's."""
        return getattr(self.session, name)

    def ask(self, question: str, **kw):
        """Ask, then record the frames in memory as (bag s, tokens kept)."""
        answer = self.session.ask(question, **kw)
        view = self.session.memory_map()
        counts = Counter(s for _, s, kind in view["tokens"] if kind == "frame")
        frames = sorted((round(meta[0] - self.start, 1), counts[sid])
                        for sid, meta in view["frames"].items())
        self.views.append({"question": question, "frames": frames})
        return answer


def run_bag(bag: Path, scene: str, budget: int, frame_rate: float, out: Path,
            device: str = "cpu") -> dict:
    """Replay ``bag`` once per policy on its ``pixels`` questions; records and scores."""
    from ros2_infmllm.engine import build_session
    from ros2_infmllm.eval.common import build_policy, session_config_for
    questions = [q for q in load_questions(questions_path(scene))
                 if "pixels" in q.tags or sorted(q.candidates) == sorted(LIGHTS)]
    if not questions:
        raise ValueError(f"{scene}: no question tagged 'pixels'")
    topics = pick_topics(bag, questions)
    result = {"bag": scene, "budget": budget, "frame_rate": frame_rate, "model": MODEL,
              "policies": {}}
    for policy in POLICIES:
        config = session_config_for(build_policy(policy, budget, {}), model=MODEL,
                                    device=device, memory_log=False)
        session = MemoryViews(build_session(config), bag_start(bag))
        timeline = out / f"pixels_{scene}_timeline" if policy == "inf_mllm" else None
        if timeline is not None:
            timeline.mkdir(parents=True, exist_ok=True)
        run = run_offline(session, bag, questions, topics, frame_rate, max_new_tokens=16,
                          progress=False, timeline=timeline)
        recs = run["records"]
        far = [r for r in recs if "far" in r.get("tags", [])]
        result["policies"][policy] = {
            "correct": sum(r["correct"] for r in recs), "n": len(recs),
            "far_correct": sum(r["correct"] for r in far), "far_n": len(far),
            "ingest_p95_s": run["stats"]["ingest_p95_s"],
            "answers": {r["id"]: [r["answer"], r["correct"]] for r in recs},
            "memory_after": session.views}
    return result


def table(results: list) -> str:
    """Markdown: one row per bag, correct (far) per policy."""
    lines = ["| bag | inf_mllm | streaming_llm | full cache (oracle) |", "|---|---|---|---|"]
    for r in results:
        cells = [f"{p['correct']}/{p['n']} (far {p['far_correct']}/{p['far_n']})"
                 for p in (r["policies"][k] for k in POLICIES)]
        lines.append(f"| {r['bag']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the pixels column on the given bags; write JSON and print the table."""
    ap = argparse.ArgumentParser(prog="python -m ros2_infmllm.eval.pixels",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--bags", nargs="+", help="SCENE:BAG_DIR pairs",
                    default=["sample:data/sample_bag", "heldout:data/heldout_bag"])
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--frame-rate", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="results/pixels")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for pair in args.bags:
        scene, bag = pair.split(":", 1)
        results.append(run_bag(Path(bag), scene, args.budget, args.frame_rate, out,
                               args.device))
        (out / "pixels.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
