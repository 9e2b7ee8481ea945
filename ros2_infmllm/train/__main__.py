"""``python -m ros2_infmllm.train``: train the visual-token projector (LLaVA-1.5 recipe).

The vision tower (EfficientNet-Lite0) and the language model (the default Qwen2.5 GGUF)
stay frozen; only the 2-layer MLP projector learns, from rendered scenes (scenes.py,
data.py). Steps: render the frames and compute the tower's cell features once; set the
projector's input standardisation from them; stage 1 (``--align-steps``, no LM forward,
cheap on a CPU): each visual token is pulled to the LM's embedding of the word for what
its part of the frame shows (a column's box colour, `` marker``, `` QR`` or `` empty``;
the frame's light); stage 2 (``--steps``, a GPU's work): the LM's loss on the answers to
the scenes' questions, through the frozen LM; then the held-out questions are answered
greedily and scored by kind; the projector (safetensors), its sha256, the loss curves
and the scores are written. docs/visual_tokens.md gives the recipe used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from ..models.visual_tokens import (COUNT_SLOT, FEATURES, LM_NAME, NAME, SLOTS, TEXT,
                                    TOKEN_INPUT, Projector, save_projector, token_inputs)
from .data import COUNT_WORDS, SLOT_VOCAB, WORDS, Encoder, build, slot_words
from .scenes import CANDIDATES, COLOURS


def load_lm(gguf: Optional[str], device: str, dtype: torch.dtype):
    """Load the frozen LM and its tokenizer: a given GGUF file, else the packaged default."""
    from ..models.gguf_cache import load_gguf
    from ..models.registry import weights_path
    path = Path(gguf) if gguf else weights_path(LM_NAME)
    model, tok = load_gguf(path, device, dtype)
    return model.eval().requires_grad_(False), tok, path


def collate(enc: Encoder, batch: list, feats: torch.Tensor, device: str,
            with_answer: bool = True) -> dict:
    """Left-padded ids, mask, positions, labels and the cell features in slot order."""
    seqs, labels = [], []
    for ex in batch:
        p = enc.prompt(ex)
        a = enc.answer(ex) if with_answer else []
        seqs.append(p + a)
        labels.append([-100] * len(p) + a)
    n = max(len(s) for s in seqs)
    pad = enc.end
    ids = torch.full((len(seqs), n), pad, dtype=torch.long)
    lab = torch.full((len(seqs), n), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, (s, lb) in enumerate(zip(seqs, labels)):
        ids[i, n - len(s):] = torch.tensor(s)
        lab[i, n - len(s):] = torch.tensor(lb)
        mask[i, n - len(s):] = 1
    rows = torch.tensor([r for ex in batch for r in ex.frames])
    return {"ids": ids.to(device), "labels": lab.to(device), "mask": mask.to(device),
            "slots": (ids == enc.pad).to(device), "cells": feats[rows].to(device)}


def hidden(lm, projector: Projector, b: dict, dtype: torch.dtype) -> torch.Tensor:
    """Return the LM's last hidden states with the projected cells in the slots."""
    x = lm.get_input_embeddings()(b["ids"]).clone()
    proj = projector(b["cells"])
    x[b["slots"]] = proj.reshape(-1, proj.shape[-1]).to(dtype)
    pos = (b["mask"].cumsum(-1) - 1).clamp_min(0)
    return lm.model(inputs_embeds=x, attention_mask=b["mask"], position_ids=pos).last_hidden_state


def loss_of(lm, projector: Projector, b: dict, dtype: torch.dtype) -> torch.Tensor:
    """Cross-entropy of the answer tokens (the LM head runs on those rows only)."""
    h = hidden(lm, projector, b, dtype)[:, :-1]
    lab = b["labels"][:, 1:]
    sel = lab != -100
    logits = lm.lm_head(h[sel]).float()
    return torch.nn.functional.cross_entropy(logits, lab[sel])


