"""Long-memory QA: facts stated early in a streamed conversation, asked many rounds later.

Why this design: the question must test *memory*, not the model's skill, so that a 135M
instruct model answers correctly whenever the fact is still in its cache. Each fact has a
lead-in of its own ("The spare key is hidden under the maple."), so no two facts of a
conversation share a pattern a small model could confuse (with one shared pattern, "The
password of the X is Y", the 135M model copies the most recent Y whatever X is, even with
the whole conversation in its cache); its question is the lead-in as a cloze ("The spare
key is hidden under the"), so the first generated token copies the word out of the context
when it is there; an answer is correct if it contains the word. Between facts and
questions the stream carries distractor lines and, every ``mention_every`` rounds, a
passing mention of a pending fact's subject in varied words ("A worker talked about the
spare key.") -- the way subjects recur in a real long conversation or scene, and what
gives the attention-based memory something to follow. Every round is one chunk
prefilled against the bounded cache (then compacted).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ros2_infmllm.eval.common import policy_params, save_figure
from ros2_infmllm.eval.scoring import match_answer

#: (subject, lead-in): each fact is "<lead-in> <answer word>."; each subject and lead-in is
#: used at most once per conversation, and no lead-in is a prefix of another.
FACTS = (
    ('the locker', 'The password of the locker is'),
    ("the guard's dog", "The name of the guard's dog is"),
    ('the delivery truck', 'The delivery truck will bring a crate of'),
    ('the visitor', 'The visitor from the north office was called'),
    ('the cafeteria', 'Tomorrow the cafeteria serves soup with'),
    ('the spare key', 'The spare key is hidden under the'),
    ('the boiler room', 'The emergency code for the boiler room is'),
    ('the new robot', 'The new robot in the lab is nicknamed'),
    ("the manager's umbrella", "The manager's umbrella is next to the"),
    ('the blue forklift', 'The sticker on the blue forklift shows a'),
    ('the chess game', 'The winner of the chess game was'),
    ('pallet nine', 'The shipment on pallet nine contains'),
    ('the night shift', 'The night shift supervisor is called'),
    ('the printer', 'The printer on the second floor is labelled'),
    ('the parking lot', 'In the parking lot the red car has a sticker of a'),
    ('the training session', 'The training session next week is about'),
)
#: Passing mentions of a subject, chosen at random each time (never a verbatim repeat chain).
MENTIONS = ('Someone asked about {s}.', 'A worker talked about {s}.',
            'The camera saw {s} again.', 'Somebody walked past {s}.',
            'There was a note about {s}.', 'The robot passed {s}.')
#: Answers: one common word each, never used elsewhere in the stream; a word is copied
#: more reliably by a small model than a digit string.
ANSWERS = ('tiger', 'falcon', 'otter', 'maple', 'cobalt', 'violet', 'copper', 'walnut',
           'harbor', 'comet', 'lemon', 'panda', 'cactus', 'amber', 'willow', 'saturn',
           'pepper', 'orbit', 'canyon', 'meadow', 'glacier', 'coral', 'badger', 'mango',
           'raven', 'pebble', 'thunder', 'velvet', 'dolphin', 'cherry', 'lantern', 'bamboo',
           'rocket', 'cinnamon', 'kettle', 'puzzle')
DISTRACTORS = (
    'The robot drove along the corridor.', 'A person walked by the window.',
    'The hallway lights flickered for a moment.', 'Nothing else happened in the hall.',
    'A forklift beeped somewhere far away.', 'The floor near the entrance was wet.',
    'Two workers talked about the weather.', 'The robot turned left at the corner.',
    'A delivery van parked outside.', 'The air conditioning started humming.',
    'Someone closed a window upstairs.', 'The robot waited for the elevator.',
    'A dog barked outside the building.', 'The camera saw an empty aisle.',
    'The battery level dropped a little.', 'A phone rang in the office.')
PREAMBLE = ('This is a robot\'s log. It notes what it hears and sees, and later recalls '
            'it.\n')


@dataclass
class Round:
    """One round of the conversation (one streamed chunk).

    Parameters
    ----------
    kind : str
        ``fact``, ``question``, ``mention`` or ``distractor``.
    text : str
        What is prefilled (a question ends where the answer starts).
    answer : str or None
        The expected answer word for a question.
    distance : int or None
        Rounds between the fact and this question.
    """

    kind: str
    text: str
    answer: Optional[str] = None
    distance: Optional[int] = None


@dataclass
class Conversation:
    """A seeded conversation: its rounds and the number of questions per distance.

    Parameters
    ----------
    seed : int
        Seed it was generated from.
    rounds : list of Round
        The stream, in order.
    """

    seed: int
    rounds: list = field(default_factory=list)


def make_conversation(seed: int, distances: Sequence[int], per_distance: int = 2,
                      mention_every: int = 25, warmup: int = 0) -> Conversation:
    """Generate a conversation with ``per_distance`` questions at each distance (rounds).

    The first ``warmup`` rounds are distractors only, so that no fact is stated while a
    bounded memory is still filling (as in a node that has been running for hours); a fact
    stated into an almost empty memory would otherwise be kept for its earliness.
    """
    if not distances or min(distances) < 1:
        raise ValueError(f'distances must be >= 1, got {list(distances)}')
    if per_distance < 1:
        raise ValueError(f'per_distance must be >= 1, got {per_distance}')
    if mention_every < 0 or warmup < 0:
        raise ValueError(f'mention_every and warmup must be >= 0, got {mention_every}, '
                         f'{warmup}')
    n_q = len(distances) * per_distance
    if n_q > len(FACTS):
        raise ValueError(f'{n_q} questions exceed the {len(FACTS)} distinct facts')
    rng = random.Random(seed)
    facts = list(FACTS)
    rng.shuffle(facts)
    words = list(ANSWERS)
    rng.shuffle(words)
    total = warmup + max(distances) + 1 + 3 * n_q
    kinds: dict = {}
    pairs = []
    want = sorted([d for d in distances for _ in range(per_distance)], reverse=True)
    for d in want:
        for _ in range(10_000):
            q = rng.randrange(warmup + d + 1, total)
            f = q - d
            if q not in kinds and f not in kinds:
                break
        else:
            raise ValueError(f'cannot place a question at distance {d} in {total} rounds')
        subject, lead = facts[len(pairs)]
        word = words[len(pairs)]
        kinds[f] = ('fact', subject, lead, word, d)
        kinds[q] = ('question', subject, lead, word, d)
        pairs.append((f, q, subject, lead))
    if mention_every:
        for f, q, subject, lead in pairs:
            r = f + mention_every
            while r < q:
                while r < q and r in kinds:
                    r += 1
                if r < q:
                    kinds[r] = ('mention', subject, lead, None, None)
                r += mention_every
    conv = Conversation(seed=seed)
    for r in range(total):
        kind = kinds.get(r)
        if kind is None:
            conv.rounds.append(Round('distractor', rng.choice(DISTRACTORS) + '\n'))
            continue
        k, subject, lead, word, d = kind
        if k == 'fact':
            conv.rounds.append(Round('fact', f'{lead} {word}.\n'))
        elif k == 'mention':
            conv.rounds.append(Round('mention', rng.choice(MENTIONS).format(s=subject) + '\n'))
        else:
            conv.rounds.append(Round('question', lead, answer=word, distance=d))
    return conv


def _encode(tokenizer, text: str) -> list:
    if callable(tokenizer):
        return list(tokenizer(text, add_special_tokens=False)['input_ids'])
    return list(tokenizer.encode(text, add_special_tokens=False))


def play(model, tokenizer, conv: Conversation, policy, device: str,
         max_new_tokens: int = 6, bar=None, in_stream: bool = False,
         rounds_per_chunk: int = 1) -> list:
    """Stream ``conv`` through a BoundedCache under ``policy``; return one record per question.

    By default each question probes a copy of the memory (so earlier questions and answers
    neither refresh nor crowd out facts: what is measured is what the stream left in
    memory); ``in_stream=True`` appends questions and answers to the stream instead.
    Up to ``rounds_per_chunk`` consecutive non-question rounds are prefilled as one chunk
    (fewer, larger forwards); a question is always a chunk of its own.
    """
    import copy

    import torch
    from ros2_infmllm.memory import BoundedCache
    from ros2_infmllm.models.base import cache_kwarg
    kw = cache_kwarg(model)
    cache = BoundedCache(policy, model.config, max_chunk=64, decode_slack=16)
    records = []
    after_answer = False
    texts, kinds, count = [PREAMBLE], [None], [1]
    for r in conv.rounds:
        if r.kind != 'question' and kinds[-1] is not None and kinds[-1].kind != 'question' \
                and count[-1] < rounds_per_chunk:
            texts[-1] += r.text
            count[-1] += 1
            continue
        texts.append(r.text)
        kinds.append(r)
        count.append(1)
    with torch.inference_mode():
        for i, (text, rnd, n_rounds) in enumerate(zip(texts, kinds, count)):
            if after_answer:
                text = '\n' + text
                after_answer = False
            ids = torch.tensor([_encode(tokenizer, text)], device=device)
            question = rnd is not None and rnd.kind == 'question'
            mem = copy.deepcopy(cache) if question and not in_stream else cache
            mem.begin_source(i, stamp=float(i), kind=rnd.kind if rnd else 'preamble')
            logits = model(input_ids=ids, use_cache=True, **{kw: mem}).logits
            if question:
                out = []
                t0 = time.perf_counter()
                for _ in range(max_new_tokens):
                    tok = int(logits[0, -1].argmax())
                    out.append(tok)
                    piece = tokenizer.decode([tok])
                    if '\n' in piece or tok == getattr(tokenizer, 'eos_token_id', None):
                        break
                    logits = model(input_ids=torch.tensor([[tok]], device=device),
                                   use_cache=True, **{kw: mem}).logits
                answer = tokenizer.decode(out).split('\n')[0]
                records.append({'chunk': i, 'distance': rnd.distance,
                                'expected': rnd.answer, 'answer': answer.strip(),
                                'correct': match_answer(answer, rnd.answer, 'contains'),
                                'seconds': round(time.perf_counter() - t0, 4),
                                'cache_tokens': mem.get_query_offset()})
                after_answer = in_stream and '\n' not in tokenizer.decode(out)
                del mem
            if bar is not None:
                bar.update(n_rounds)
    return records


def run(model, tokenizer, *, policies: Sequence[str], budget: int, distances: Sequence[int],
        streams: int, per_distance: int, mention_every: int, seed: int, device: str,
        warmup: int = 0,
        overrides: Optional[dict] = None, progress: bool = True, on_run=None,
        in_stream: bool = False, rounds_per_chunk: int = 1) -> dict:
    """Accuracy per policy and distance over ``streams`` seeded conversations.

    ``on_run(partial)`` is called after each policy with the result so far (to save it).
    """
    from tqdm import tqdm
    from ros2_infmllm.eval.common import build_policy
    from ros2_infmllm.memory import use_scoring_attention
    if streams < 1 or rounds_per_chunk < 1:
        raise ValueError(f'streams and rounds_per_chunk must be >= 1, got {streams}, '
                         f'{rounds_per_chunk}')
    use_scoring_attention(model)
    convs = [make_conversation(seed + s, distances, per_distance, mention_every, warmup)
             for s in range(streams)]
    total = sum(len(c.rounds) + 1 for c in convs) * len(policies)
    bar = tqdm(total=total, desc='memory-qa', unit='round', disable=not progress,
               mininterval=2.0)
    tokens = [sum(len(_encode(tokenizer, r.text)) for r in c.rounds) for c in convs]
    head = {'budget': budget, 'distances': list(distances), 'streams': streams,
            'per_distance': per_distance, 'mention_every': mention_every, 'warmup': warmup,
            'questions_in_stream': in_stream, 'rounds_per_chunk': rounds_per_chunk,
            'rounds_per_stream': [len(c.rounds) for c in convs], 'tokens_per_stream': tokens}
    runs = []
    for name in policies:
        pol = build_policy(name, budget, overrides)
        bar.set_postfix(policy=name)
        t0 = time.perf_counter()
        recs = []
        for s, conv in enumerate(convs):
            for r in play(model, tokenizer, conv, pol, device, bar=bar, in_stream=in_stream,
                          rounds_per_chunk=rounds_per_chunk):
                r['stream'] = s
                recs.append(r)
        by_d = {}
        for d in sorted(set(distances)):
            hits = [r['correct'] for r in recs if r['distance'] == d]
            by_d[str(d)] = float(np.mean(hits)) if hits else None
        runs.append({'policy': name, 'params': policy_params(pol),
                     'accuracy': float(np.mean([r['correct'] for r in recs])),
                     'accuracy_by_distance': by_d,
                     'questions_per_distance': streams * per_distance,
                     'seconds': round(time.perf_counter() - t0, 2), 'records': recs})
        if on_run is not None:
            on_run(dict(head, runs=runs))
    bar.close()
    return dict(head, runs=runs)


def plot(result: dict, png: Path | str) -> Path:
    """Accuracy against distance, one line per policy."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in result['runs']:
        ds = [int(d) for d, a in r['accuracy_by_distance'].items() if a is not None]
        acc = [100 * r['accuracy_by_distance'][str(d)] for d in ds]
        ax.plot(ds, acc, marker='o', label=r['policy'],
                lw=2.0 if r['policy'] == 'inf_mllm' else 1.2)
    toks = result.get('tokens_per_stream') or [0]
    rounds = result.get('rounds_per_stream') or [1]
    per_round = float(np.mean(toks)) / max(1.0, float(np.mean(rounds)))
    if per_round > 0:
        ax.axvline(result['budget'] / per_round, color='gray', ls=':', lw=1)
        ax.text(result['budget'] / per_round, 3, ' budget', color='gray', fontsize=8)
    ax.set_xlabel('distance between fact and question (rounds)')
    ax.set_ylabel('accuracy (%)')
    ax.set_ylim(-5, 105)
    ax.set_title(f"Long-memory QA, budget {result['budget']} tokens, "
                 f"{result['streams']} streams", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, png)


