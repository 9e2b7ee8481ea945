"""ros/ holds ROS only: no file I/O in any of its files (issue 38).

Why: the node translates ROS to engine calls and back. Snapshots, the question journal
and every other file the node's work needs are the engine's (engine/persistence.py), where
the offline tools use them too and tests reach them without rclpy. Read from the AST of
every file under ros2_infmllm/ros: a call that opens, writes, renames, links or removes a
file, or reads/writes JSON through a file, is a finding. Looking a file up (``is_file``,
``shutil.which``) is not I/O.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROS = Path(__file__).resolve().parents[2] / "ros2_infmllm" / "ros"
#: name of the called function -> the modules (or any object: '*') it is I/O of
FORBIDDEN = {
    "open": "*", "fdopen": {"os"}, "replace": {"os"}, "rename": {"os"}, "link": {"os"},
    "symlink": {"os"}, "unlink": "*", "remove": {"os"}, "truncate": {"os"},
    "makedirs": {"os"}, "mkdir": "*", "rmdir": "*", "write": {"os"},
    "read_text": "*", "write_text": "*", "read_bytes": "*", "write_bytes": "*", "touch": "*",
    "dump": {"json", "pickle", "yaml"}, "load": {"json", "pickle", "yaml", "torch"},
    "copy": {"shutil"}, "copyfile": {"shutil"}, "copy2": {"shutil"}, "move": {"shutil"},
    "rmtree": {"shutil"}, "mkstemp": {"tempfile"}, "NamedTemporaryFile": {"tempfile"},
    "save": {"torch", "np", "numpy"},
}


def file_io_calls(source: str, name: str = "<src>") -> list[str]:
    """``file:line call`` for every file I/O call in ``source``."""
    found = []
    calls = [n for n in ast.walk(ast.parse(source, name)) if isinstance(n, ast.Call)]
    for node in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name):
            called, owner = func.id, ""
        elif isinstance(func, ast.Attribute):
            called = func.attr
            owner = func.value.id if isinstance(func.value, ast.Name) else ""
        else:
            continue
        allowed = FORBIDDEN.get(called)
        if allowed is None:
            continue
        if isinstance(func, ast.Name) and called != "open":
            continue        # a bare name other than open() is the file's own function
        if allowed == "*" or owner in allowed:
            found.append(f"{name}:{node.lineno} {ast.unparse(func)}()")
    return found


def test_no_file_io_in_ros():
    found = [hit for path in sorted(ROS.glob("*.py"))
             for hit in file_io_calls(path.read_text(), path.name)]
    assert not found, f"file I/O in ros/ (belongs in the engine): {found}"


def test_the_check_finds_file_io():
    """The check can fail: each way of touching a file in a synthetic source is found."""
    source = "\n".join([
        "import os, json, shutil",
        "from pathlib import Path",
        "def f(p):",
        "    with open(p) as fh:",
        "        json.dump({}, fh)",
        "    os.replace(p, p + '.x')",
        "    Path(p).write_text('x')",
        "    shutil.rmtree(p)",
        "    Path(p).is_file()",
        "    shutil.which('ls')",
    ])
    found = file_io_calls(source)
    assert [h.split()[1] for h in found] == [
        "open()", "json.dump()", "os.replace()", "Path(p).write_text()", "shutil.rmtree()"]
