"""The `pipeline` command line. Each sub-command lives in its own module and registers itself here.

Exit codes: 0 success, 1 runtime failure (a server unreachable at start-up, a fatal error), 2 bad usage or
bad configuration (one line per problem, naming the key), 130 interrupted.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from pipeline import __version__
from pipeline.cli import (
    cmd_bench,
    cmd_config,
    cmd_demo,
    cmd_dlq,
    cmd_export,
    cmd_offsets,
    cmd_produce,
    cmd_query,
    cmd_run,
    cmd_serve,
    cmd_status,
    cmd_tail,
    cmd_topics,
)

COMMANDS = [
    cmd_run,
    cmd_produce,
    cmd_demo,
    cmd_config,
    cmd_query,
    cmd_export,
    cmd_topics,
    cmd_tail,
    cmd_status,
    cmd_offsets,
    cmd_dlq,
    cmd_serve,
    cmd_bench,
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pipeline",
        description="tickpipe: persist market ticks from Kafka into MongoDB, exactly once per offset.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s (tickpipe) {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


# Options whose value may start with '-' (a relative time such as -1h): `--from -1h` means `--from=-1h`.
_NEGATIVE_VALUE_OPTIONS = ("--from", "--to", "--to-time", "--start")
_NEGATIVE_VALUE = re.compile(r"^-\d")


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """argparse reads `-1h` after `--from` as an unknown option; no option starts with '-<digit>', so such a
    token is the option's value."""
    args, tokens = [], list(argv)
    while tokens:
        token = tokens.pop(0)
        if token in _NEGATIVE_VALUE_OPTIONS and tokens and _NEGATIVE_VALUE.match(tokens[0]):
            token = f"{token}={tokens.pop(0)}"
        args.append(token)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    # Imported after parsing: `--help` and usage errors stay instant.
    from pipeline.core.errors import PipelineError

    try:
        return int(args.func(args))
    except PipelineError as exc:
        # The one place an error becomes output and an exit code: its class decides the code (bad input and
        # bad configuration 2, a server unreachable or failing 1); configuration errors have a line each.
        for line in getattr(exc, "lines", None) or [f"error: {exc}"]:
            print(line, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
