"""`pipeline export SYMBOL --format jsonl|csv|parquet --out FILE|-`: stream ticks to a file or stdout."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pipeline.cli.cmd_query import add_range_options
from pipeline.cli.common import add_config_option, positive_float

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.ops.config import Settings
    from pipeline.read.query import CollectionResolver, Db

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "export",
        help="export the ticks of a symbol to JSON Lines, CSV or Parquet (streaming, constant memory)",
        description="Columns: symbol, ts (ISO-8601 UTC; a UTC timestamp column in Parquet), price (the "
        "stored double, exactly), volume, topic, partition, offset; in the tick order (ts, partition, "
        "offset). The file is written under a temporary name and renamed when complete: a failed export "
        "never leaves a truncated FILE. With --out - the ticks go to stdout and the summary to stderr.",
    )
    parser.add_argument("symbol", metavar="SYMBOL", help="e.g. PETR4 (case-insensitive)")
    add_range_options(parser)
    parser.add_argument(
        "--format",
        choices=("jsonl", "csv", "parquet"),
        help="default: from the file name (.jsonl/.ndjson, .csv, .parquet/.pq); required with --out -",
    )
    parser.add_argument(
        "--out", "-o", required=True, metavar="FILE", help="the file to write (replaced), or - for stdout"
    )
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
        from pipeline.core.errors import PipelineError
        from pipeline.read.export import InvalidFormat, check_format, export_ticks
        from pipeline.read.query import count_ticks, normalize_symbol

        symbol = normalize_symbol(args.symbol, settings.tick.symbol_pattern)
        start, end = time_range(args)
        out = _out_path(args.out)
        fmt = check_format(_format(args.format, out))
        if out is None and fmt == "parquet" and sys.stdout.isatty():
            raise InvalidFormat("Parquet is binary, not for a terminal: redirect --out - to a file or pipe")
        total = count_ticks(db, symbol, start=start, end=end, collections=resolver)  # UnknownSymbol here
        where = "stdout" if out is None else str(out)
        with _Progress(symbol, where, total, args.progress_every) as report:
            try:
                result = export_ticks(
                    db,
                    symbol,
                    out or sys.stdout.buffer,
                    fmt,
                    progress=report,
                    start=start,
                    end=end,
                    collections=resolver,
                )
            except BrokenPipeError:
                raise  # `--out - | head`: the reader stopped; not a failure (see with_database)
            except OSError as exc:
                raise PipelineError(f"cannot write {where}: {exc.strerror or exc}") from None
        rate = result.rows / result.seconds if result.seconds else 0.0
        print(
            f"exported {result.rows:,} ticks of {symbol} to {where} ({fmt}, {_size(result.bytes)}) "
            f"in {result.seconds:.1f}s ({rate:,.0f} ticks/s)",
            file=sys.stdout if out is not None else sys.stderr,
        )
        return 0

    return with_database(args, body)


def _out_path(text: str) -> Path | None:
    """The file to write; None for stdout ("-")."""
    from pathlib import Path

    from pipeline.read.query import QueryError

    if text == "-":
        return None
    path = Path(text)
    if path.is_dir():
        raise QueryError(f"--out {text!r} is a directory; name a file")
    if not path.parent.is_dir():
        raise QueryError(f"--out {text!r}: directory {str(path.parent)!r} does not exist")
    return path


def _format(given: str | None, out: Path | None) -> str:
    """--format, checked against the file name: a known extension that names another format is refused."""
    from pipeline.read.export import InvalidFormat

    named = SUFFIXES.get(out.suffix.lower()) if out is not None else None
    if given is not None:
        if out is not None and named is not None and named != given:
            raise InvalidFormat(
                f"--format {given} contradicts the file name {out.name!r} ({named}): rename the file "
                f"or drop --format"
            )
        return given
    if out is None:
        raise InvalidFormat("--out - (stdout) needs --format jsonl, csv or parquet")
    if named is None:
        raise InvalidFormat(f"cannot tell the format from {out.name!r}: give --format jsonl, csv or parquet")
    return named


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


class _Progress:
    """A rich progress bar on a terminal; otherwise one line on stderr every `every` seconds."""

    def __init__(self, symbol: str, out: str, total: int, every: float) -> None:
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
