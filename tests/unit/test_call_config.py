"""``[calls]`` configuration keys: defaults, validation, overrides keep them."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.config import CallsConfig, ConfigError, apply_overrides, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_without_a_calls_table() -> None:
    assert parse_config({}).calls == CallsConfig()


def test_shipped_config_has_the_calls_table() -> None:
    calls = load_config(ROOT / "config" / "switch.toml").calls
    assert calls.ring_timeout == 60 and calls.max_calls == 1000
    assert calls.media_timeout == 60 and calls.session_timer is True
    assert (calls.session_expires, calls.min_se, calls.shutdown_grace) == (1800, 90, 2)
    assert calls.max_duration == 0                    # unlimited


def test_values_are_read() -> None:
    calls = parse_config({"calls": {"ring_timeout": 20, "max_calls": 5, "media_timeout": 30,
                                    "session_timer": False, "session_expires": 600,
                                    "min_se": 120, "shutdown_grace": 1,
                                    "max_duration": 7200}}).calls
    assert calls == CallsConfig(ring_timeout=20, max_calls=5, media_timeout=30,
                                session_timer=False, session_expires=600, min_se=120,
                                shutdown_grace=1, max_duration=7200)


@pytest.mark.parametrize(("raw", "expected"), [
    ({"ring_timeout": 0}, "calls.ring_timeout: must be an integer 1-600"),
    ({"max_calls": "many"}, "calls.max_calls: must be an integer"),
    ({"min_se": 60}, "calls.min_se: must be an integer 90-86400"),
    ({"session_expires": 100, "min_se": 200}, "calls.session_expires: must be at least "
                                              "calls.min_se (200), got 100"),
    ({"session_timer": "yes"}, "calls.session_timer: must be true or false"),
    ({"shutdown_grace": 9}, "calls.shutdown_grace: must be an integer 0-8"),
    ({"max_duration": -1}, "calls.max_duration: must be an integer 0-604800 (0 = unlimited)"),
    ({"max_duration": 1.5}, "calls.max_duration: must be an integer"),
    ({"ring_timout": 5}, 'calls.ring_timout: unknown key (did you mean "ring_timeout"?)'),
])
def test_problems_name_the_key(raw: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"calls": raw})
    assert any(p.startswith(expected) for p in info.value.problems), info.value.problems


def test_overrides_keep_the_calls_table() -> None:
    config = parse_config({"calls": {"ring_timeout": 15, "max_duration": 60}})
    calls = apply_overrides(config, sip_port=5999).calls
    assert (calls.ring_timeout, calls.max_duration) == (15, 60)