def correct(answer: str, expected: str, kind: str) -> bool:
    """Right when the answer names the expected value and no other candidate of its kind."""
    base = kind.replace("timed_", "")
    text = " " + "".join(c if c.isalnum() else " " for c in answer.lower()) + " "
    cands = {"marker": {"ArUco marker": "aruco", "QR code": "qr", "neither": "neither"}}
    want = cands.get(base, {}).get(expected, expected).lower()
    named = {c for c in CANDIDATES.get(base, ()) if f" {c.lower()} " in text}
    if base == "count":
        words = {"zero": "0", "one": "1", "two": "2", "three": "3", "no": "0"}
        named |= {d for w, d in words.items() if f" {w} " in text}
    return named == {want}


@torch.no_grad()
def answer_all(lm, tok, enc: Encoder, projector: Projector, examples: list,
               feats: torch.Tensor, device: str, dtype: torch.dtype, batch: int = 64,
               max_new: int = 6) -> list:
    """Greedy answers (no cache: a few tokens each) of every example."""
    out = []
    for i in range(0, len(examples), batch):
        chunk = examples[i:i + batch]
        b = collate(enc, chunk, feats, device, with_answer=False)
        done = torch.zeros(len(chunk), dtype=torch.bool, device=device)
        gen = []
        for _ in range(max_new):
            h = hidden(lm, projector, b, dtype)[:, -1]
            nxt = lm.lm_head(h).argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, enc.end), nxt)
            gen.append(nxt)
            done |= nxt == enc.end
            b["ids"] = torch.cat([b["ids"], nxt[:, None]], 1)
            b["mask"] = torch.cat([b["mask"], torch.ones_like(nxt)[:, None]], 1)
            b["slots"] = torch.cat([b["slots"], torch.zeros_like(done)[:, None]], 1)
            if bool(done.all()):
                break
        ids = torch.stack(gen, 1).tolist()
        for row in ids:
            row = row[:row.index(enc.end)] if enc.end in row else row
            out.append(tok.decode(row, skip_special_tokens=True).strip())
    return out


def score(examples: list, answers: list) -> dict:
    """Accuracy by question kind (captions are not scored)."""
    table: dict = {}
    for ex, a in zip(examples, answers):
        if ex.kind == "caption":
            continue
        right = correct(a, ex.answer, ex.kind)
        n, k = table.get(ex.kind, (0, 0))
        table[ex.kind] = (n + 1, k + int(right))
    return {k: {"n": n, "accuracy": round(c / n, 4)} for k, (n, c) in sorted(table.items())}


def make_projector(table_e: torch.Tensor, tok, hidden_size: int) -> Projector:
    """Build an untrained projector whose vocabulary is ``WORDS`` (the LM's own rows)."""
    ids = [tok(w, add_special_tokens=False)["input_ids"] for w in WORDS]
    if any(len(i) != 1 for i in ids):
        raise ValueError(f"the projector's words must be one token each: "
                         f"{dict(zip(WORDS, ids))}")
    emb = table_e[[i[0] for i in ids]].detach().float().cpu()
    allowed = torch.tensor([[float(w in vocab) for w in WORDS] for vocab in SLOT_VOCAB])
    box = torch.tensor([float(w.strip() in COLOURS) for w in WORDS])
    count = torch.tensor([WORDS.index(w) for w in COUNT_WORDS])
    return Projector(TOKEN_INPUT, hidden_size, emb, allowed, box, count)


def targets(truths: list) -> torch.Tensor:
    """``[n, slots]`` word index of each token (the derived count slot: -100, no loss)."""
    t = torch.tensor([[WORDS.index(w) for w in slot_words(x)] for x in truths])
    t[:, COUNT_SLOT] = -100
    return t


