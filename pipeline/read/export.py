"""Export the ticks of a symbol to JSON Lines, CSV or Parquet, streaming in constant memory.

Ticks are read with a cursor in batches (oldest first) and written incrementally: JSON Lines and CSV per
batch, Parquet one row group per `row_group_rows` ticks (pyarrow ParquetWriter). Memory does not depend on
the number of ticks. The file is written under a temporary name and renamed at the end, so a failed or
interrupted export never leaves a truncated file (nor touches an existing one).

Columns: symbol, ts, price, volume, topic, partition, offset, in the tick order (ts, partition, offset).
`ts` is ISO-8601 UTC with milliseconds ("2026-01-05T13:00:00.123Z") in JSON Lines and CSV, and a
timestamp[ms, tz=UTC] column in Parquet. Prices in JSON Lines and CSV are the shortest decimal that reads
back as exactly the stored double (`repr`, as orjson writes them): 38.12 stays 38.12, and a price stored as
62.190000000000005 (a different double from 62.19) is written as such, never rounded. A Decimal128 price
(`tick.price_type: decimal128`) is written with exactly its digits (38.10 stays 38.10; a JSON number, not a
string). In Parquet the price column is float64, or decimal128(38, 18) when the first batch of ticks holds
a Decimal128 price (a fixed scale: 38.10 reads back as 38.100000000000000000, the same number); a price
that column cannot hold exactly (a double among decimals, more than 18 decimal places, a decimal among
doubles) stops the export with one line instead of being rounded.

`export_ticks` writes a file (atomically) or an open binary stream (e.g. stdout).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Literal, Protocol, cast

import orjson

from pipeline.core.errors import PipelineError
from pipeline.core.timefmt import iso_utc
from pipeline.read.atomicfile import atomic_write
from pipeline.read.query import Collections, Db, QueryError, Tick, iter_ticks

ExportFormat = Literal["jsonl", "csv", "parquet"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = ("jsonl", "csv", "parquet")
COLUMNS = ("symbol", "ts", "price", "volume", "topic", "partition", "offset")


class InvalidFormat(QueryError):
    """Not one of EXPORT_FORMATS."""


class InexactPrice(PipelineError):
    """A stored price the Parquet price column cannot hold exactly (the export stops; nothing is written)."""


# Parquet column of Decimal128 prices: 38 digits, 18 of them after the point.
DECIMAL_PRECISION, DECIMAL_SCALE = 38, 18


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))  # a JSON number with exactly the stored digits
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


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
    def discard(self) -> None: ...  # the export failed: release what is open, write nothing more


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
                    default=_json_default,
                )
                for t in ticks
            )
        )

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass


def price_text(price: float | Decimal) -> str:
    """The shortest decimal that reads back as exactly this double (float(text) == price): what the tick
    carried, never rounded nor padded; a Decimal (a Decimal128 price) with exactly its digits."""
    return str(price) if isinstance(price, Decimal) else repr(price)


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

    def discard(self) -> None:
        self.text.detach()


class _Parquet:
    """Row groups of `row_group_rows` ticks. The price column's type (float64, or decimal128 when the first
    batch holds a Decimal price) is fixed by the first batch written."""

    def __init__(self, handle: IO[bytes], row_group_rows: int) -> None:
        import pyarrow as pa

        self.pa = pa
        self.handle = handle
        self.schema: Any = None
        self.writer: Any = None
        self.decimal = False
        self.row_group_rows = row_group_rows
        self.pending: list[Any] = []  # Arrow record batches (compact columnar memory) of the open row group
        self.pending_rows = 0

    def _open(self, ticks: list[Tick]) -> None:
        import pyarrow.parquet as pq

        pa = self.pa
        self.decimal = any(isinstance(t.price, Decimal) for t in ticks)
        price = pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE) if self.decimal else pa.float64()
        self.schema = pa.schema(
            [
                ("symbol", pa.string()),
                ("ts", pa.timestamp("ms", tz="UTC")),
                ("price", price),
                ("volume", pa.int64()),
                ("topic", pa.string()),
                ("partition", pa.int32()),
                ("offset", pa.int64()),
            ]
        )
        self.writer = pq.ParquetWriter(self.handle, self.schema, compression="zstd")

    def _prices(self, ticks: list[Tick]) -> Any:
        pa = self.pa
        if not self.decimal:
            for t in ticks:
                if isinstance(t.price, Decimal):
                    raise InexactPrice(_inexact(t, "a Decimal128 price in a float64 price column"))
            return pa.array([t.price for t in ticks], pa.float64())
        values = []
        for t in ticks:
            # A double among decimals: the decimal that reads back as exactly that double (as in CSV).
            value = t.price if isinstance(t.price, Decimal) else Decimal(repr(t.price))
            exponent = value.as_tuple().exponent
            if (
                not isinstance(exponent, int)
                or exponent < -DECIMAL_SCALE
                or value.adjusted() >= (DECIMAL_PRECISION - DECIMAL_SCALE)
            ):
                raise InexactPrice(
                    _inexact(t, f"more digits than a decimal128({DECIMAL_PRECISION}, {DECIMAL_SCALE}) column")
                )
            values.append(value)
        return pa.array(values, pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE))

    def write(self, ticks: list[Tick]) -> None:
        pa = self.pa
        if self.writer is None:
            self._open(ticks)
        batch = pa.record_batch(
            [
                pa.array([t.symbol for t in ticks], pa.string()),
                pa.array([t.ts for t in ticks], pa.timestamp("ms", tz="UTC")),
                self._prices(ticks),
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

    def discard(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):  # (it writes its footer into a file that is discarded)
                self.writer.close()
            self.writer = None

    def close(self) -> None:
        if self.writer is None:  # no ticks: an empty file with the float64 schema
            self._open([])
        self._flush()
        self.writer.close()


def _inexact(tick: Tick, why: str) -> str:
    return (
        f"price {tick.price} of {tick.symbol} at {iso_utc(tick.ts)} ({tick.topic}[{tick.partition}]@"
        f"{tick.offset}) cannot be written exactly to Parquet: {why}; export it as jsonl or csv (exact), "
        "or export the ranges before and after the price type changed separately"
    )


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
        try:
            for chunk in _chunks(ticks, batch_size):
                writer.write(chunk)
                rows += len(chunk)
                if progress is not None:
                    progress(rows)
        except BaseException:
            writer.discard()
            raise
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
