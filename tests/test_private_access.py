"""No module of the package reads another module's underscore attribute.

A name that starts with one underscore is private to the file that defines it. When
another file reads it, the two files are coupled through an internal that nobody
declared, and a change inside one silently breaks the other (issue 19). The rule checked
here over the AST of every package file:

- ``obj._name`` read on anything but ``self``/``cls`` needs ``_name`` defined in the same
  file (a def, a class attribute, or an assignment ``x._name = ...``; patching
  ``module.Class._name = ...`` defines nothing);
- ``from ros2_infmllm... import _name`` is not allowed at all.

Writes (``config._attn_implementation = ...``) are not reads and are not flagged.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ros2_infmllm"


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def defined_names(tree: ast.AST) -> set[str]:
    """Underscore names this file defines: functions, classes, attributes it assigns."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, (ast.Store, ast.Del)) \
                and isinstance(node.value, ast.Name):
            # obj._tag = ... tags an object this file holds; module.Class._x = ... patches
            # another module's private and defines nothing
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and _private(node.value) and node.value.isidentifier():
            names.add(node.value)    # setattr(obj, "_name", ...) / "_name" in obj.__dict__
    return {n for n in names if _private(n)}


def foreign_reads(source: str, filename: str = "<src>") -> list[str]:
    """Return ``line: expression`` for each read of an underscore name defined elsewhere."""
    tree = ast.parse(source, filename)
    own = defined_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load) \
                and _private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if node.attr not in own:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ros2_infmllm") \
                or isinstance(node, ast.ImportFrom) and node.level > 0:
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{node.lineno}: from {'.' * node.level}{node.module or ''} "
                                 f"import {alias.name}")
    return found


def test_the_rule_catches_a_foreign_private_read_and_import():
    src = ("from ros2_infmllm.accel.cuda_graph import _BROKEN\n"
           "def f(cache):\n    return cache._tally\n")
    assert foreign_reads(src) == [
        "1: from ros2_infmllm.accel.cuda_graph import _BROKEN", "3: cache._tally"]


def test_the_rule_catches_patching_another_modules_private():
    src = ("from ros2_infmllm.memory import cache as cache_mod\n"
           "real = cache_mod.BoundedCache._compact_stacked\n"
           "cache_mod.BoundedCache._compact_stacked = real\n")
    assert foreign_reads(src) == ["2: cache_mod.BoundedCache._compact_stacked"]


def test_the_rule_allows_own_privates_and_writes():
    src = ("class A:\n    _slot = 1\n    def f(self, other):\n"
           "        other._mode = 2\n        return self._x, other._slot, other._mode\n"
           "def g(config):\n    config._attn_implementation = 'x'\n")
    assert foreign_reads(src) == []


def test_no_package_module_reads_another_modules_private_attribute():
    offences = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for hit in foreign_reads(path.read_text(encoding="utf-8"), str(path)):
            offences.append(f"{path.relative_to(PACKAGE.parent)}:{hit}")
    assert offences == [], ("reads of underscore names that another file defines; add a "
                            "public method or property there instead:\n" + "\n".join(offences))
