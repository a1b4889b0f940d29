"""Command line: ``switch run`` and ``switch check-config`` (CONTRACT.md "Install and run").

Exit codes: 0 success; 1 ``check-config`` found problems; 2 the engine cannot
start (bad config, port in use, unwritable data directory) or the command
line is wrong.  Errors are single lines on stderr, never tracebacks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from switch import __version__
from switch.config import Config, ConfigError, apply_overrides, load_config

__all__ = ["DEFAULT_CONFIG", "main", "resolve_config_path"]

DEFAULT_CONFIG = Path("config/switch.toml")
# The copy next to the package (a source checkout or an editable install).
PACKAGED_CONFIG = Path(__file__).resolve().parent.parent / "config" / "switch.toml"

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_CANNOT_START = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CANNOT_START,
                  f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="switch", description="SIP call-control engine (B2BUA softswitch).")
    parser.add_argument("--version", action="version", version=f"switch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser(
        "run", help="run the engine in the foreground",
        description="Run the engine in the foreground until SIGTERM/SIGINT. "
                    "Flags override the configuration file. Port 0 picks a free port "
                    "(the actual one is in the switch.ready log event).",
        epilog=f"Without --config, {DEFAULT_CONFIG} in the current directory is used; "
               f"if it does not exist, the one shipped with the package ({PACKAGED_CONFIG}).",
    )
    run.add_argument("--config", metavar="FILE", help=f"configuration file (TOML); "
                                                      f"default {DEFAULT_CONFIG}")
    run.add_argument("--data-dir", metavar="DIR", help="data directory (database, recordings)")
    run.add_argument("--sip-host", metavar="H", help="SIP listen address (UDP and TCP)")
    run.add_argument("--sip-port", metavar="N", help="SIP listen port (0 = any free port)")
    run.add_argument("--http-host", metavar="H", help="HTTP API listen address")
    run.add_argument("--http-port", metavar="N", help="HTTP API listen port (0 = any free port)")
    run.add_argument("--rtp-ports", metavar="MIN-MAX", help="RTP port range, e.g. 20000-20999")
    run.add_argument("--log-format", metavar="json|console", help="log output format")
    run.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning or error")

    check = commands.add_parser(
        "check-config", help="validate a configuration file",
        description="Validate a configuration file: exit 0 if valid; else exit 1 with "
                    "one line per problem on stderr, each naming the key.")
    check.add_argument("file", metavar="FILE", help="configuration file (TOML)")
    return parser


def resolve_config_path(given: str | None) -> tuple[Path, bool]:
    """The file to load, and whether it is the packaged fallback."""
    if given is not None:
        return Path(given), False
    if DEFAULT_CONFIG.is_file() or not PACKAGED_CONFIG.is_file():
        return DEFAULT_CONFIG, False
    return PACKAGED_CONFIG, True


def _check_config(path: str, out: TextIO, err: TextIO) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            err.write(f"{problem}\n")
        return EXIT_INVALID
    out.write(f"{path}: ok ({len(config.users)} users)\n")
    return EXIT_OK


def _run(args: argparse.Namespace, err: TextIO) -> int:
    path, fallback = resolve_config_path(args.config)
    try:
        config: Config = load_config(path)
        config = apply_overrides(
            config, data_dir=args.data_dir, sip_host=args.sip_host, sip_port=args.sip_port,
            http_host=args.http_host, http_port=args.http_port, rtp_ports=args.rtp_ports,
            log_format=args.log_format, log_level=args.log_level)
    except ConfigError as exc:
        # One line: the first problem names the key, the count says there is more
        # (`switch check-config` lists them all).
        more = len(exc.problems) - 1
        suffix = f" (and {more} more; run: switch check-config {path})" if more else ""
        err.write(f"switch: error: bad config {path}: {exc.problems[0]}{suffix}\n")
        return EXIT_CANNOT_START
    # Imported late: check-config should not pay for aiohttp/uvloop imports.
    from switch.app import run

    notes: list[tuple[str, dict[str, object]]] = []
    if fallback:
        notes.append(("config.packaged_fallback",
                      {"missing": str(DEFAULT_CONFIG), "using": str(path)}))
    return run(config, stderr=err, notes=notes)


def main(argv: Sequence[str] | None = None) -> int:
    out, err = sys.stdout, sys.stderr
    args = _build_parser().parse_args(argv)
    if args.command == "check-config":
        return _check_config(args.file, out, err)
    return _run(args, err)
