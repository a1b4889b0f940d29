"""Logging (switch.logs): JSON lines, call_id binding, no secrets."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import given, settings
from hypothesis import strategies as st

import switch.logs as _logs
from switch.logs import REDACTED, call_context, configure_logging, get_logger


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("json", "info", stream=out)
    yield out
    structlog.reset_defaults()
    for handler in list(logging.getLogger().handlers):
        if getattr(handler, "_switch_handler", False):
            logging.getLogger().removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_line_has_timestamp_level_event_logger(stream: io.StringIO) -> None:
    get_logger("switch.test").info("thing.happened", n=1)
    (line,) = lines(stream)
    assert line["event"] == "thing.happened"
    assert line["level"] == "info"
    assert line["logger"] == "switch.test"
    assert line["n"] == 1
    assert str(line["timestamp"]).endswith("Z")


def test_level_filter(stream: io.StringIO) -> None:
    log = get_logger("t")
    log.debug("hidden")
    log.warning("shown")
    assert [line["event"] for line in lines(stream)] == ["shown"]


def test_call_id_is_bound_in_call_context(stream: io.StringIO) -> None:
    log = get_logger("t")
    with call_context("abc@host"):
        log.info("inside")
    log.info("outside")
    inside, outside = lines(stream)
    assert inside["call_id"] == "abc@host"
    assert "call_id" not in outside


def test_secrets_are_redacted(stream: io.StringIO) -> None:
    raw = ('REGISTER sip:x SIP/2.0\r\nAuthorization: Digest username="1001", '
           'realm="r", nonce="n", uri="sip:x", response="6629fae49393a05397450978507c4ef1"\r\n')
    get_logger("t").info(
        "sip.received", password="hunter2", secret="s3", token="tok", Authorization="Digest x",
        raw=raw, headers={"Proxy-Authorization": "Digest y", "Via": "ok"},
        url="/api/v1/events?token=abcdefgh", auth_header="Bearer abcdefgh")
    text = stream.getvalue()
    for leaked in ("hunter2", "s3\"", "tok\"", "6629fae49393a05397450978507c4ef1", "Digest y",
                   "abcdefgh"):
        assert leaked not in text, leaked
    (line,) = lines(stream)
    assert line["password"] == REDACTED
    assert line["headers"] == {"Proxy-Authorization": REDACTED, "Via": "ok"}
    assert 'username="1001"' in str(line["raw"])


def test_tracebacks_carry_no_locals(stream: io.StringIO) -> None:
    password = "hunter2"  # noqa: F841 - a local the traceback must not show
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        get_logger("t").exception("failed")
    assert "hunter2" not in stream.getvalue()
    (line,) = lines(stream)
    assert line["level"] == "error"


def test_stdlib_records_become_json_lines(stream: io.StringIO) -> None:
    logging.getLogger("aiohttp.server").error("bad request from %s", "peer")
    (line,) = lines(stream)
    assert line["event"] == "bad request from peer"
    assert line["logger"] == "aiohttp.server"


# --- the batched writer (the real process) ---------------------------------------


class _CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def test_batched_writer_without_a_loop_writes_each_line_at_once() -> None:
    from switch.logs import _BatchedWriter

    out = _CountingStream()
    writer = _BatchedWriter(out)
    writer.write('{"event": "a"}')
    assert [line["event"] for line in lines(out)] == ["a"]
    writer.write('{"event": "b"}')
    assert out.writes == 2


async def test_batched_writer_on_the_loop_writes_an_iteration_in_one_write() -> None:
    import asyncio

    from switch.logs import _BatchedWriter

    out = _CountingStream()
    writer = _BatchedWriter(out)
    for i in range(100):
        writer.write(json.dumps({"event": "n", "i": i}))
    assert out.writes == 0  # queued until the iteration ends
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert out.writes == 1
    assert [line["i"] for line in lines(out)] == list(range(100))


async def test_batched_writer_with_a_delay_writes_the_window_in_one_write() -> None:
    import asyncio

    from switch.logs import _BatchedWriter

    out = _CountingStream()
    writer = _BatchedWriter(out, delay=0.05)
    writer.write(json.dumps({"event": "n", "i": 0}))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    writer.write(json.dumps({"event": "n", "i": 1}))      # a later iteration, same window
    assert out.writes == 0
    for _ in range(200):                                   # no timing assertion: just wait
        if out.writes:
            break
        await asyncio.sleep(0.01)
    assert out.writes == 1
    assert [line["i"] for line in lines(out)] == [0, 1]
    writer.write(json.dumps({"event": "n", "i": 2}))      # the next window
    writer.flush()
    assert out.writes == 2 and [line["i"] for line in lines(out)] == [0, 1, 2]


async def test_batched_writer_bounds_what_waits_and_keeps_order_across_threads() -> None:
    import asyncio

    from switch.logs import _BatchedWriter

    out = _CountingStream()
    writer = _BatchedWriter(out, max_pending=10)
    for i in range(25):
        writer.write(json.dumps({"event": "n", "i": i}))
    assert out.writes == 2  # forced at 10 and 20 pending
    # a line from another thread goes out at once, after what was queued
    await asyncio.to_thread(writer.write, json.dumps({"event": "n", "i": 25}))
    assert [line["i"] for line in lines(out)] == list(range(26))
    await asyncio.sleep(0)
    assert [line["i"] for line in lines(out)] == list(range(26))


def test_configure_logging_in_background_mode_routes_structlog_and_stdlib(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import switch.logs as logs

    out = io.StringIO()
    monkeypatch.setattr(logs, "_background", None)
    try:
        configure_logging("json", "info", stream=out, background=True)
        get_logger("switch.test").info("from.structlog")
        logging.getLogger("aiohttp.server").warning("from stdlib")
        events = [line["event"] for line in lines(out)]
        assert events == ["from.structlog", "from stdlib"]
    finally:
        structlog.reset_defaults()
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_switch_handler", False):
                logging.getLogger().removeHandler(handler)


def test_timestamp_is_iso_utc_with_microseconds_and_follows_the_clock(
        stream: io.StringIO) -> None:
    import re
    import time

    log = get_logger("t")
    log.info("one")
    time.sleep(1.01)  # crosses a second: the cached date-time part is renewed
    log.info("two")
    first, second = (str(line["timestamp"]) for line in lines(stream))
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    assert pattern.match(first) and pattern.match(second)
    assert first[:19] != second[:19] and first < second


# --- the fast paths agree with the plain processors ------------------------------


def _reference_scrub(value: object) -> object:
    """The redaction as first written: every key and every string on its own."""
    if isinstance(value, str):
        if _logs._SCRUB_HINT.search(value) is None:
            return value
        for pattern, replacement in _logs._SCRUB_RES:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _reference_secret(k)
                else _reference_scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reference_scrub(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return _reference_scrub(bytes(value).decode("utf-8", "replace"))
    return value


def _reference_secret(key: str) -> bool:
    return key.lower().replace("-", "_") in _logs._SECRET_KEYS


def _reference_redact(event_dict: dict[str, object]) -> dict[str, object]:
    return {k: REDACTED if _reference_secret(k) else _reference_scrub(v)
            for k, v in event_dict.items()}


_KEYS = st.sampled_from(["event", "caller", "raw", "Authorization", "PASSWORD", "api-token",
                         "headers", "n", "response", "Proxy-Authorization", "url", "x"])
_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(['response="abc"', "RESPONSE = x1", "Bearer t0k", "bEaReR  q",
                     "/a?token=zz&b=1", "reſponse=abc", "Token=", "respons", "ok",
                     'Digest username="u", response="66", nonce="n"', "call.created"]),
    st.builds(lambda a, b: a + b, st.text(max_size=8),
              st.sampled_from(["response=1", "bearer 2", "token=3", "RESPonse=\"4\""])),
)
_SCALAR = st.one_of(_TEXT, st.integers(), st.floats(allow_nan=False), st.booleans(),
                    st.none(), st.binary(max_size=12).map(lambda b: b + b"response=9"))
_VALUE = st.recursive(_SCALAR, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner),
    st.dictionaries(_KEYS, inner, max_size=3)), max_leaves=6)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_KEYS, _VALUE, max_size=8))
def test_redaction_fast_path_agrees_with_the_plain_one(event_dict: dict[str, object]) -> None:
    expected = _reference_redact(dict(event_dict))
    got = _logs.redact_secrets(None, "info", dict(event_dict))
    assert got == expected
    assert list(got) == list(expected)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_KEYS, _VALUE, max_size=6),
       st.sampled_from(["info", "warning", "warn", "error", "exception", "debug"]),
       st.one_of(st.none(), st.sampled_from(["abc@host", "response=1@h"])))
def test_line_processor_agrees_with_its_chain(
        event_dict: dict[str, object], method: str, call_id: str | None) -> None:
    now = 1_700_000_000.123456
    chain = [*_logs._shared_processors(), structlog.stdlib.add_logger_name,
             structlog.processors.StackInfoRenderer(), _logs.redact_secrets]
    fast = _logs._line_processor(chain)
    logger = _logs._StreamLogger(io.StringIO(), "switch.token=x")
    original_time = _logs.time.time
    _logs.time.time = lambda: now  # type: ignore[assignment]
    try:
        with call_context(call_id) if call_id else contextlib.nullcontext():
            expected: object = dict(event_dict, event="e")
            for proc in chain:
                expected = proc(logger, method, expected)  # type: ignore[arg-type]
            got = fast(logger, method, dict(event_dict, event="e"))
    finally:
        _logs.time.time = original_time  # type: ignore[method-assign]
    assert got == expected
    assert list(got) == list(expected)  # type: ignore[call-overload]


def test_line_processor_takes_the_chain_for_tracebacks_stacks_and_bound_contextvars(
        stream: io.StringIO) -> None:
    log = get_logger("t")
    with call_context("abc@host", user="u1"):
        log.info("with.extra", stack_info=True)
    try:
        raise ValueError("response=secret1")
    except ValueError:
        log.exception("failed", token="t")
    first, second = lines(stream)
    assert first["call_id"] == "abc@host" and first["user"] == "u1" and "stack" in first
    assert list(first)[-2:] == ["logger", "stack"]
    assert second["level"] == "error" and second["token"] == REDACTED
    assert "secret1" not in stream.getvalue() and "exception" in second


def test_secret_key_decisions_are_cached_but_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_logs, "_PLAIN_KEYS", set())
    monkeypatch.setattr(_logs, "_SECRET_KEY_NAMES", set())
    monkeypatch.setattr(_logs, "_KEY_CACHE_MAX", 3)
    keys = ["a", "Password", "b", "c", "Set-Cookie", "d"]
    got = _logs.redact_secrets(None, "info", dict.fromkeys(keys, "v"))
    assert got == {"a": "v", "Password": REDACTED, "b": "v", "c": "v",
                   "Set-Cookie": REDACTED, "d": "v"}
    assert len(_logs._PLAIN_KEYS) + len(_logs._SECRET_KEY_NAMES) == 3
    # decided again (not cached) past the bound: same answers
    assert _logs.redact_secrets(None, "info", dict.fromkeys(keys, "v")) == got


def test_call_context_nests_and_restores() -> None:
    with call_context("outer"):
        assert _logs._CALL_ID.get() == "outer"
        with call_context("inner"):
            assert _logs._CALL_ID.get() == "inner"
        assert _logs._CALL_ID.get() == "outer"
        with call_context("x", user="u"):       # extra: structlog's contextvars
            assert structlog.contextvars.get_contextvars() == {"call_id": "x", "user": "u"}
        assert structlog.contextvars.get_contextvars() == {}
    assert _logs._CALL_ID.get() is None


def test_loggers_keep_their_methods_only_when_structlog_caches() -> None:
    out = io.StringIO()
    try:
        configure_logging("json", "info", stream=out)
        log = get_logger("switch.test")
        log.info("one")
        assert "info" not in vars(log)          # looked up each time: reconfigurable
        configure_logging("json", "info", stream=out, cache=True)
        log = get_logger("switch.test", unit="u1")
        log.info("two")
        assert "info" in vars(log)              # frozen, as structlog's proxy is
        log.info("three", n=3)
        log.bind(k="v").warning("four")
        events = [(line["event"], line.get("unit"), line.get("k"), line["level"])
                  for line in lines(out)]
        assert events == [("one", None, None, "info"), ("two", "u1", None, "info"),
                          ("three", "u1", None, "info"), ("four", "u1", "v", "warning")]
        with pytest.raises(AttributeError):
            log.__wrapped__  # noqa: B018 - dunder probes are not forwarded
    finally:
        structlog.reset_defaults()
        for handler in list(logging.getLogger().handlers):
            if getattr(handler, "_switch_handler", False):
                logging.getLogger().removeHandler(handler)
