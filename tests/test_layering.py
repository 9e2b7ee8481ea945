"""Each module of the package imports only what its layer may (docs/architecture.md).

Dependencies point one way (ROS side -> engine -> accel -> models -> memory, eval on top,
nothing under it importing it); when a lower layer imports a higher one, a change up
there breaks code that was never meant to know it, and ROS creeps into code that must
run without it. The rules below are the table "What each part may import" in
docs/architecture.md (a test checks the two agree). Every ``import`` and ``from ...
import`` of every file under ros2_infmllm/ is read from its AST (inside functions and
``TYPE_CHECKING`` blocks too), plus ``importlib.import_module`` calls with a constant
name; relative imports are resolved against the file's package.

Inside a layer the modules must not import each other in a circle either (models/ once had
registry -> default -> gguf_cache -> registry): a circle works only by the order in which
the modules happen to load (imports moved into functions), and none of its files can be
read, tested or changed without the others.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ros2_infmllm"
ARCHITECTURE = REPO / "docs" / "architecture.md"

#: top-level module of ros2_infmllm -> its group (a new module must be given one here)
GROUP_OF = {
    "ros": "ros", "engine": "engine", "accel": "accel", "models": "models",
    "perception": "perception", "memory": "memory", "eval": "eval", "train": "eval",
}
GROUPS = ("ros", "engine", "accel", "models", "perception", "memory", "eval")

#: group -> (groups of the package it may import, whether it may import ROS)
RULES = {
    "ros": ({"ros", "engine"}, True),
    "engine": ({"engine", "accel", "models", "perception", "memory"}, False),
    "accel": ({"accel", "models", "perception", "memory"}, False),
    "models": ({"models", "perception", "memory"}, False),
    "perception": ({"perception"}, False),
    "memory": ({"memory"}, False),
    "eval": (set(GROUPS), True),
}

#: top-level names of ROS 2 client libraries and tools; ``*_msgs`` / ``*_srvs`` /
#: ``*_interfaces`` (message packages) count as ROS too
ROS_MODULES = {"rclpy", "rosbag2_py", "launch", "launch_ros", "ament_index_python",
               "rosidl_runtime_py", "cv_bridge", "message_filters", "tf2_ros"}


def is_ros(module: str) -> bool:
    """Whether an absolute module name belongs to ROS 2 (client library or messages)."""
    top = module.split(".")[0]
    return top in ROS_MODULES or top.endswith(("_msgs", "_srvs", "_interfaces"))


def group_of(module: str) -> str | None:
    """Group of a ``ros2_infmllm.*`` module name; None for the package root or one unknown."""
    parts = module.split(".")
    return GROUP_OF.get(parts[1]) if len(parts) > 1 else None


def imported(module: str, source: str, is_package: bool = False,
             submodules: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute module name)`` of every import in ``source`` of ``module``.

    ``from X import a, b`` yields ``X.a`` and ``X.b`` when X is this package (they may be
    submodules: ``from . import engine``), else ``X``; with ``submodules`` it yields them
    for any X of the package (the caller keeps those that are modules).
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if base == "ros2_infmllm" or base.startswith("ros2_infmllm.") and (
                    submodules or not node.module):
                found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, base))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "import_module" and node.args \
                and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            found.append((node.lineno, node.args[0].value))
    return sorted(found)


def violations(module: str, source: str, path: str = "", is_package: bool = False) -> list[str]:
    """Every import of ``module`` (its ``source``) that its group's rule forbids, one line each."""
    where = path or module
    group = group_of(module)
    if group is None:
        return [f"{where}: module {module} has no group: add its top-level name to "
                f"GROUP_OF in tests/test_layering.py and to docs/architecture.md"]
    allowed, ros_ok = RULES[group]
    out = []
    for line, name in imported(module, source, is_package):
        if name == "ros2_infmllm" or name.startswith("ros2_infmllm."):
            target = group_of(name)
            if target is not None and target not in allowed:
                out.append(f"{where}:{line}: {group} imports {name} ({target}); {group} may "
                           f"import only {', '.join(sorted(allowed))}")
        elif is_ros(name) and not ros_ok:
            out.append(f"{where}:{line}: {group} imports ROS module {name}; {group} must "
                       f"run without ROS")
    return out