def markdown(result: dict, png_name: Optional[str] = None) -> str:
    """Markdown table of accuracy per policy and distance."""
    meta = result.get('meta', {})
    ds = [str(d) for d in result['distances']]
    toks = result.get('tokens_per_stream') or [0]
    lines = [f"Model `{meta.get('model')}`, budget {result['budget']} tokens, "
             f"{result['streams']} seeded conversations of "
             f"{max(result.get('rounds_per_stream') or [0])} rounds "
             f"(~{int(np.mean(toks)):,} tokens each), {result['per_distance']} questions per "
             f"distance per conversation, passing mention every {result['mention_every']} "
             f"rounds, first fact after {result.get('warmup', 0)} distractor rounds; "
             f"seed {meta.get('seed')}.", '',
             '| policy | all | ' + ' | '.join(f'd={d}' for d in ds) + ' |',
             '|---|---:|' + '---:|' * len(ds)]
    for r in result['runs']:
        accs = [r['accuracy_by_distance'].get(d) for d in ds]
        lines.append(f"| {r['policy']} | {100 * r['accuracy']:.0f}% | " + ' | '.join(
            '' if a is None else f'{100 * a:.0f}%' for a in accs) + ' |')
    notes = [f"- `{r['policy']}`: {r['label_note']}" for r in result['runs']
             if r.get('label_note')]
    if meta.get('merged_from'):
        notes.append(f"- merged: {meta['merged_from']}")
    if notes:
        lines += [''] + notes
    if png_name:
        lines += ['', f'![memory-qa accuracy]({png_name})']
    return '\n'.join(lines) + '\n'
