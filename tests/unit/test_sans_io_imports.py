"""DESIGN.md rule 1 and 2: the protocol core never does I/O and never reads a clock.

Walks switch/sip (but transport/), switch/transfer and switch/dtmf and checks,
on the AST, that no module imports asyncio/socket/selectors and that none
calls time.time / time.monotonic (or their _ns / perf_counter siblings),
however imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "switch"
CORE_DIRS = [ROOT / "sip", ROOT / "transfer", ROOT / "dtmf"]
EXCLUDED = [ROOT / "sip" / "transport"]
FORBIDDEN_MODULES = {"asyncio", "socket", "selectors", "ssl", "uvloop"}
CLOCKS = {"time", "monotonic", "time_ns", "monotonic_ns", "perf_counter", "perf_counter_ns"}


def core_modules() -> list[Path]:
    files: list[Path] = []
    for directory in CORE_DIRS:
        if not directory.is_dir():
            continue
        for path in sorted(directory.rglob("*.py")):
            if not any(path.is_relative_to(excluded) for excluded in EXCLUDED):
                files.append(path)
    return files


def violations(source: str) -> list[str]:
    tree = ast.parse(source)
    found: list[str] = []
    time_aliases: set[str] = set()      # names bound to the time module
    clock_names: set[str] = set()       # names bound to a clock function
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in FORBIDDEN_MODULES:
                    found.append(f"line {node.lineno}: import {alias.name}")
                if alias.name == "time":
                    time_aliases.add(alias.asname or "time")
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            top = node.module.split(".")[0]
            if top in FORBIDDEN_MODULES:
                found.append(f"line {node.lineno}: from {node.module} import ...")
            if node.module == "time":
                for alias in node.names:
                    if alias.name in CLOCKS:
                        clock_names.add(alias.asname or alias.name)
                        found.append(f"line {node.lineno}: from time import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if (isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name)
                    and func.value.id in time_aliases and func.attr in CLOCKS):
                found.append(f"line {node.lineno}: {func.value.id}.{func.attr}()")
            elif isinstance(func, ast.Name) and func.id in clock_names:
                found.append(f"line {node.lineno}: {func.id}()")
    return found


def test_the_walk_finds_the_core() -> None:
    names = {path.name for path in core_modules()}
    assert {"transaction.py", "endpoint.py", "timers.py", "parser.py"} <= names
    assert not any("transport" in path.parts for path in core_modules())


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_is_sans_io(path: Path) -> None:
    assert violations(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("source", [
    "import asyncio",
    "import socket as s",
    "from asyncio import get_running_loop",
    "import selectors",
    "import time\ntime.time()",
    "import time as t\nt.monotonic()",
    "from time import monotonic\nmonotonic()",
    "from time import perf_counter as pc\npc()",
])
def test_the_checker_catches(source: str) -> None:
    assert violations(source)


def test_the_checker_allows_harmless_code() -> None:
    assert violations("import heapq\nfrom dataclasses import dataclass\nx = 1") == []
