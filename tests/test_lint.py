"""Lint checks, as ROS packages' standard ament_flake8 / ament_pep257 tests run them.

flake8 (max line length 99, setup.cfg) and pydocstyle (pep257 convention) over the Python
package, the tests, the launch file and the scripts. Each check lists the offending
lines in its failure message.
"""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TARGETS = ['ros2_infmllm', 'tests', 'launch', 'scripts', 'setup.py']


def _run(args: list) -> subprocess.CompletedProcess:
    """Run a lint tool as a module of this interpreter, from the repository root."""
    return subprocess.run([sys.executable, '-m'] + args, cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def _targets() -> list:
    """Lint targets that exist in this checkout."""
    return [t for t in TARGETS if (REPO / t).exists()]


def test_flake8_clean():
    """Flake8 finds nothing (pyflakes + pycodestyle, max-line-length 99)."""
    pytest.importorskip('flake8', reason='flake8 not installed (./setup.sh installs it)')
    res = _run(['flake8', '--max-line-length', '99'] + _targets())
    assert res.returncode == 0, f'flake8 findings:\n{res.stdout}{res.stderr}'


def test_pydocstyle_pep257_clean():
    """Pydocstyle with the pep257 convention finds nothing."""
    pytest.importorskip('pydocstyle', reason='pydocstyle not installed (./setup.sh does)')
    res = _run(['pydocstyle', '--convention=pep257'] + _targets())
    assert res.returncode == 0, f'pydocstyle findings:\n{res.stdout}{res.stderr}'


def test_shell_scripts_parse():
    """The set-up, test and CI scripts are valid bash (bash -n)."""
    bash = shutil.which('bash')
    if bash is None:
        pytest.skip('bash not found')
    scripts = [REPO / 'setup.sh', REPO / '.ci' / 'run'] + sorted((REPO / 'scripts').glob('*.sh'))
    for script in scripts:
        res = subprocess.run([bash, '-n', str(script)], capture_output=True, text=True)
        assert res.returncode == 0, f'{script.name}: {res.stderr}'
