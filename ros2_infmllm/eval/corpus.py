"""The long real text of the perplexity task: the CPython standard library's own sources.

Why this text: it ships with every Python interpreter (no download, no hub), it is real
text written by people (code, comments and docstrings), and its top-level ``Lib/*.py``
files hold well over a million SmolLM2 tokens. Files are concatenated in sorted name order
with a header line each, so the corpus is deterministic for a given Python version; it is
written compressed (``.txt.xz``) so that another machine (another Python) can evaluate
exactly the same text.
"""
from __future__ import annotations

import hashlib
import lzma
import re
import sysconfig
from pathlib import Path
from typing import Optional

HEADER = '# ==== Lib/{name} ====\n'
_HEADER_RE = re.compile(r'^# ==== Lib/(\S+) ====$', re.M)
DEFAULT_CORPUS = Path('data') / 'corpus_stdlib.txt.xz'


def stdlib_files(lib_dir: Optional[Path] = None) -> list:
    """Return the top-level ``*.py`` files of the standard library, sorted by name."""
    lib = Path(lib_dir or sysconfig.get_paths()['stdlib'])
    files = sorted(p for p in lib.glob('*.py') if p.is_file())
    if not files:
        raise FileNotFoundError(f'no *.py files in {lib}')
    return files


def build_corpus(out: Path | str = DEFAULT_CORPUS, lib_dir: Optional[Path] = None) -> dict:
    """Write the corpus (xz-compressed UTF-8 when ``out`` ends in .xz) and describe it."""
    out = Path(out)
    parts = []
    for path in stdlib_files(lib_dir):
        text = path.read_text(encoding='utf-8', errors='replace')
        parts.append(HEADER.format(name=path.name) + text.rstrip('\n') + '\n\n')
    text = ''.join(parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode('utf-8')
    out.write_bytes(lzma.compress(data) if out.suffix == '.xz' else data)
    return describe_corpus(text, out)


def load_corpus(path: Path | str) -> str:
    """Read a corpus file (``.xz`` compressed or plain UTF-8 text)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'corpus not found: {path} (make it with '
                                f'`python -m ros2_infmllm.eval corpus --out {path}`)')
    data = path.read_bytes()
    if path.suffix == '.xz':
        data = lzma.decompress(data)
    return data.decode('utf-8')


def describe_corpus(text: str, path: Path | str | None = None) -> dict:
    """Return the corpus' identity: sha256 of the text, its file list and the list's hash."""
    files = _HEADER_RE.findall(text)
    return {'path': None if path is None else str(path), 'chars': len(text),
            'sha256': hashlib.sha256(text.encode('utf-8')).hexdigest(),
            'n_files': len(files),
            'files_sha256': hashlib.sha256('\n'.join(files).encode()).hexdigest(),
            'first_file': files[0] if files else None,
            'last_file': files[-1] if files else None}


def ensure_corpus(path: Path | str = DEFAULT_CORPUS) -> Path:
    """Return ``path``, building the corpus there first when it does not exist."""
    path = Path(path)
    if not path.exists():
        build_corpus(path)
    return path
