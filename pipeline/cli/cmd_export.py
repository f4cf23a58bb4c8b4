"""`pipeline export SYMBOL --format jsonl|csv|parquet --out FILE`: stream stored ticks to a file."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.cli.cmd_query import add_range_options
from pipeline.cli.common import add_config_option, fail, positive_float

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.ops.config import Settings
    from pipeline.read.query import CollectionResolver, Db

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "export",
        help="export the ticks of a symbol to JSON Lines, CSV or Parquet (streaming, constant memory)",
        description="Columns: symbol, ts (ISO-8601 UTC; a UTC timestamp column in Parquet), price, volume, "
        "topic, partition, offset; oldest first. The file is written under a temporary name and renamed "
        "when complete: a failed export never leaves a truncated FILE.",
    )
    parser.add_argument("symbol", metavar="SYMBOL", help="e.g. PETR4 (case-insensitive)")
    add_range_options(parser)
    parser.add_argument(
        "--format",
        choices=("jsonl", "csv", "parquet"),
        help="default: from the file name (.jsonl/.ndjson, .csv, .parquet/.pq)",
    )
    parser.add_argument("--out", "-o", required=True, metavar="FILE", help="the file to write (replaced)")
    parser.add_argument(
        "--progress-every",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="when stderr is not a terminal: a progress line this often (default 5); "
        "on a terminal a progress bar is shown",
    )
    add_config_option(parser)
    parser.set_defaults(func=export)


def export(args: argparse.Namespace) -> int:
    from pipeline.cli.reading import with_database

    def body(settings: Settings, db: Db, resolver: CollectionResolver) -> int:
        from pipeline.cli.cmd_query import time_range
        from pipeline.read.export import check_format, export_ticks
        from pipeline.read.query import count_ticks, normalize_symbol

        symbol = normalize_symbol(args.symbol, settings.tick.symbol_pattern)
        start, end = time_range(args)
        out = _out_path(args.out)
        fmt = check_format(args.format or _format_from_name(out))
        total = count_ticks(db, symbol, start=start, end=end, collections=resolver)  # UnknownSymbol here
        with _Progress(symbol, out, total, args.progress_every) as report:
            try:
                result = export_ticks(
                    db, symbol, out, fmt, start=start, end=end, collections=resolver, progress=report
                )
            except OSError as exc:
                return fail(f"cannot write {out}: {exc.strerror or exc}", 1)
        rate = result.rows / result.seconds if result.seconds else 0.0
        print(
            f"exported {result.rows:,} ticks of {symbol} to {out} ({fmt}, {_size(result.bytes)}) "
            f"in {result.seconds:.1f}s ({rate:,.0f} ticks/s)"
        )
        return 0

    return with_database(args, body)


def _out_path(text: str) -> Path:
    from pathlib import Path

    from pipeline.read.query import QueryError

    path = Path(text)
    if path.is_dir():
        raise QueryError(f"--out {text!r} is a directory; name a file")
    if not path.parent.is_dir():
        raise QueryError(f"--out {text!r}: directory {str(path.parent)!r} does not exist")
    return path


def _format_from_name(path: Path) -> str:
    from pipeline.read.export import InvalidFormat

    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InvalidFormat(f"cannot tell the format from {path.name!r}: give --format jsonl, csv or parquet")
    return fmt


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class _Progress:
    """A rich progress bar on a terminal; otherwise one line on stderr every `every` seconds."""

    def __init__(self, symbol: str, out: Path, total: int, every: float) -> None:
        self.symbol, self.out, self.total, self.every = symbol, out, total, every
        self.bar: object | None = None
        self.last = time.monotonic()

    def __enter__(self) -> Callable[[int], None]:
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            bar = Progress(
                TextColumn(f"exporting {self.symbol}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            bar.start()
            task = bar.add_task("export", total=self.total)
            self.bar = bar
            return lambda rows: bar.update(task, completed=rows)
        print(f"exporting {self.total:,} ticks of {self.symbol} to {self.out}", file=sys.stderr, flush=True)
        return self._line

    def _line(self, rows: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            share = f" ({100 * rows / self.total:.0f}%)" if self.total else ""
            print(f"exported {rows:,}/{self.total:,} ticks{share}", file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            from rich.progress import Progress

            assert isinstance(self.bar, Progress)
            self.bar.stop()
