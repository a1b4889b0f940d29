"""switch/dtmf is sans-I/O (DESIGN.md rule 1): no asyncio, socket, clock or print."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "switch" / "dtmf"
FORBIDDEN_MODULES = {"asyncio", "socket", "time", "datetime", "subprocess", "threading"}


def test_no_io_imports_no_clock_no_print() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert files
    for path in files:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                names = set()
            assert not names & FORBIDDEN_MODULES, f"{path.name} imports {names & FORBIDDEN_MODULES}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "print", f"print in {path.name}"
        assert "from __future__ import annotations" in path.read_text(), path.name
