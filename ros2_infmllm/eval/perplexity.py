"""Streaming perplexity over a long real text, per memory policy and budget (paper Fig. 5).

The text is fed in chunks of ``chunk`` tokens; each chunk is prefilled against the bounded
cache (then compacted by the policy) and its next-token losses are recorded, so every
token is predicted from whatever the memory kept of everything before it.

``full_in_window`` is the reference at the same budget: for every chunk, the model sees
the exact previous ``budget`` tokens (plus the chunk itself) with full attention and
contiguous positions, recomputed from scratch ("sliding window with re-computation", the
oracle of the StreamingLLM paper). It is what a memory of ``budget`` recent tokens could
ideally give; it needs no cache, so its windows are batched.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ros2_infmllm.eval.common import build_policy, policy_params, save_figure

#: Span (tokens) of the coarse blocks of the drift figure (see coarse_worst_over_median).
COARSE_BLOCK = 50_000
REFERENCE = 'full_in_window'
POLICY_CHOICES = ('full_in_window', 'window', 'streaming_llm', 'h2o', 'snapkv', 'inf_mllm',
                  'full')
DEFAULT_POLICIES = ('full_in_window', 'window', 'streaming_llm', 'h2o', 'snapkv', 'inf_mllm')
DEFAULT_BUDGETS = (256, 512, 1024, 2048)


def tokenize(tokenizer, text: str, n_tokens: int) -> np.ndarray:
    """Return the first ``n_tokens`` token ids of ``text`` (int64), or all if fewer."""
    want = n_tokens if n_tokens > 0 else None
    cut = len(text) if want is None else min(len(text), want * 12 + 1000)
    while True:
        ids = _encode(tokenizer, text[:cut])
        if want is None or len(ids) > want or cut >= len(text):
            break
        cut = min(len(text), cut * 2)
    ids = np.asarray(ids if want is None else ids[:want], dtype=np.int64)
    return ids


def _encode(tokenizer, text: str) -> list:
    if callable(tokenizer):
        return list(tokenizer(text, add_special_tokens=False)['input_ids'])
    return list(tokenizer.encode(text, add_special_tokens=False))


def _sync(device: str) -> None:
    import torch
    if str(device).startswith('cuda'):
        torch.cuda.synchronize()


def stream_nll(model, ids: np.ndarray, policy, chunk: int, device: str,
               desc: str = 'stream', progress: bool = True) -> np.ndarray:
    """Per-token negative log-likelihood (len(ids) - 1) streaming through a BoundedCache."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm
    from ros2_infmllm.memory import BoundedCache
    from ros2_infmllm.models.base import cache_kwarg
    n = len(ids) - 1
    if n < 1:
        raise ValueError('need at least 2 tokens')
    x_all = torch.as_tensor(ids, device=device)
    cache = BoundedCache(policy, model.config, max_chunk=chunk)
    kw = cache_kwarg(model)
    nll = torch.empty(n, dtype=torch.float32, device=device)
    bar = tqdm(total=n, desc=desc, unit='tok', unit_scale=True, disable=not progress,
               mininterval=2.0)
    with torch.inference_mode():
        for i, s in enumerate(range(0, n, chunk)):
            e = min(s + chunk, n)
            out = model(input_ids=x_all[s:e].unsqueeze(0), use_cache=True, **{kw: cache})
            nll[s:e] = F.cross_entropy(out.logits[0].float(), x_all[s + 1:e + 1],
                                       reduction='none')
            bar.update(e - s)
            if progress and i % 200 == 199:
                bar.set_postfix(ppl=f'{math.exp(nll[:e].mean().item()):.2f}',
                                cache=cache.get_query_offset())
    bar.close()
    return nll.cpu().numpy()


