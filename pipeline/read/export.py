"""Export the ticks of a symbol to JSON Lines, CSV or Parquet, streaming in constant memory.

Ticks are read with a cursor in batches (oldest first) and written incrementally: JSON Lines and CSV per
batch, Parquet one row group per `row_group_rows` ticks (pyarrow ParquetWriter). Memory does not depend on
the number of ticks. The file is written under a temporary name and renamed at the end, so a failed or
interrupted export never leaves a truncated file (nor touches an existing one).

Columns: symbol, ts, price, volume, topic, partition, offset, in the tick order (ts, partition, offset).
`ts` is ISO-8601 UTC with milliseconds ("2026-01-05T13:00:00.123Z") in JSON Lines and CSV, and a
timestamp[ms, tz=UTC] column in Parquet. Prices in JSON Lines and CSV are the shortest decimal that reads
back as exactly the stored double (`repr`, as orjson writes them): 38.12 stays 38.12, and a price stored as
62.190000000000005 (a different double from 62.19) is written as such, never rounded.

`export_ticks` writes a file (atomically) or an open binary stream (e.g. stdout).
"""

from __future__ import annotations

import csv
import io
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast

import orjson

from pipeline.core.timefmt import iso_utc
from pipeline.read.atomicfile import atomic_write
from pipeline.read.query import Collections, Db, QueryError, Tick, iter_ticks

ExportFormat = Literal["jsonl", "csv", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("jsonl", "csv", "parquet")
COLUMNS = ("symbol", "ts", "price", "volume", "topic", "partition", "offset")


class InvalidFormat(QueryError):
    """Not one of EXPORT_FORMATS."""


@dataclass(frozen=True)
class ExportResult:
    path: Path | None  # None: written to a stream
    format: ExportFormat
    rows: int
    bytes: int
    seconds: float


class _Writer(Protocol):
    def write(self, ticks: list[Tick]) -> None: ...
    def close(self) -> None: ...


class _JsonLines:
    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def write(self, ticks: list[Tick]) -> None:
        self.handle.write(
            b"".join(
                orjson.dumps(
                    {
                        "symbol": t.symbol,
                        "ts": iso_utc(t.ts),
                        "price": t.price,
                        "volume": t.volume,
                        "topic": t.topic,
                        "partition": t.partition,
                        "offset": t.offset,
                    },
                    option=orjson.OPT_APPEND_NEWLINE,
                )
                for t in ticks
            )
        )

    def close(self) -> None:
        pass


def price_text(price: float) -> str:
    """The shortest decimal that reads back as exactly this double (float(text) == price): what the tick
    carried, never rounded nor padded."""
    return repr(price)


class _Csv:
    def __init__(self, handle: IO[bytes]) -> None:
        self.text = io.TextIOWrapper(handle, encoding="utf-8", newline="", write_through=True)
        self.writer = csv.writer(self.text, lineterminator="\n")
        self.writer.writerow(COLUMNS)

    def write(self, ticks: list[Tick]) -> None:
        self.writer.writerows(
            (t.symbol, iso_utc(t.ts), price_text(t.price), t.volume, t.topic, t.partition, t.offset)
            for t in ticks
        )

    def close(self) -> None:
        self.text.flush()
        self.text.detach()  # the binary handle is closed by atomic_write


class _Parquet:
    def __init__(self, handle: IO[bytes], row_group_rows: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.schema = pa.schema(
            [
                ("symbol", pa.string()),
                ("ts", pa.timestamp("ms", tz="UTC")),
                ("price", pa.float64()),
                ("volume", pa.int64()),
                ("topic", pa.string()),
                ("partition", pa.int32()),
                ("offset", pa.int64()),
            ]
        )
        self.writer = pq.ParquetWriter(handle, self.schema, compression="zstd")
        self.row_group_rows = row_group_rows
        self.pending: list[Any] = []  # Arrow record batches (compact columnar memory) of the open row group
        self.pending_rows = 0

    def write(self, ticks: list[Tick]) -> None:
        pa = self.pa
        batch = pa.record_batch(
            [
                pa.array([t.symbol for t in ticks], pa.string()),
                pa.array([t.ts for t in ticks], pa.timestamp("ms", tz="UTC")),
                pa.array([t.price for t in ticks], pa.float64()),
                pa.array([t.volume for t in ticks], pa.int64()),
                pa.array([t.topic for t in ticks], pa.string()),
                pa.array([t.partition for t in ticks], pa.int32()),
                pa.array([t.offset for t in ticks], pa.int64()),
            ],
            schema=self.schema,
        )
        self.pending.append(batch)
        self.pending_rows += len(ticks)
        if self.pending_rows >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if self.pending_rows:
            table = self.pa.Table.from_batches(self.pending, schema=self.schema)
            self.writer.write_table(table, row_group_size=self.pending_rows)
            self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self.writer.close()


def _writer(fmt: ExportFormat, handle: IO[bytes], row_group_rows: int) -> _Writer:
    if fmt == "jsonl":
        return _JsonLines(handle)
    if fmt == "csv":
        return _Csv(handle)
    return _Parquet(handle, row_group_rows)


def check_format(fmt: str) -> ExportFormat:
    if fmt not in EXPORT_FORMATS:
        raise InvalidFormat(f"invalid export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise InvalidFormat("parquet export needs pyarrow: pip install 'tickpipe[analytics]'") from None
    return fmt


def _chunks(ticks: Iterator[Tick], size: int) -> Iterator[list[Tick]]:
    while chunk := list(itertools.islice(ticks, size)):
        yield chunk


class _Counted(io.RawIOBase):
    """A binary stream that counts the bytes written through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.target.write(data)
        size = memoryview(data).nbytes
        self.count += size
        return size

    def flush(self) -> None:
        self.target.flush()


def export_ticks(
    db: Db,
    symbol: str,
    target: str | Path | IO[bytes],
    fmt: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    collections: Collections = None,
    batch_size: int = 1000,
    row_group_rows: int = 50_000,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Export the ticks of `symbol` with start <= ts < end, in the tick order (oldest first), to the file
    `target` (written under a temporary name, renamed when complete) or to an open binary stream (e.g.
    `sys.stdout.buffer`). `progress(rows)` is called after each batch written. Raises QueryError subclasses
    for bad input before creating any file."""
    fmt = check_format(fmt)
    started = time.monotonic()
    ticks = iter_ticks(db, symbol, start=start, end=end, collections=collections, batch_size=batch_size)

    def write(handle: IO[bytes]) -> tuple[int, int]:
        counted = _Counted(handle)
        writer = _writer(fmt, cast(IO[bytes], counted), row_group_rows)
        rows = 0
        for chunk in _chunks(ticks, batch_size):
            writer.write(chunk)
            rows += len(chunk)
            if progress is not None:
                progress(rows)
        writer.close()
        counted.flush()
        return rows, counted.count

    if not isinstance(target, str | Path):
        rows, size = write(target)
        return ExportResult(None, fmt, rows, size, time.monotonic() - started)
    path = Path(target)
    with atomic_write(path, "wb") as handle:
        rows, _ = write(handle)
    return ExportResult(path, fmt, rows, path.stat().st_size, time.monotonic() - started)
