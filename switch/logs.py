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

import logging
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, TextIO

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

__all__ = [
    "REDACTED",
    "call_context",
    "configure_logging",
    "get_logger",
    "redact_secrets",
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


def _is_secret_key(key: str) -> bool:
    return key.lower().replace("-", "_") in _SECRET_KEYS


def _scrub(value: object) -> object:
    if isinstance(value, str):
        # Cheap pre-check: most strings contain none of the hints.
        if _SCRUB_HINT.search(value) is None:
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
    """structlog processor: no password, digest response or token in any line."""
    for key in list(event_dict):
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


class _StreamLogger:
    """Writes one line per call and flushes: log readers (tests, pipes) see it at once.

    The stream is looked up at write time when none is given, so replacing
    ``sys.stdout`` (pytest capture) keeps working.
    """

    _lock = threading.Lock()

    def __init__(self, stream: TextIO | None, name: str) -> None:
        self._stream = stream
        self.name = name  # read by structlog.stdlib.add_logger_name

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stdout
        with self._lock:
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _StreamLoggerFactory:
    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def __call__(self, *args: Any) -> _StreamLogger:
        return _StreamLogger(self._stream, str(args[0]) if args else "switch")


def _shared_processors() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def configure_logging(
    fmt: str = "json",
    level: str = "info",
    *,
    stream: TextIO | None = None,
    cache: bool = False,
) -> None:
    """Configure structlog (and stdlib logging) for the whole process.

    ``cache=True`` freezes loggers on first use (faster; for the real process).
    Tests leave it off so they may reconfigure.
    """
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}")
    numeric = _LEVELS[level]
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=str) if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=(stream or sys.stdout).isatty())
    )
    # Tracebacks as data, without local variables: locals hold passwords.
    exc_formatter: list[Processor] = (
        [structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))]
        if fmt == "json" else []
    )
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.add_logger_name,
            structlog.processors.StackInfoRenderer(),
            *exc_formatter,
            redact_secrets,  # last, so it also sees rendered tracebacks
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_StreamLoggerFactory(stream),
        cache_logger_on_first_use=cache,
    )
    # Foreign (stdlib) records: same processors, same stream, one JSON line each.
    handler = logging.StreamHandler(stream if stream is not None else _StdoutProxy())
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


def get_logger(name: str, **initial: object) -> FilteringBoundLogger:
    """A logger whose lines carry ``logger=name``; safe to create at import time."""
    # The name travels as a logger-factory argument (structlog reserves the
    # `logger` keyword); add_logger_name puts it into each line.
    logger: FilteringBoundLogger = structlog.get_logger(name, **initial)
    return logger


@contextmanager
def call_context(call_id: str, **extra: object) -> Iterator[None]:
    """Every line logged inside carries ``call_id`` (and ``extra``)."""
    with structlog.contextvars.bound_contextvars(call_id=call_id, **extra):
        yield
