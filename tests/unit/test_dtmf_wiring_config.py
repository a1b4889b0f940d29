"""Config of the DTMF wiring: ``[[users]] dtmf_mode`` and ``[features]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch.config import ConfigError, FeaturesConfig, apply_overrides, load_config, parse_config

USER = {"extension": "1001", "name": "Alice", "password": "secret1001"}


def problems(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


def test_defaults() -> None:
    config = parse_config({"users": [USER]})
    assert config.users[0].dtmf_mode == "auto"
    assert config.features == FeaturesConfig()
    assert dict(config.features.codes)["blind_transfer"] == "*1{number}#"


@pytest.mark.parametrize("mode", ["auto", "rfc4733", "inband", "info"])
def test_dtmf_mode_values(mode: str) -> None:
    assert parse_config({"users": [{**USER, "dtmf_mode": mode}]}).users[0].dtmf_mode == mode


def test_bad_dtmf_mode_names_the_key() -> None:
    assert problems({"users": [USER, {**USER, "extension": "1002", "dtmf_mode": "2833"}]}) == [
        'users[1].dtmf_mode: must be one of "auto", "rfc4733", "inband", "info", got "2833"']


def test_features_prefix_full_pattern_and_disabled() -> None:
    features = parse_config({"features": {
        "blind_transfer": "*7", "warm_transfer": "#8{number}*", "voicemail_transfer": "",
        "inter_digit_timeout": 5}}).features
    codes = dict(features.codes)
    assert codes["blind_transfer"] == "*7{number}#"
    assert codes["warm_transfer"] == "#8{number}*"
    assert "voicemail_transfer" not in codes
    assert codes["warm_transfer_complete"] == "*3"
    assert features.inter_digit_timeout == 5


@pytest.mark.parametrize(("features", "problem"), [
    ({"blind_transfer": "1x"}, "features.blind_transfer: must be DTMF digits"),
    ({"blind_transfer": 1}, "features.blind_transfer: must be a string"),
    ({"blind_transfer": "{number}#"}, "features.blind_transfer: must be DTMF digits"),
    ({"warm_transfer": "*2{number}1"}, "features.warm_transfer: must be DTMF digits"),
    ({"warm_transfer_cancel": "*1"}, 'features.warm_transfer_cancel: "*1" clashes with '
                                     'features.blind_transfer'),
    ({"warm_transfer": "*1"}, 'features.warm_transfer: "*1{number}#" clashes with '
                              'features.blind_transfer'),
    ({"inter_digit_timeout": 0}, "features.inter_digit_timeout: must be an integer 1-60"),
    ({"inter_digit_timeout": "3"}, "features.inter_digit_timeout: must be an integer 1-60"),
    ({"blind": "*9"}, "features.blind: unknown key"),
])
def test_bad_features_name_the_key(features: dict[str, object], problem: str) -> None:
    (line,) = problems({"features": features})
    assert line.startswith(problem), line


def test_overrides_keep_dtmf_settings(tmp_path: Path) -> None:
    path = tmp_path / "switch.toml"
    path.write_text('[features]\nblind_transfer = "*9"\nwarm_transfer = ""\n'
                    '[[users]]\nextension = "1001"\nname = "A"\npassword = "p"\n'
                    'dtmf_mode = "info"\n')
    config = apply_overrides(load_config(path), sip_port=5080)
    assert config.users[0].dtmf_mode == "info"
    assert dict(config.features.codes) == {
        "blind_transfer": "*9{number}#", "warm_transfer_complete": "*3",
        "warm_transfer_cancel": "*4", "voicemail_transfer": "*5{number}#"}


def test_shipped_config_has_the_documented_codes() -> None:
    config = load_config(Path(__file__).resolve().parents[2] / "config" / "switch.toml")
    assert config.features == FeaturesConfig()