def window_nll(model, ids: np.ndarray, budget: int, chunk: int, device: str, batch: int = 8,
               desc: str = REFERENCE, progress: bool = True) -> np.ndarray:
    """Per-token NLL of the full-in-window reference (see module docstring), batched."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm
    n = len(ids) - 1
    if n < 1:
        raise ValueError('need at least 2 tokens')
    x_all = torch.as_tensor(ids, device=device)
    nll = torch.empty(n, dtype=torch.float32, device=device)
    starts = list(range(0, n, chunk))
    full = [s for s in starts if s >= budget and s + chunk <= n]
    ragged = [s for s in starts if s not in set(full)]
    bar = tqdm(total=n, desc=desc, unit='tok', unit_scale=True, disable=not progress,
               mininterval=2.0)
    with torch.inference_mode():
        for s in ragged:                                 # the first windows and the tail
            e = min(s + chunk, n)
            c0 = max(0, s - budget)
            out = model(input_ids=x_all[c0:e].unsqueeze(0), use_cache=False,
                        logits_to_keep=e - s)
            nll[s:e] = F.cross_entropy(out.logits[0].float(), x_all[s + 1:e + 1],
                                       reduction='none')
            bar.update(e - s)
        span = budget + chunk
        offs = torch.arange(span, device=device)
        for b in range(0, len(full), batch):
            group = torch.as_tensor(full[b:b + batch], device=device)
            win = x_all[(group - budget).unsqueeze(1) + offs]            # [B, budget+chunk]
            tgt = x_all[(group + 1).unsqueeze(1) + offs[:chunk]]          # [B, chunk]
            out = model(input_ids=win, use_cache=False, logits_to_keep=chunk)
            loss = F.cross_entropy(out.logits.float().reshape(-1, out.logits.shape[-1]),
                                   tgt.reshape(-1), reduction='none').view(len(group), chunk)
            idx = group.unsqueeze(1) + offs[:chunk]
            nll[idx.reshape(-1)] = loss.reshape(-1)
            bar.update(len(group) * chunk)
    bar.close()
    return nll.cpu().numpy()


def block_ppl(nll: np.ndarray, block: int) -> list:
    """Perplexity of each full ``block``-token block (one block if the text is shorter)."""
    nb = len(nll) // block
    if nb == 0:
        return [float(math.exp(float(np.mean(nll))))]
    return [float(math.exp(float(np.mean(nll[i * block:(i + 1) * block])))) for i in range(nb)]


def summarise(nll: np.ndarray, block: int) -> dict:
    """Overall perplexity, block perplexities and the worst/median block ratio."""
    blocks = block_ppl(nll, block)
    return {'tokens': int(len(nll)), 'ppl': float(math.exp(float(np.mean(nll)))),
            'block_ppl': blocks,
            'worst_over_median': float(max(blocks) / float(np.median(blocks)))}


def coarse_worst_over_median(blocks: Sequence[float], block: int,
                             span: int = COARSE_BLOCK) -> Optional[float]:
    """Worst/median ratio over blocks of ``span`` tokens, merged from ``block``-token ones.

    Why: on a corpus of many source files a 10k-token block is one or two files, so the
    worst block is the hardest file (1.43 for every policy, the full cache included); over
    50k-token blocks the ratio says whether perplexity drifts along the stream. None when
    fewer than 4 merged blocks fit.
    """
    k = max(1, span // block)
    merged = [math.exp(sum(math.log(x) for x in blocks[i:i + k]) / k)
              for i in range(0, len(blocks) - k + 1, k)]
    if len(merged) < 4:
        return None
    return float(max(merged) / float(np.median(merged)))


def run(model, tokenizer, text: str, *, policies: Sequence[str], budgets: Sequence[int],
        n_tokens: int, chunk: int, block: int, device: str, batch: int = 8,
        overrides: Optional[dict] = None, progress: bool = True, on_run=None) -> dict:
    """Evaluate every policy at every budget on the first ``n_tokens`` of ``text``.

    ``on_run(partial)`` is called after each run with the result so far (to save it).
    """
    from ros2_infmllm.memory import use_scoring_attention
    if chunk < 1 or block < 1:
        raise ValueError(f'chunk and block must be >= 1 (got {chunk}, {block})')
    for p in policies:
        if p.split(':')[0] not in POLICY_CHOICES:
            raise ValueError(f'unknown policy {p!r}; choose from {POLICY_CHOICES}')
    ids = tokenize(tokenizer, text, n_tokens + 1 if n_tokens > 0 else 0)
    max_pos = getattr(model.config, 'max_position_embeddings', None)
    use_scoring_attention(model)
    runs = []
    for budget in budgets:
        for name in policies:
            if name == 'full' and max_pos and len(ids) > max_pos:
                raise ValueError(f'policy full grows without bound: {len(ids)} tokens exceed '
                                 f'the model\'s {max_pos} positions; use {REFERENCE}')
            _sync(device)
            t0 = time.perf_counter()
            label = f'{name}@{budget}'
            if name == REFERENCE:
                nll = window_nll(model, ids, budget, chunk, device, batch=batch, desc=label,
                                 progress=progress)
                params = {'name': REFERENCE, 'budget': budget,
                          'definition': 'exact previous budget tokens + chunk, recomputed'}
            else:
                pol = build_policy(name, budget, overrides)
                nll = stream_nll(model, ids, pol, chunk, device, desc=label, progress=progress)
                params = policy_params(pol)
            _sync(device)
            secs = time.perf_counter() - t0
            if not np.all(np.isfinite(nll)):
                raise RuntimeError(f'{label}: non-finite loss')
            entry = {'policy': name, 'budget': budget, 'params': params,
                     'seconds': round(secs, 2), 'tokens_per_s': round(len(nll) / secs, 1)}
            entry.update(summarise(nll, block))
            runs.append(entry)
            _compare_to_reference(runs)
            if on_run is not None:
                on_run({'n_tokens': int(len(ids) - 1), 'chunk': chunk, 'block': block,
                        'runs': runs})
    return {'n_tokens': int(len(ids) - 1), 'chunk': chunk, 'block': block, 'runs': runs}


def _compare_to_reference(runs: list) -> None:
    refs = {r['budget']: r for r in runs if r['policy'] == REFERENCE}
    for r in runs:
        ref = refs.get(r['budget'])
        if ref is None or r is ref:
            continue
        r['ppl_vs_reference'] = r['ppl'] / ref['ppl'] - 1.0
        ratios = [a / b for a, b in zip(r['block_ppl'], ref['block_ppl'])]
        r['worst_block_vs_reference'] = max(ratios)


# ---- rendering ------------------------------------------------------------------------------
def plot(result: dict, png: Path | str) -> Path:
    """Block perplexity curves, one panel per budget, one line per policy."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    runs = result['runs']
    budgets = sorted({r['budget'] for r in runs})
    block = result['block']
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.2 * len(budgets), 3.8),
                             squeeze=False, sharey=True)
    for ax, b in zip(axes[0], budgets):
        for r in [r for r in runs if r['budget'] == b]:
            y = r['block_ppl']
            x = (np.arange(len(y)) + 1) * min(block, r['tokens']) / 1000.0
            ax.plot(x, y, label=f"{r['policy']} ({r['ppl']:.2f})",
                    lw=2.0 if r['policy'] in (REFERENCE, 'inf_mllm') else 1.0)
        ax.set_title(f'budget {b} tokens')
        ax.set_xlabel('tokens streamed (k)')
        ax.set_yscale('log')
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f'perplexity per {block // 1000 or block}k-token block')
    fig.suptitle(f"Streaming perplexity, {result.get('meta', {}).get('model', '')}, "
                 f"chunk {result['chunk']}", fontsize=10)
    return save_figure(fig, png)