def slot_accuracy(projector: Projector, feats: torch.Tensor, truths: list,
                  device: str) -> dict:
    """Share of tokens whose heaviest word is the truth's, per slot (the count derived)."""
    with torch.no_grad():
        got = torch.cat([projector.words(feats[i:i + 1024].to(device)).argmax(-1).cpu()
                         for i in range(0, len(feats), 1024)])
    want = torch.tensor([[WORDS.index(w) for w in slot_words(x)] for x in truths])
    return {s: round(float((got[:, k] == want[:, k]).float().mean()), 4)
            for k, s in enumerate(SLOTS)}


def align_stage(projector: Projector, feats: torch.Tensor, truths: list, args, device: str,
                rng: np.random.Generator) -> list:
    """Stage 1: cross-entropy of each token's word logits against the truth's word.

    No LM forward: a token is a mixture of the LM's (frozen) embedding rows of its words.
    """
    from tqdm import tqdm
    target = targets(truths)
    opt = torch.optim.AdamW(projector.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    losses = []
    bar = tqdm(range(args.align_steps), desc="stage 1 (words)", unit="step")
    for step in bar:
        rows = torch.from_numpy(rng.integers(0, len(feats), args.align_batch))
        logits = projector.logits(feats[rows].to(device))                    # [B, S, K]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target[rows].to(device).reshape(-1),
            ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * (step + 1) / args.align_steps))
        losses.append(round(loss.item(), 4))
        if step % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses


