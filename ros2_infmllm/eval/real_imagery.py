"""Real photographs and video from Debian packages: where they are, and how they get there.

The eyes test and the real-footage bag use imagery that Debian ships (no download from
anywhere else, nothing committed): ``labelme-examples`` (a rainy street clip, VOC photos,
a warehouse bin), ``opencv-doc`` (``vtest.avi``, a pedestrian video; text, plate and scene
photos) and ``visp-images-data`` (robot-camera sequences). They are looked for, in order,
in ``$ROS2_INFMLLM_IMAGERY`` (a root that holds ``usr/share/...``), the cache root
(``~/.cache/ros2_infmllm/imagery``) and ``/`` (installed with apt). As root with apt, the
missing ones are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` into the
cache root; otherwise :class:`ImageryMissing` says which packages to install.

Usage: ``python -m ros2_infmllm.eval.real_imagery`` (prints the root, installs if it can).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

#: package -> a file inside it (relative to the root) that proves it is unpacked there
PACKAGES = {
    "labelme-examples": "usr/share/doc/labelme-examples/examples/video_annotation/"
                        "data_annotated/00000100.jpg",
    "opencv-doc": "usr/share/doc/opencv-doc/examples/data/vtest.avi",
    "visp-images-data": "usr/share/visp-images-data/ViSP-images/cube/image.0001.pgm",
}
ENV = "ROS2_INFMLLM_IMAGERY"


class ImageryMissing(FileNotFoundError):
    """The Debian imagery packages are not there; the message says what to install."""


def cache_root() -> Path:
    """Where fetched packages are unpacked (``$XDG_CACHE_HOME`` respected)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ros2_infmllm" / "imagery"


def candidates() -> list[Path]:
    """Roots searched, in order."""
    roots = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    return roots + [cache_root(), Path("/")]


def _has_all(root: Path) -> bool:
    return all((root / probe).is_file() for probe in PACKAGES.values())


def _hint(missing: list[str]) -> str:
    return (f"real imagery needs the Debian packages {', '.join(missing)}: as root run "
            f"`python -m ros2_infmllm.eval.real_imagery` (apt-get download + dpkg -x into "
            f"{cache_root()}), or `apt-get install {' '.join(missing)}`, or set {ENV} to a "
            f"root where they are unpacked")


def find_root() -> Path:
    """Return the first root holding every package's files; ImageryMissing if none does."""
    for root in candidates():
        if _has_all(root):
            return root
    missing = [p for p, probe in PACKAGES.items()
               if not any((r / probe).is_file() for r in candidates())]
    raise ImageryMissing(_hint(missing or list(PACKAGES)))


def install(log=print) -> Path:
    """Return a root holding the imagery, fetching missing packages as root with apt."""
    try:
        return find_root()
    except ImageryMissing:
        pass
    root = cache_root()
    missing = [p for p, probe in PACKAGES.items() if not (root / probe).is_file()]
    if os.geteuid() != 0 or not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise ImageryMissing(_hint(missing))
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        def apt_download() -> subprocess.CompletedProcess:
            return subprocess.run(["apt-get", "download", *missing], cwd=tmp,
                                  capture_output=True, text=True)
        done = apt_download()
        if done.returncode != 0:
            log("apt-get download failed; running apt-get update once")
            subprocess.run(["apt-get", "update"], capture_output=True, text=True)
            done = apt_download()
        if done.returncode != 0:
            raise ImageryMissing(f"{_hint(missing)} (apt-get download: "
                                 f"{done.stderr.strip()[-300:]})")
        for deb in sorted(Path(tmp).glob("*.deb")):
            log(f"unpacking {deb.name} into {root}")
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return find_root()


def install_for_cli() -> Path | None:
    """Return :func:`install`'s root for a command, logging to stderr; None (said why) if none."""
    try:
        return install(log=lambda m: print(m, file=sys.stderr))
    except ImageryMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def main() -> int:
    """Print the imagery root, fetching the packages first when needed and possible."""
    root = install_for_cli()
    if root is None:
        return 2
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