def markdown(result: dict, png_name: Optional[str] = None) -> str:
    """Markdown table (per budget and policy) plus the plot link."""
    meta = result.get('meta', {})
    corpus = result.get('corpus', {})
    lines = [f"Model `{meta.get('model')}`, {result['n_tokens']:,} tokens of "
             f"{corpus.get('n_files', '?')} CPython `Lib/*.py` files (text sha256 "
             f"`{str(corpus.get('sha256', ''))[:12]}`), chunk {result['chunk']}, "
             f"blocks of {result['block']:,} tokens, device "
             f"{_device_name(meta)}.", '',
             '| budget | policy | tokens | perplexity | vs full_in_window | worst/median block '
             f'| worst/median {COARSE_BLOCK // 1000}k | worst block vs ref | tokens/s |',
             '|---:|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in sorted(result['runs'], key=lambda r: (r['budget'], POLICY_CHOICES.index(
            r['policy']) if r['policy'] in POLICY_CHOICES else 99)):
        vs = r.get('ppl_vs_reference')
        wr = r.get('worst_block_vs_reference')
        coarse = coarse_worst_over_median(r['block_ppl'], result['block'])
        lines.append(f"| {r['budget']} | {r['policy']} | {r['tokens']:,} | {r['ppl']:.3f} | "
                     f"{'' if vs is None else f'{100 * vs:+.2f}%'} | "
                     f"{r['worst_over_median']:.3f} | "
                     f"{'' if coarse is None else f'{coarse:.3f}'} | "
                     f"{'' if wr is None else f'{wr:.3f}'} | "
                     f"{r['tokens_per_s']:,.0f} |")
    if png_name:
        lines += ['', f'![streaming perplexity]({png_name})']
    return '\n'.join(lines) + '\n'


def _device_name(meta: dict) -> str:
    dev = meta.get('device', {}) or {}
    return str(dev.get('gpu') or dev.get('cpu') or dev.get('device', '?'))
