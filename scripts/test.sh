#!/usr/bin/env bash
# Run the project's test suite (the README's test command and what .ci/run runs).
# Activates .venv and install/ (made by ./setup.sh), keeps DDS discovery on this host,
# and runs pytest over tests/. Extra arguments go to pytest, e.g.
#     scripts/test.sh tests/test_lint.py -x
# Exit status: pytest's, except that "no tests ran" (pytest exit 5) is a failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -x .venv/bin/python ] || [ ! -f install/setup.bash ]; then
    echo "scripts/test.sh: environment missing, run ./setup.sh first" >&2
    exit 2
fi
# shellcheck disable=SC1091
. .venv/bin/activate
set +u
# shellcheck disable=SC1091
. install/setup.bash
set -u

# ROS 2 traffic of the tests stays on the loopback interface; every test picks its own
# random ROS_DOMAIN_ID so that parallel runs do not see each other.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

if [ $# -eq 0 ]; then
    set -- tests/
fi
python -m pytest -ra "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests (exit 5): failing" >&2
    exit 1
fi
exit "$rc"
