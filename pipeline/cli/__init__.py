"""The `pipeline` command line. Each sub-command lives in its own module and registers itself here.

Exit codes: 0 success, 1 runtime failure (a server unreachable at start-up, a fatal error), 2 bad usage or
bad configuration (one line per problem, naming the key), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.cli import (
    cmd_bench,
    cmd_config,
    cmd_demo,
    cmd_export,
    cmd_produce,
    cmd_query,
    cmd_run,
    cmd_status,
    cmd_tail,
    cmd_topics,
)
from pipeline.cli.common import fail

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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Imported after parsing: `--help` and usage errors stay instant.
    from pipeline.core.errors import PipelineError
    from pipeline.ops.config import ConfigError

    try:
        return int(args.func(args))
    except ConfigError as exc:
        for line in exc.lines:
            print(line, file=sys.stderr)
        return 2
    except PipelineError as exc:
        return fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
