"""Fixtures for the interop tests: an engine subprocess per test, peer helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .harness import Engine, User, default_users, require_binary


@pytest.fixture
def engine_factory(tmp_path: Path) -> Iterator[Callable[..., Engine]]:
    """Build (not start) engines; every one is stopped at teardown, exit 0 asserted."""
    engines: list[Engine] = []

    def make(name: str = "engine", **kwargs: Any) -> Engine:
        eng = Engine(tmp_path / name, **kwargs)
        engines.append(eng)
        return eng

    yield make
    errors: list[str] = []
    for eng in engines:
        try:
            if eng.running:
                eng.stop()
        except AssertionError as exc:
            errors.append(str(exc))
        finally:
            if eng.running:
                eng.kill()
    if errors:
        pytest.fail("\n\n".join(errors), pytrace=False)


@pytest.fixture
def engine(engine_factory: Callable[..., Engine]) -> Engine:
    """A running engine with users 1001..1005 (password ``secret<ext>``)."""
    return engine_factory().start()


@pytest.fixture
def users() -> list[User]:
    return default_users()


@pytest.fixture
def peer_dir(tmp_path: Path) -> Path:
    path = tmp_path / "peers"
    path.mkdir()
    return path


@pytest.fixture
def sipp_binary() -> str:
    return require_binary("sipp")
