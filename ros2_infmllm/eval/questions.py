"""Load and validate question files (YAML or JSONL) for replay evaluation."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Optional

import yaml

from ros2_infmllm.eval.scoring import MATCH_KINDS, match_answer, normalise

#: The question file of the bundled sample bag.
SAMPLE_QUESTIONS = 'sample_questions.yaml'
#: Question files of the bundled scenes, by scene name (``scenario.SCENES``).
SCENE_QUESTIONS = {'sample': SAMPLE_QUESTIONS, 'heldout': 'heldout_questions.yaml',
                   'yard': 'yard_questions.yaml', 'real': 'real_questions.yaml'}


@dataclass
class Question:
    """One question asked at bag time ``t`` (s from bag start) with its expected answer."""

    id: str
    t: float
    question: str
    expected: object
    match: str = 'contains'
    tolerance: float = 0.0
    evidence: list = field(default_factory=list)
    camera: Optional[str] = None
    tags: list = field(default_factory=list)
    candidates: list = field(default_factory=list)

    def score(self, answer: str) -> bool:
        """Return whether ``answer`` is correct: it matches and names no other candidate."""
        others = [c for c in self.candidates if normalise(c) != normalise(self.expected)]
        return match_answer(answer, self.expected, self.match, self.tolerance, others)


def sample_questions_path() -> Path:
    """Return the path of the bundled sample question file."""
    return questions_path('sample')


def questions_path(scene: str) -> Path:
    """Return the path of the question file of bundled scene ``scene``."""
    if scene not in SCENE_QUESTIONS:
        raise ValueError(f'no bundled scene {scene!r}; known: {sorted(SCENE_QUESTIONS)}')
    return Path(str(resources.files('ros2_infmllm.eval') / 'data' / SCENE_QUESTIONS[scene]))


def _candidates(entry: dict, kinds: dict, where: str) -> list:
    """Return a question's candidates: its own ``candidates`` list, or its ``kind``'s."""
    if 'candidates' in entry:
        cands = entry['candidates']
    elif 'kind' in entry:
        if entry['kind'] not in kinds:
            raise ValueError(f'{where}: kind {entry["kind"]!r} has no candidates; '
                             f'declared kinds: {sorted(kinds)}')
        cands = kinds[entry['kind']]
    else:
        return []
    if not isinstance(cands, list) or not cands:
        raise ValueError(f'{where}: candidates must be a non-empty list, got {cands!r}')
    if not any(normalise(c) == normalise(entry['expected']) for c in cands):
        raise ValueError(f'{where}: expected {entry["expected"]!r} is not among its '
                         f'candidates {cands}')
    return list(cands)


def _parse(entry: dict, idx: int, default_camera: Optional[str],
           kinds: Optional[dict] = None) -> Question:
    where = f'question #{idx}'
    if not isinstance(entry, dict):
        raise ValueError(f'{where}: must be a mapping, got {type(entry).__name__}')
    missing = [k for k in ('t', 'question', 'expected') if k not in entry]
    if missing:
        raise ValueError(f'{where}: missing keys {missing}')
    match = entry.get('match', 'contains')
    if match not in MATCH_KINDS:
        raise ValueError(f'{where}: match {match!r} not in {MATCH_KINDS}')
    ev = entry.get('evidence') or []
    for r in ev:
        if not (isinstance(r, (list, tuple)) and len(r) == 2 and float(r[0]) <= float(r[1])):
            raise ValueError(f'{where}: evidence range {r!r} must be [start, end]')
    q = Question(id=str(entry.get('id', f'q{idx}')), t=float(entry['t']),
                 question=str(entry['question']), expected=entry['expected'], match=match,
                 tolerance=float(entry.get('tolerance', 0.0)),
                 evidence=[[float(a), float(b)] for a, b in ev],
                 camera=entry.get('camera', default_camera), tags=list(entry.get('tags', [])),
                 candidates=_candidates(entry, kinds or {}, where))
    if q.t < 0:
        raise ValueError(f'{where}: t must be >= 0, got {q.t}')
    match_answer('', q.expected, q.match, q.tolerance)   # raises on a malformed expectation
    return q


def load_questions(path: Path | str) -> list:
    """Read a YAML (``questions:`` list) or JSONL question file; sorted by ``t``.

    A YAML file may declare ``candidates:`` (kind -> every answer of that kind in the
    scene), which a question selects with ``kind:``; a question may list its own instead.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f'question file not found: {path}')
    text = path.read_text()
    default_camera = None
    kinds: dict = {}
    if path.suffix == '.jsonl':
        entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        doc = yaml.safe_load(text)
        if isinstance(doc, dict):
            default_camera = doc.get('camera')
            kinds = doc.get('candidates') or {}
            entries = doc.get('questions')
        else:
            entries = doc
        if not isinstance(entries, list):
            raise ValueError(f'{path}: expected a list of questions (or a "questions:" key)')
    if not isinstance(kinds, dict):
        raise ValueError(f'{path}: candidates must map a kind to a list of answers')
    qs = [_parse(e, i, default_camera, kinds) for i, e in enumerate(entries)]
    return sorted(qs, key=lambda q: q.t)
