"""Shared fixtures for the edge tests (config files, promtool)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

TOKEN = "test-token-123"

# The smallest config the engine runs with in tests: loopback, free ports.
MINIMAL_CONFIG = f"""
[sip]
host = "127.0.0.1"
port = 0

[http]
host = "127.0.0.1"
port = 0
token = "{TOKEN}"

[[users]]
extension = "1001"
name = "Alice"
password = "secret1001"
numbers = ["+14155550101"]
"""


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[..., Path]:
    """Write TOML text to a file under tmp_path and return its path."""

    def write(text: str = MINIMAL_CONFIG, name: str = "switch.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def promtool_check() -> Callable[[bytes], None]:
    """A checker running `promtool check metrics`; missing promtool fails in CI, skips locally."""
    return _promtool_check


def _promtool_check(exposition: bytes) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("promtool is required in CI (Debian package: prometheus)")
        pytest.skip("promtool not installed")
    result = subprocess.run([promtool, "check", "metrics"], input=exposition,
                            capture_output=True, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
