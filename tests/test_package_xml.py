"""Both package.xml files: xmllint (as ament_xmllint runs it) and a format-3 check.

xmllint needs libxml2-utils (.ci/run installs it when it can); without it that test is
skipped with the reason. The format-3 check parses the manifests with catkin_pkg (the
parser colcon and rosdep use) and cross-checks them against setup.py and CMakeLists.txt.
"""
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = {'ros2_infmllm': REPO / 'package.xml',
             'ros2_infmllm_msgs': REPO / 'msg' / 'package.xml'}
REQUIRED_ORDER = ['name', 'version', 'description', 'maintainer', 'license']


@pytest.mark.parametrize('name', sorted(MANIFESTS))
def test_xmllint_well_formed(name):
    """Xmllint --noout accepts the manifest (well-formed XML)."""
    xmllint = shutil.which('xmllint')
    if xmllint is None:
        pytest.skip('xmllint not installed (apt-get install libxml2-utils; .ci/run does '
                    'this as root)')
    res = subprocess.run([xmllint, '--noout', str(MANIFESTS[name])], capture_output=True,
                         text=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize('name', sorted(MANIFESTS))
def test_format3_structure(name):
    """Root <package format="3">, required elements present, first, in schema order."""
    root = ET.parse(MANIFESTS[name]).getroot()
    assert root.tag == 'package' and root.get('format') == '3'
    tags = [child.tag for child in root]
    assert tags[:len(REQUIRED_ORDER)] == REQUIRED_ORDER, tags
    assert root.findtext('name') == name
    assert re.fullmatch(r'\d+\.\d+\.\d+', root.findtext('version') or '')
    for maintainer in root.findall('maintainer'):
        assert re.fullmatch(r'[^@\s]+@[^@\s]+\.[^@\s]+', maintainer.get('email') or '')
    assert root.find('export/build_type') is not None


@pytest.mark.parametrize('name', sorted(MANIFESTS))
def test_catkin_pkg_validates(name):
    """catkin_pkg parses and validates the manifest as format 3."""
    package = pytest.importorskip('catkin_pkg.package', reason='catkin_pkg not installed')
    pkg = package.parse_package(str(MANIFESTS[name].parent))
    pkg.validate()
    assert pkg.name == name and pkg.package_format == 3


def test_python_package_matches_setup_py():
    """package.xml name/version/build type agree with setup.py; it depends on the msgs."""
    root = ET.parse(MANIFESTS['ros2_infmllm']).getroot()
    setup_py = (REPO / 'setup.py').read_text()
    assert f"version='{root.findtext('version')}'" in setup_py
    assert "package_name = 'ros2_infmllm'" in setup_py
    assert root.findtext('export/build_type') == 'ament_python'
    deps = {e.text for e in root if e.tag in ('depend', 'exec_depend')}
    assert {'ros2_infmllm_msgs', 'rclpy', 'sensor_msgs', 'std_srvs', 'lifecycle_msgs',
            'diagnostic_msgs'} <= deps
    assert (REPO / 'resource' / 'ros2_infmllm').is_file()


def test_interface_package_matches_cmakelists():
    """The msgs manifest declares every interface dependency that CMakeLists.txt uses."""
    root = ET.parse(MANIFESTS['ros2_infmllm_msgs']).getroot()
    cmake = (REPO / 'msg' / 'CMakeLists.txt').read_text()
    assert root.findtext('export/build_type') == 'ament_cmake'
    assert root.findtext('member_of_group') == 'rosidl_interface_packages'
    build_tools = {e.text for e in root.findall('buildtool_depend')}
    assert {'ament_cmake', 'rosidl_default_generators'} <= build_tools
    deps = {e.text for e in root.findall('depend')}
    declared = re.search(r'DEPENDENCIES([^)]*)\)', cmake).group(1).split()
    assert set(declared) <= deps, f'{set(declared) - deps} missing from package.xml'
    listed = re.findall(r'"((?:msg|srv|action)/\w+\.(?:msg|srv|action))"', cmake)
    on_disk = sorted(str(p.relative_to(REPO / 'msg')) for p in (REPO / 'msg').glob('*/*')
                     if p.suffix in ('.msg', '.srv', '.action'))
    assert sorted(listed) == on_disk