def cached_build(cache: Optional[Path], tower, *args, **kw) -> tuple:
    """:func:`data.build`, kept on disk under ``cache`` (keyed by its arguments)."""
    if cache is None:
        return build(tower, *args, **kw)
    n_scenes, n_timed, _, held_out, _, per_frame, seed = args
    path = cache / (f"features_{'heldout' if held_out else 'train'}_{n_scenes}_{n_timed}"
                    f"_{per_frame}_{seed}_{FEATURES}.pt")
    if path.is_file():
        return torch.load(path, weights_only=False)
    out = build(tower, *args, **kw)
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def train_stage(projector: Projector, lm, enc: Encoder, feats: torch.Tensor, train: list,
                args, device: str, dtype: torch.dtype, rng: np.random.Generator) -> list:
    """Stage 2: the LM's loss on the answers, through the frozen LM (warm-up + cosine)."""
    from tqdm import tqdm
    if args.steps <= 0:
        return []
    opt = torch.optim.AdamW(projector.parameters(), lr=args.lr * 0.3, weight_decay=0.0)
    warm = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, args.steps - warm)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    order, pos, losses = rng.permutation(len(train)), 0, []
    bar = tqdm(range(args.steps), desc="stage 2 (LM loss)", unit="step")
    for step in bar:
        if pos + args.batch > len(order):
            order, pos = rng.permutation(len(train)), 0
        batch = [train[int(i)] for i in order[pos:pos + args.batch]]
        pos += args.batch
        loss = loss_of(lm, projector, collate(enc, batch, feats, device), dtype)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(round(loss.item(), 4))
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    return losses


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Train, evaluate, write the projector and its report."""
    ap = argparse.ArgumentParser(prog="python -m ros2_infmllm.train",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/visual_tokens", help="output folder")
    ap.add_argument("--scenes", type=int, default=20000, help="training frames")
    ap.add_argument("--timed", type=int, default=4000, help="training timed triples")
    ap.add_argument("--heldout-scenes", type=int, default=600)
    ap.add_argument("--heldout-timed", type=int, default=200)
    ap.add_argument("--align-steps", type=int, default=1500,
                    help="stage 1 steps (word cross-entropy, no LM forward)")
    ap.add_argument("--align-batch", type=int, default=256, help="frames per stage-1 step")
    ap.add_argument("--steps", type=int, default=0, help="stage 2 steps (LM loss)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--hidden", type=int, default=512, help="the projector MLP's width")
    ap.add_argument("--answer-examples", type=int, default=200,
                    help="held-out questions answered greedily at the end (0: none)")
    ap.add_argument("--cache", default=None,
                    help="folder keeping the rendered frames' features between runs")
    ap.add_argument("--per-frame", type=int, default=3, help="questions per training frame")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--gguf", default=None, help="LM GGUF file (default: the packaged one)")
    ap.add_argument("--tower-weights", default=None,
                    help="EfficientNet-Lite0 .pth (default: the installed package's)")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from ..models.base import resolve_device, resolve_dtype
    from ..perception.efficientnet_lite0 import load_efficientnet_lite0
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    lm, tok, gguf = load_lm(args.gguf, device, dtype)
    tower = load_efficientnet_lite0(args.tower_weights).to(device)
    enc = Encoder(tok)
    say = tqdm.write
    cache = Path(args.cache) if args.cache else None
    feats, truths, train = cached_build(cache, tower, args.scenes, args.timed, device, False,
                                        args.workers, args.per_frame, args.seed, progress=say)
    hfeats, htruths, held = cached_build(cache, tower, args.heldout_scenes, args.heldout_timed,
                                         device, True, args.workers, 1, args.seed,
                                         progress=say)
    t_data = time.time() - t0
    say(f"data: {len(train)} training examples over {len(feats)} frames, {len(held)} "
        f"held-out over {len(hfeats)} frames, {t_data:.0f} s (LM load included)")
    table_e = lm.get_input_embeddings().weight
    projector = make_projector(table_e, tok, args.hidden).to(device)
    flat = torch.cat([token_inputs(feats[i:i + 4096].float()) for i in
                      range(0, len(feats), 4096)]).reshape(-1, TOKEN_INPUT)
    projector.feature_mean.copy_(flat.mean(0).to(device))
    projector.feature_std.copy_(flat.std(0).clamp_min(1e-3).to(device))
    del flat
    rng = np.random.default_rng(args.seed)
    t1 = time.time()
    align = align_stage(projector, feats, truths, args, device, rng)
    t_align = time.time() - t1
    n_single = args.heldout_scenes
    slots_after_1 = slot_accuracy(projector, hfeats[:n_single], htruths[:n_single], device)
    say(f"stage 1: {t_align:.0f} s; held-out token accuracy by slot: {slots_after_1}")
    losses = train_stage(projector, lm, enc, feats, train, args, device, dtype, rng)
    t_train = time.time() - t1
    projector.eval()
    slots = slot_accuracy(projector, hfeats[:n_single], htruths[:n_single], device)
    shown = held[:args.answer_examples]
    answers = answer_all(lm, tok, enc, projector, shown, hfeats, device, dtype)
    table = score(shown, answers)
    meta = {"model": NAME, "lm": gguf.name, "slots": list(SLOTS), "text": list(TEXT),
            "inputs": TOKEN_INPUT,
            "words": list(WORDS), "hidden": args.hidden, "weight_decay": args.weight_decay,
            "seed": args.seed, "align_steps": args.align_steps, "steps": args.steps,
            "batch": args.batch, "lr": args.lr,
            "scenes": args.scenes, "timed": args.timed, "device": str(
                torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"),
            "dtype": str(dtype).split(".")[-1]}
    sha = save_projector(projector, out / "projector.safetensors", meta)
    report = {"meta": meta, "sha256": sha, "heldout": table, "train_s": round(t_train, 1),
              "align_s": round(t_align, 1), "heldout_slot_accuracy_stage1": slots_after_1,
              "heldout_slot_accuracy": slots,
              "data_s": round(t_data, 1), "align_loss_last": align[-20:],
              "lm_loss_first": losses[:20], "lm_loss_last": losses[-20:],
              "samples": [{"q": ex.question, "expected": ex.answer, "answer": a, "kind": ex.kind}
                          for ex, a in list(zip(shown, answers))[:40]]}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    (out / "loss.json").write_text(json.dumps({"align": align, "lm": losses}))
    say(json.dumps({"heldout_slots": slots, "heldout": table, "train_s": round(t_train, 1),
                    "sha256": sha}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
