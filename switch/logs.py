"""Structured logging: structlog, JSON lines on stdout, secrets redacted.

Every line carries ``timestamp`` (ISO 8601 UTC), ``level``, ``event`` and the
``logger`` name; lines written inside :func:`call_context` also carry
``call_id`` (bound in a contextvar, so it follows the asyncio task).

Secrets never reach the output: values under secret-looking keys (password,
authorization, response, token, secret, ...) are replaced, and string values
are scrubbed of digest ``response="..."``/``Bearer ...`` fragments so that a
logged raw SIP message does not leak credentials either.

Standard-library ``logging`` records (aiohttp, asyncio) are routed through the
same processors, so stdout stays one JSON object per line.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import re
import sys
import threading
import time
from contextlib import AbstractContextManager
from contextvars import ContextVar, Token
from typing import Any, Final, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "add_call_id",
    "call_context",
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "reset_call_id",
    "set_call_id",
]

REDACTED: Final = "[redacted]"

# Compared after lower-casing and turning "-" into "_".
_SECRET_KEYS: Final = frozenset({
    "password", "passwd", "secret", "token", "api_token", "bearer", "authorization",
    "proxy_authorization", "www_authenticate_response", "response", "digest_response",
    "nonce_response", "cookie", "set_cookie", "credentials", "ha1",
})
# Fragments of SIP/HTTP text that carry credentials.
_SCRUB_RES: Final = (
    (re.compile(r'(\bresponse\s*=\s*)"[^"]*"', re.IGNORECASE), rf'\1"{REDACTED}"'),
    (re.compile(r"(\bresponse\s*=\s*)[^\s\",;]+", re.IGNORECASE), rf"\1{REDACTED}"),
    (re.compile(r"(\bBearer\s+)[^\s\",;]+", re.IGNORECASE), rf"\1{REDACTED}"),
    (re.compile(r"([?&]token=)[^&\s\"]+", re.IGNORECASE), rf"\1{REDACTED}"),
)
_SCRUB_HINT: Final = re.compile(r"response|bearer|token=", re.IGNORECASE)

_LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO,
                  "warning": logging.WARNING, "error": logging.ERROR}


# Key names seen so far, by verdict: a line's keys come from the code and repeat, so
# the lower()/replace() of each is done once per name, not once per line.  Bounded:
# past _KEY_CACHE_MAX names (keys from untrusted dicts), new ones are decided each time.
_PLAIN_KEYS: Final[set[str]] = set()
_SECRET_KEY_NAMES: Final[set[str]] = set()
_KEY_CACHE_MAX: Final = 4096


def _learn_key(key: str) -> bool:
    """Whether ``key`` names a secret (the decision is remembered for the next line)."""
    secret = key.lower().replace("-", "_") in _SECRET_KEYS
    if len(_PLAIN_KEYS) + len(_SECRET_KEY_NAMES) < _KEY_CACHE_MAX:
        (_SECRET_KEY_NAMES if secret else _PLAIN_KEYS).add(key)
    return secret


def _is_secret_key(key: str) -> bool:
    if key in _PLAIN_KEYS:
        return False
    return key in _SECRET_KEY_NAMES or _learn_key(key)


def _has_hint(text: str) -> bool:
    """Whether ``text`` may hold a credential fragment (``_SCRUB_HINT`` matches).

    On ASCII text a case-insensitive match is a lower-cased substring: ~6x
    cheaper than the regex; other text (Unicode case folding, e.g. U+017F
    matching "s") keeps the regex."""
    if text.isascii():
        low = text.lower()
        return "response" in low or "bearer" in low or "token=" in low
    return _SCRUB_HINT.search(text) is not None


def _scrub(value: object) -> object:
    if isinstance(value, str):
        # Cheap pre-check: most strings contain none of the hints.
        if not _has_hint(value):
            return value
        for pattern, replacement in _SCRUB_RES:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and _is_secret_key(k) else _scrub(v)
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    if isinstance(value, bytes | bytearray):
        return _scrub(bytes(value).decode("utf-8", "replace"))
    return value


def redact_secrets(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: no password, digest response or token in any line.

    Values under secret keys become ``REDACTED``; every other value goes
    through :func:`_scrub`.  The common line (a few short strings and numbers,
    none with a hint) is decided in one pass: the plain strings are joined
    (NUL-separated, so no hint spans two values) and checked once; numbers,
    booleans and ``None`` cannot hold a secret.
    """
    hay = ""
    for key, value in event_dict.items():
        if _is_secret_key(key):
            event_dict[key] = REDACTED  # a value replaced, not a key added: iteration goes on
            continue
        cls = type(value)
        if cls is str:
            hay += value
            hay += "\0"
        elif not (cls is int or cls is float or cls is bool or value is None):
            event_dict[key] = _scrub(value)
    if hay and _has_hint(hay):
        for key, value in event_dict.items():
            if type(value) is str:
                event_dict[key] = _scrub(value)
    return event_dict