def package_modules(root: Path = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every ``*.py`` under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        out[".".join(parts)] = (path, is_package)
    return out


def package_violations(root: Path = PACKAGE) -> list[str]:
    """Violations of every ``*.py`` under ``root`` (the ros2_infmllm package directory)."""
    out = []
    for module, (path, is_package) in package_modules(root).items():
        if "." not in module:                # ros2_infmllm/__init__.py: imports nothing
            continue
        rel = str(path.relative_to(root.parent))
        out += violations(module, path.read_text(), rel, is_package)
    return out


def import_edges(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (``from pkg import sub``: ``pkg.sub``)."""
    modules = package_modules(root)
    edges: dict[str, set[str]] = {}
    for module, (path, is_package) in modules.items():
        targets = set()
        for _, name in imported(module, path.read_text(), is_package, submodules=True):
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        edges[module] = targets
    return edges


def import_circles(edges: dict[str, set[str]]) -> list[str]:
    """Every import circle, one line each: ``a -> b -> ... -> a`` (shortest from ``a``)."""
    out, seen = [], set()
    for start in sorted(edges):
        paths, queue = {start: [start]}, [start]
        while queue:                        # breadth first: the shortest way back
            node = queue.pop(0)
            for nxt in sorted(edges.get(node, ())):
                if nxt == start:
                    circle = paths[node]
                    if frozenset(circle) not in seen:
                        seen.add(frozenset(circle))
                        out.append(" -> ".join(circle + [start]))
                    queue = []
                    break
                if nxt not in paths:
                    paths[nxt] = paths[node] + [nxt]
                    queue.append(nxt)
    return out


def test_every_module_imports_only_what_its_layer_may():
    """The whole package keeps the layering; the message lists every violation."""
    found = package_violations()
    assert not found, "layering violations:\n" + "\n".join(found)


def test_no_modules_import_each_other_in_a_circle():
    """Within each folder too, imports point one way; the message lists every circle."""
    found = import_circles(import_edges())
    assert not found, "import circles:\n" + "\n".join(found)


def _synthetic_package(root: Path, files: dict[str, str]) -> Path:
    """Write ``ros2_infmllm/<path>`` files under ``root``; return the package folder."""
    for rel, source in {"__init__.py": "", **files}.items():
        path = root / "ros2_infmllm" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    return root / "ros2_infmllm"


def test_the_check_reports_a_synthetic_circle_inside_a_folder(tmp_path):
    """models/ as it was: registry -> default -> cache -> registry, two imports in functions.

    The circle is reported once, from its first module; the layering alone finds nothing.
    """
    package = _synthetic_package(tmp_path, {
        "models/__init__.py": "from .registry import load\n",
        "models/base.py": "import torch\n",
        "models/registry.py": "from .base import E\ndef load():\n    from .default import f\n",
        "models/default.py": "from . import base\nfrom .cache import g\n",
        "models/cache.py": "def g():\n    from ros2_infmllm.models import registry\n",
        "memory/__init__.py": "",
    })
    assert not package_violations(package)
    assert import_circles(import_edges(package)) == [
        "ros2_infmllm.models.cache -> ros2_infmllm.models.registry -> "
        "ros2_infmllm.models.default -> ros2_infmllm.models.cache"]


def test_the_check_passes_imports_that_point_one_way(tmp_path):
    """The same modules with the name lookup moved below: no circle."""
    package = _synthetic_package(tmp_path, {
        "models/__init__.py": "from .registry import load\n",
        "models/base.py": "import torch\n",
        "models/names.py": "from .base import E\n",
        "models/registry.py": "from .base import E\nfrom .default import f\n",
        "models/default.py": "from . import base\nfrom .cache import g\n",
        "models/cache.py": "from ros2_infmllm.models import names\n",
    })
    edges = import_edges(package)
    assert edges["ros2_infmllm.models.cache"] == {"ros2_infmllm.models.names"}
    assert edges["ros2_infmllm.models.default"] == {"ros2_infmllm.models.base",
                                                    "ros2_infmllm.models.cache"}
    assert import_circles(edges) == []


def test_the_check_reports_every_violation_of_a_synthetic_module():
    """A memory module importing ROS, models, eval and (by name) the engine: four lines."""
    src = ("import rclpy\n"
           "from ..models import base\n"
           "def f():\n"
           "    from ros2_infmllm.eval.common import build_policy\n"
           "    import importlib\n"
           "    return importlib.import_module('ros2_infmllm.engine')\n"
           "from . import rope\n"
           "import torch\n")
    assert violations("ros2_infmllm.memory.bad", src) == [
        "ros2_infmllm.memory.bad:1: memory imports ROS module rclpy; memory must run "
        "without ROS",
        "ros2_infmllm.memory.bad:2: memory imports ros2_infmllm.models (models); memory may "
        "import only memory",
        "ros2_infmllm.memory.bad:4: memory imports ros2_infmllm.eval.common (eval); memory "
        "may import only memory",
        "ros2_infmllm.memory.bad:6: memory imports ros2_infmllm.engine (engine); memory may "
        "import only memory"]


def test_the_check_knows_each_layers_limits():
    """Models may not reach accel or the engine, accel not the engine, the engine not the
    node, the node not memory directly; message packages count as ROS; eval may do all."""
    assert violations("ros2_infmllm.models.x", "from ..accel import cuda_graph\n")
    assert violations("ros2_infmllm.accel.x", "from ros2_infmllm import engine\n")
    assert violations("ros2_infmllm.engine.runner", "from ..ros import node\n")
    assert violations("ros2_infmllm.engine.session", "from sensor_msgs.msg import Image\n")
    assert violations("ros2_infmllm.ros.node", "from ..memory import BoundedCache\n")
    assert violations("ros2_infmllm.engine.heap", "import rclpy\n")
    assert violations("ros2_infmllm.newthing", "") == [
        "ros2_infmllm.newthing: module ros2_infmllm.newthing has no group: add its top-level "
        "name to GROUP_OF in tests/test_layering.py and to docs/architecture.md"]
    assert not violations("ros2_infmllm.eval.bench.runs",
                          "import rclpy\nfrom ...accel import cuda_graph\n"
                          "from ...ros import node\n")
    assert not violations("ros2_infmllm.accel", "from ..models.base import Chunk\n",
                          is_package=True)
    assert not violations("ros2_infmllm.ros.node",
                          "from .. import engine\nfrom . import arrival\n")


def test_the_check_resolves_relative_imports_of_packages_and_modules():
    """``from .x`` in a package's __init__ is a submodule of it; in a module, a sibling."""
    assert imported("ros2_infmllm.memory", "from .cache import A\n", is_package=True) == [
        (1, "ros2_infmllm.memory.cache")]
    assert imported("ros2_infmllm.memory.cache", "from .rope import A\n") == [
        (1, "ros2_infmllm.memory.rope")]
    assert imported("ros2_infmllm.memory.policies.base", "from ...models import b\n") == [
        (1, "ros2_infmllm.models")]


def _docs_table() -> dict[str, tuple[set[str], bool]]:
    """The 'may import' and 'ROS' columns of docs/architecture.md's layering table."""
    text = ARCHITECTURE.read_text()
    table = text[text.index("## What each part may import"):]
    rows = {}
    for line in table.splitlines()[1:]:
        if line.startswith("## "):
            break
        cells = [re.sub(r"[`*]", "", c).strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] in GROUPS:
            rows[cells[0]] = ({g.strip() for g in cells[2].split(",")}, cells[3] == "yes")
    return rows


def test_the_architecture_doc_states_these_rules():
    """docs/architecture.md's table has one row per group, with the rules checked here."""
    assert _docs_table() == RULES
