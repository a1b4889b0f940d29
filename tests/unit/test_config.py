"""Configuration loading and validation (switch.config), and `switch check-config`."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

from switch.config import (
    Config,
    ConfigError,
    apply_overrides,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "config" / "switch.toml"


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(tomllib.loads(text))
    return info.value.problems


def user(ext: str, *, numbers: str = "[]", extra: str = "") -> str:
    return (f'[[users]]\nextension = "{ext}"\nname = "U{ext}"\npassword = "pw{ext}"\n'
            f"numbers = {numbers}\n{extra}\n")


# ------------------------------------------------------------------ shipped default


def test_shipped_config_is_valid_and_has_demo_users() -> None:
    config = load_config(SHIPPED)
    assert [(u.extension, u.name) for u in config.users] == [
        ("1001", "Alice"), ("1002", "Bob"), ("1003", "Carol")]
    assert config.http.host == "127.0.0.1"
    assert config.http.port == 8080
    assert config.sip.auth_algorithms == ("MD5",)
    assert config.data_dir == Path("./var")
    assert config.storage_path == Path("./var/switch.db")
    assert config.source == SHIPPED


def test_shipped_config_sets_every_key_explicitly() -> None:
    # The shipped file documents every key: each one is written out there.
    raw = tomllib.loads(SHIPPED.read_text())
    defaults = Config()
    for section in ("sip", "http", "media", "storage", "log"):
        fields = type(getattr(defaults, section)).__dataclass_fields__
        assert set(raw[section]) == set(fields), section


def test_empty_file_gives_defaults() -> None:
    config = parse_config({})
    assert config.sip.port == 5060
    assert config.sip.realm == "switch.local"
    assert config.http.token is None
    assert config.users == ()
    assert config.sip.t1_seconds == 0.5


# ------------------------------------------------------------------ every problem names its key


@pytest.mark.parametrize(("text", "expected"), [
    ('[sip]\nport = "abc"',
     'sip.port: must be an integer 0-65535 (0 = pick a free port), got "abc"'),
    ("[sip]\nport = 70000", "sip.port: must be an integer 0-65535"),
    ("[sip]\nport = true", "sip.port: must be an integer 0-65535 (0 = pick a free port), got true"),
    ("[sip]\nhost = 5", "sip.host: must be a string, got 5"),
    ('[sip]\nhost = "not a host!"', 'sip.host: must be an IP address or host name'),
    ('[sip]\nrealm = ""', "sip.realm: must not be empty"),
    ('[sip]\nrealm = "a\\"b"', "sip.realm: must not contain quotes"),
    ('[sip]\nauth_algorithms = ["MD5", "SHA-1"]', 'sip.auth_algorithms[1]: must be one of'),
    ('[sip]\nauth_algorithms = []', "sip.auth_algorithms: must be a non-empty array"),
    ('[sip]\nauth_algorithms = ["MD5", "MD5"]', 'sip.auth_algorithms[1]: duplicate "MD5"'),
    ("[sip]\nnonce_lifetime = 0", "sip.nonce_lifetime: must be an integer"),
    ("[sip]\nmin_expires = 600\nmax_expires = 60", "sip.max_expires: must be at least "
                                                    "sip.min_expires (600), got 60"),
    ("[sip]\ndefault_expires = 30", "sip.default_expires: must be between sip.min_expires"),
    ("[sip]\nmax_message_size = 10", "sip.max_message_size: must be an integer"),
    ("[sip]\nmax_headers = -1", "sip.max_headers: must be an integer"),
    ("[sip]\nauth_failure_limit = 0", "sip.auth_failure_limit: must be an integer"),
    ('[sip]\nauth_failure_window = "1m"', "sip.auth_failure_window: must be an integer"),
    ("[sip]\nauth_block_seconds = -5", "sip.auth_block_seconds: must be an integer"),
    ('[sip]\nuser_agent = "a\\nb"', "sip.user_agent: must not contain control characters"),
    ("[sip]\nt1 = 0", "sip.t1: must be an integer 1-60000 (milliseconds), got 0"),
    ("[sip]\nt1 = 500\nt2 = 100", "sip.t2: must be at least sip.t1 (500 ms), got 100"),
    ("[sip]\nt4 = 1.5", "sip.t4: must be an integer"),
    ('[http]\nport = "x"', 'http.port: must be an integer 0-65535'),
    ('[http]\ntoken = "short"', "http.token: must be at least 8 characters"),
    ('[http]\ntoken = "has space in it"', "http.token: must not contain spaces"),
    ("[http]\nevent_queue_size = 0", "http.event_queue_size: must be an integer"),
    ('[media]\nhost = "0.0.0.0"', 'media.host: must be an address peers can reach, not "0.0.0.0"'),
    ('[media]\nhost = "phones.example"', "media.host: must be an IP address"),
    ("[media]\nrtp_port_min = 30000\nrtp_port_max = 20000",
     "media.rtp_port_max: must be greater than media.rtp_port_min (30000), got 20000"),
    ("[media]\nrtp_port_min = 0", "media.rtp_port_min: must be an integer 1-65535, got 0"),
    ('[storage]\npath = ""', "storage.path: must not be empty"),
    ('[log]\nformat = "xml"', 'log.format: must be one of "json", "console", got "xml"'),
    ('[log]\nlevel = "trace"', 'log.level: must be one of'),
    ("data_dir = 3", "data_dir: must be a string, got 3"),
    ("sip = 3", "sip: must be a table ([sip]), got 3"),
    ("[users]\nextension = '1'", "users: must be an array of tables ([[users]]), got a table"),
    ('[[users]]\nname = "A"\npassword = "p"', "users[0].extension: missing (required)"),
    ('[[users]]\nextension = "1001"\npassword = "p"', "users[0].name: missing (required)"),
    ('[[users]]\nextension = "1001"\nname = "A"', "users[0].password: missing (required)"),
    ('[[users]]\nextension = 1001\nname = "A"\npassword = "p"',
     'users[0].extension: must be a string of digits (quote it: "1001"), got 1001'),
    ('[[users]]\nextension = "10a1"\nname = "A"\npassword = "p"',
     'users[0].extension: must be a string of 1-15 digits, got "10a1"'),
    ('[[users]]\nextension = "1001"\nname = ""\npassword = "p"',
     "users[0].name: must not be empty"),
    ('[[users]]\nextension = "1001"\nname = "A"\npassword = "p"\nvoicemail = "yes"',
     'users[0].voicemail: must be true or false, got "yes"'),
    ('[[users]]\nextension = "1001"\nname = "A"\npassword = "p"\nnumbers = "+1415"',
     "users[0].numbers: must be an array"),
    ('[[users]]\nextension = "1001"\nname = "A"\npassword = "p"\nnumbers = ["+1", "555-0101"]',
     'users[0].numbers[1]: must be 1-15 digits with an optional leading "+" (E.164), '
     'got "555-0101"'),
])
def test_problem_names_key(text: str, expected: str) -> None:
    problems = problems_of(text)
    assert any(p.startswith(expected) for p in problems), problems


def test_duplicate_extension_message_is_exact() -> None:
    text = user("1001") + user("1002") + user("1002")
    assert problems_of(text) == ['users[2].extension: duplicate "1002"']


def test_numbers_are_unique_across_users_with_or_without_plus() -> None:
    text = user("1001", numbers='["+14155550101"]') + user("1002", numbers='["14155550101"]')
    assert problems_of(text) == ['users[1].numbers[0]: duplicate "14155550101"']


def test_number_may_not_shadow_an_extension() -> None:
    text = user("1001") + user("1002", numbers='["+1001"]')
    assert problems_of(text) == [
        'users[1].numbers[0]: "+1001" is already the extension of users[0]']
    text = user("1002", numbers='["1001"]') + user("1001")
    assert problems_of(text) == ['users[1].extension: "1001" is already a number of users[0]']


def test_unknown_keys_are_errors_with_a_suggestion() -> None:
    problems = problems_of('prot = 1\n[sip]\nprot = 5070\n[http]\ntokn = "abcdefgh"\n'
                           + user("1001", extra="voicemial = false") + "[trunks]\nx = 1\n")
    assert 'sip.prot: unknown key (did you mean "port"?)' in problems
    assert 'http.tokn: unknown key (did you mean "token"?)' in problems
    assert 'users[0].voicemial: unknown key (did you mean "voicemail"?)' in problems
    assert "trunks: unknown key" in problems
    assert any(p.startswith("prot: unknown key") for p in problems)


def test_all_problems_are_collected() -> None:
    problems = problems_of('[sip]\nport = "a"\nrealm = ""\n[http]\nport = -1\n'
                           '[log]\nformat = "x"\n' + user("1") + user("1"))
    keys = [p.partition(":")[0] for p in problems]
    assert keys == ["sip.port", "sip.realm", "http.port", "log.format", "users[1].extension"]


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[sip\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith(f"{bad}: invalid TOML: ")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.problems == [
        f"{tmp_path / 'nope.toml'}: cannot read: No such file or directory"]


# ------------------------------------------------------------------ values


def test_routing_lookup_by_extension_and_number() -> None:
    config = parse_config(tomllib.loads(
        user("1001", numbers='["+14155550101"]') + user("1002", numbers='["4930123"]')))
    alice = config.user("1001")
    assert alice is not None
    assert config.lookup("1001") is alice
    assert config.lookup("+14155550101") is alice
    assert config.lookup("14155550101") is alice
    assert config.lookup("+4930123") is config.lookup("4930123") is config.user("1002")
    assert config.lookup("9999") is None
    assert config.user("14155550101") is None  # a number is not an extension


def test_secrets_are_not_in_repr() -> None:
    config = parse_config(tomllib.loads('[http]\ntoken = "supersecrettoken"\n' + user("1001")))
    assert "supersecrettoken" not in repr(config)
    assert "pw1001" not in repr(config)


def test_storage_path_absolute_is_kept() -> None:
    config = parse_config({"storage": {"path": "/srv/switch/db.sqlite"}})
    assert config.storage_path == Path("/srv/switch/db.sqlite")


# ------------------------------------------------------------------ overrides


def test_overrides_apply() -> None:
    config = apply_overrides(load_config(SHIPPED), data_dir="/tmp/x", sip_host="127.0.0.2",
                             sip_port="0", http_host="::1", http_port=9000,
                             rtp_ports="30000-30099", log_format="console", log_level=None)
    assert config.data_dir == Path("/tmp/x")
    assert (config.sip.host, config.sip.port) == ("127.0.0.2", 0)
    assert (config.http.host, config.http.port) == ("::1", 9000)
    assert (config.media.rtp_port_min, config.media.rtp_port_max) == (30000, 30099)
    assert config.log.format == "console"
    assert config.log.level == "info"
    assert len(config.users) == 3
    assert config.lookup("+14155550102") == config.user("1002")


def test_bad_overrides_name_the_flag() -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(load_config(SHIPPED), sip_port="abc", http_port="99999",
                        rtp_ports="20000", log_format="xml")
    assert sorted(info.value.problems) == sorted([
        '--sip-port (sip.port): must be an integer 0-65535 (0 = pick a free port), got "abc"',
        "--http-port (http.port): must be an integer 0-65535 (0 = pick a free port), got 99999",
        '--rtp-ports: must be MIN-MAX (e.g. 20000-20999), got "20000"',
        '--log-format (log.format): must be one of "json", "console", got "xml"',
    ])
    with pytest.raises(ConfigError) as info:
        apply_overrides(load_config(SHIPPED), rtp_ports="20999-20000")
    assert info.value.problems == [
        "--rtp-ports (media.rtp_port_max): must be greater than media.rtp_port_min (20999), "
        "got 20000"]


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        apply_overrides(Config(), sip_prot="1")


# ------------------------------------------------------------------ switch check-config


def check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "switch", "check-config", str(path)],
                          capture_output=True, text=True, check=False)


def test_check_config_valid_exits_0() -> None:
    result = check_config(SHIPPED)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_check_config_invalid_exits_1_one_line_per_problem(
        write_config: Callable[..., Path]) -> None:
    path = write_config('[sip]\nport = "abc"\nprot = 1\n' + user("1001") + user("1002")
                        + user("1002"))
    result = check_config(path)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        'sip.port: must be an integer 0-65535 (0 = pick a free port), got "abc"',
        'sip.prot: unknown key (did you mean "port"?)',
        'users[2].extension: duplicate "1002"',
    ]
    assert "Traceback" not in result.stderr


def test_check_config_unreadable_file_exits_1(tmp_path: Path) -> None:
    result = check_config(tmp_path / "missing.toml")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1
    assert "missing.toml: cannot read" in result.stderr
