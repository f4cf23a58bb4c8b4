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


def settings_from(args: argparse.Namespace, logging: bool = True) -> Settings:
    # Imported here: `pipeline --help` and argument errors should not pay for pydantic and the clients.
    from pipeline.ops.config import load_settings
    from pipeline.ops.logs import setup_logging

    settings = load_settings(getattr(args, "config", None))
    if logging:
        setup_logging(settings.log.level, settings.log.format)
    return settings


def fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def csv_list(text: str) -> list[str]:
    items = [part.strip() for part in text.split(",") if part.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be > 0")
    return value
