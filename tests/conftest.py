"""Fixtures shared across test folders."""

import os

import pytest

from ros2_infmllm.eval.real_imagery import ImageryMissing, find_root


@pytest.fixture
def imagery_root():
    """Root of the Debian imagery; skipped where it is missing, but a failure in CI.

    .ci/run installs it (as root, with apt), so in CI a missing package is a defect.
    """
    try:
        return find_root()
    except ImageryMissing as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(exc))