class _BatchedWriter:
    """Log lines written in batches, one write per batch.

    A line logged on the event loop's thread is queued and a flush scheduled
    ``delay`` seconds later (``call_soon`` with no delay): every line of that
    window (a burst of calls, a retransmission storm) goes out in one
    ``write`` + ``flush`` instead of one syscall pair — and one wake-up of
    the reader — per line.  The engine uses 5 ms: at 1,000 calls/s (4,000
    lines/s) that is ~20 lines a write instead of ~1 (a write to a pipe was
    ~2 % of the engine's CPU), and readers are 5 ms behind at most.  A line
    from any other thread (or with no loop running) is written at once, after
    whatever is queued, so order is kept.  At most ``max_pending`` lines wait
    before a flush is forced; queued lines are written at exit.

    (A writer *thread* was measured first and rejected: each wake-up asks the
    loop thread for the GIL, and at 200 calls/s the convoy stalled call
    handling badly — half the calls failed.)
    """

    def __init__(self, stream: TextIO, max_pending: int = 1000, delay: float = 0.0) -> None:
        self._stream = stream
        self._max = max_pending
        self._delay = delay
        self._pending: list[str] = []
        self._scheduled = False
        self._lock = threading.Lock()
        atexit.register(self.flush)

    def write(self, line: str) -> None:
        with self._lock:
            self._pending.append(line)
            if self._scheduled and len(self._pending) < self._max:
                return
            if not self._scheduled and len(self._pending) < self._max:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = None
                if loop is not None:
                    try:
                        if self._delay > 0:
                            loop.call_later(self._delay, self.flush)
                        else:
                            loop.call_soon(self.flush)
                        self._scheduled = True
                        return
                    except RuntimeError:  # the loop is closing
                        pass
            self._write_pending()

    def flush(self) -> None:
        with self._lock:
            self._write_pending()

    def _write_pending(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        text = "\n".join(self._pending) + "\n"
        self._pending.clear()
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed or gone: nothing left to tell


class _StreamLogger:
    """Writes one line per call and flushes: log readers (tests, pipes) see it at once.

    The stream is looked up at write time when none is given, so replacing
    ``sys.stdout`` (pytest capture) keeps working.  With a background writer
    (the real process) lines go through its per-iteration batch instead.
    """

    _lock = threading.Lock()

    def __init__(self, stream: TextIO | None, name: str,
                 writer: _BatchedWriter | None = None) -> None:
        self._stream = stream
        self._writer = writer
        self.name = name  # read by structlog.stdlib.add_logger_name

    def msg(self, message: str) -> None:
        if self._writer is not None:
            self._writer.write(message)
            return
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _StreamLoggerFactory:
    def __init__(self, stream: TextIO | None, writer: _BatchedWriter | None = None) -> None:
        self._stream = stream
        self._writer = writer

    def __call__(self, *args: Any) -> _StreamLogger:
        return _StreamLogger(self._stream, str(args[0]) if args else "switch", self._writer)


class _WriterStream:
    """A text stream over the background writer, for the stdlib logging handler."""

    def __init__(self, writer: _BatchedWriter) -> None:
        self._writer = writer

    def write(self, text: str) -> int:
        self._writer.write(text[:-1] if text.endswith("\n") else text)
        return len(text)

    def flush(self) -> None:
        pass


_background: _BatchedWriter | None = None


_stamp_second = -1
_stamp_prefix = ""


def add_timestamp(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """``timestamp``: ISO 8601 UTC with microseconds, as structlog's
    ``TimeStamper(fmt="iso", utc=True)`` writes it, with the date-time part
    formatted once per second (a quarter of a log line's cost was the
    per-line ``datetime.now(...).isoformat()``)."""
    event_dict["timestamp"] = _timestamp()
    return event_dict


def _timestamp() -> str:
    global _stamp_second, _stamp_prefix
    now = time.time()
    second = int(now)
    if second != _stamp_second:
        _stamp_prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _stamp_second = second
    return f"{_stamp_prefix}.{int((now - second) * 1e6):06d}Z"


try:  # the optional accelerator (``pip install switch[fast]``): ~3x faster lines
    import orjson

    def render_json(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> str:
        """structlog renderer: one compact JSON object (orjson; ``str()`` for the rest)."""
        return orjson.dumps(event_dict, default=str,
                            option=orjson.OPT_NON_STR_KEYS).decode("utf-8")
except ImportError:  # pragma: no cover - the stdlib fallback
    _ENCODER = json.JSONEncoder(default=str, separators=(",", ":"))

    def render_json(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> str:
        """structlog renderer: one compact JSON object (``str()`` for the rest)."""
        return _ENCODER.encode(event_dict)


# structlog's registry of its context variables (filled by ``bind_contextvars``):
# while it is empty no ``structlog_*`` variable exists and merging them is a no-op.
_STRUCTLOG_VARS: Final[dict[str, Any] | None] = getattr(
    structlog.contextvars, "_CONTEXT_VARS", None)


def _line_processor(chain: list[Processor]) -> Processor:
    """``chain`` (the processors before the renderer) as one processor.

    The common line (no ``stack_info``, ``exc_info`` or ``_record``) gets what
    the chain would add, in the same order — contextvars, ``call_id``,
    ``level``, ``timestamp``, ``logger`` — and :func:`redact_secrets`, in one
    call instead of eight; any other line runs ``chain`` itself.
    """
    def process(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        if "stack_info" in event_dict or "exc_info" in event_dict or "_record" in event_dict:
            result: Any = event_dict
            for proc in chain:
                result = proc(logger, method_name, result)
            return result  # type: ignore[no-any-return]
        if _STRUCTLOG_VARS is None or _STRUCTLOG_VARS:
            structlog.contextvars.merge_contextvars(logger, method_name, event_dict)
        call_id = _CALL_ID.get()
        if call_id is not None and "call_id" not in event_dict:
            event_dict["call_id"] = call_id
        event_dict["level"] = ("warning" if method_name == "warn"
                               else "error" if method_name == "exception" else method_name)
        event_dict["timestamp"] = _timestamp()
        event_dict["logger"] = logger.name
        return redact_secrets(logger, method_name, event_dict)

    return process


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        add_call_id,
        structlog.processors.add_log_level,
        add_timestamp,
    ]


def configure_logging(
    fmt: str = "json",
    level: str = "info",
    *,
    stream: TextIO | None = None,
    cache: bool = False,
    background: bool = False,
    batch_delay: float = 0.005,
) -> None:
    """Configure structlog (and stdlib logging) for the whole process.

    ``cache=True`` freezes loggers on first use (faster; for the real process).
    Tests leave it off so they may reconfigure.  ``background=True`` (the real
    process) batches the lines of ``batch_delay`` seconds (5 ms; 0 = of one
    event-loop iteration) into one write (:class:`_BatchedWriter`) to the
    stream as it is now.
    """
    global _background
    writer: _BatchedWriter | None = None
    if background:
        if _background is None:
            _background = _BatchedWriter(stream if stream is not None else sys.stdout,
                                         delay=batch_delay)
        writer = _background
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    numeric = _LEVELS[level]
    renderer: Processor = (
        render_json if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=(stream or sys.stdout).isatty())
    )
    # Tracebacks as data, without local variables: locals hold passwords.
    exc_formatter: list[Processor] = (
        [structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))]
        if fmt == "json" else []
    )
    chain: list[Processor] = [
        *_shared_processors(),
        structlog.stdlib.add_logger_name,
        structlog.processors.StackInfoRenderer(),
        *exc_formatter,
        redact_secrets,  # last, so it also sees rendered tracebacks
    ]
    structlog.configure(
        processors=[_line_processor(chain), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StreamLoggerFactory(stream, writer),
        cache_logger_on_first_use=cache,
    )
    # Foreign (stdlib) records: same processors, same stream, one JSON line each.
    target: Any = (_WriterStream(writer) if writer is not None
                   else stream if stream is not None else _StdoutProxy())
    handler = logging.StreamHandler(target)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.add_logger_name,
                           *exc_formatter, redact_secrets],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_switch_handler", False):
            root.removeHandler(old)
    handler._switch_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # aiohttp's access log would repeat every request; we count them in metrics.
    # Library debug output (asyncio, aiohttp) is noise even at our debug level.
    root.setLevel(max(numeric, logging.INFO))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class _StdoutProxy:
    """A stream that is whatever ``sys.stdout`` is at write time."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


class _LazyLogger:
    """structlog's lazy proxy, without its per-line indirection once frozen.

    ``structlog.get_logger`` returns a proxy that assembles the bound logger on
    every method lookup (``__getattr__`` -> ``bind`` -> ``getattr``); with
    ``cache_logger_on_first_use`` (the real process) it always hands back the
    same logger.  Then this wrapper keeps what it looked up (``log.info``, the
    bound method of that logger) as its own attribute: the next line calls it
    directly.  Not cached (tests): looked up each time, so reconfiguring works.
    """

    def __init__(self, proxy: Any) -> None:
        self._proxy = proxy

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)  # copy/pickle/abc probes: not the logger's
        proxy = self._proxy
        value = getattr(proxy.bind(), name)
        if "bind" in vars(proxy):  # structlog froze the proxy (cached first use)
            setattr(self, name, value)
        return value

    def __repr__(self) -> str:
        return f"<_LazyLogger {self._proxy!r}>"


def get_logger(name: str, **initial: object) -> FilteringBoundLogger:
    """A logger whose lines carry ``logger=name``; safe to create at import time."""
    # The name travels as a logger-factory argument (structlog reserves the
    # `logger` keyword); add_logger_name puts it into each line.
    return cast(FilteringBoundLogger, _LazyLogger(structlog.get_logger(name, **initial)))


_CALL_ID: Final[ContextVar[str | None]] = ContextVar("switch_call_id", default=None)


def add_call_id(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: the ``call_id`` of the enclosing :func:`call_context`."""
    call_id = _CALL_ID.get()
    if call_id is not None and "call_id" not in event_dict:
        event_dict["call_id"] = call_id
    return event_dict


def set_call_id(call_id: str | None) -> Token[str | None]:
    """Put ``call_id`` into every line logged until :func:`reset_call_id` with the
    token: what ``call_context(call_id)`` does, for a caller that is itself a
    context manager (the call controller's guard, ~7 times a call)."""
    return _CALL_ID.set(call_id)


def reset_call_id(token: Token[str | None]) -> None:
    _CALL_ID.reset(token)


class _CallContext:
    """``call_context(call_id, **extra)``: every line logged inside carries
    ``call_id`` (and ``extra``).

    Without ``extra``, one ContextVar set/reset: the call controller enters one
    per SIP event, and structlog's ``bound_contextvars`` (a generator over a dict
    of vars) cost ~8 µs each time; this costs ~0.5 µs.  With ``extra``,
    ``bound_contextvars`` as before.  (A class rather than a function returning
    one: a Python call fewer per use.)"""

    __slots__ = ("_bound", "_call_id", "_extra", "_token")

    def __init__(self, call_id: str, **extra: object) -> None:
        self._call_id = call_id
        self._extra = extra
        self._token: Token[str | None] | None = None
        self._bound: AbstractContextManager[None] | None = None

    def __enter__(self) -> None:
        if self._extra:
            bound = structlog.contextvars.bound_contextvars(call_id=self._call_id, **self._extra)
            bound.__enter__()
            self._bound = bound
        else:
            self._token = _CALL_ID.set(self._call_id)

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _CALL_ID.reset(self._token)
            self._token = None
        elif self._bound is not None:
            bound, self._bound = self._bound, None
            bound.__exit__(*exc)


call_context: Final = _CallContext
