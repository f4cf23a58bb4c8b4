"""Helpers shared by the sub-commands."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.ops.config import Settings


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="YAML config file (default: $PIPELINE_CONFIG, else config/pipeline.yaml if present); "
        "every key can be overridden by PIPELINE_<SECTION>__<KEY> environment variables",
    )


def add_timeout_option(parser: argparse.ArgumentParser, default: float, what: str) -> None:
    """--timeout SECONDS: the bound on waiting for a server; past it, one line naming the server, exit 1."""
    parser.add_argument(
        "--timeout",
        type=positive_float,
        default=default,
        metavar="SECONDS",
        help=f"give up when {what} does not answer within this long (default {default:g})",
    )


def settings_from(args: argparse.Namespace, logging: bool = True) -> Settings:
    # Imported here: `pipeline --help` and argument errors should not pay for pydantic and the clients.
    from pipeline.ops.config import load_settings
    from pipeline.ops.logs import setup_logging

    settings = load_settings(getattr(args, "config", None))
    if logging:
        setup_logging(settings.log.level, settings.log.format)
    else:
        _no_log_output()
    return settings


def _no_log_output() -> None:
    """A command that reports what matters itself, in one line: log records of the client libraries (one
    librdkafka line per reconnect attempt) must not reach stderr through Python's last-resort handler."""
    import logging as std_logging

    root = std_logging.getLogger()
    if not root.handlers:
        root.addHandler(std_logging.NullHandler())


def write_output(text: str, output: str | None) -> None:
    """`text` into the file `output` (PipelineError naming it if it cannot be written), or to stdout."""
    from pathlib import Path

    from pipeline.core.errors import PipelineError

    if output:
        try:
            Path(output).write_text(text)
        except OSError as exc:
            raise PipelineError(f"cannot write {output}: {exc.strerror}") from None
    else:
        sys.stdout.write(text)


def fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def csv_list(text: str) -> list[str]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _number(text: str, kind: type[int] | type[float], lowest: float, inclusive: bool) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not {'an integer' if kind is int else 'a number'}"
        ) from None
    if value < lowest or (value == lowest and not inclusive):
        raise argparse.ArgumentTypeError(f"{text} must be {'>=' if inclusive else '>'} {lowest:g}")
    return value


def non_negative_int(text: str) -> int:
    return int(_number(text, int, 0, inclusive=True))


def positive_int(text: str) -> int:
    return int(_number(text, int, 1, inclusive=True))


def positive_float(text: str) -> float:
    return _number(text, float, 0, inclusive=False)


def topic_names(names: list[str]) -> list[str]:
    """The names, deduplicated; each must be a valid Kafka topic name (else UsageError, exit 2)."""
    from pipeline.cli.errors import UsageError
    from pipeline.core.naming import NameError_, check_topic_name

    for name in names:
        try:
            check_topic_name(name)
        except NameError_ as exc:
            raise UsageError(str(exc)) from None
    return list(dict.fromkeys(names))
