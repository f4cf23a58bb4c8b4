"""Shared by the read-side commands (query, export): database access with one-line errors, and output as
rich tables, JSON Lines or CSV with times in an explicit zone.

Times are stored and computed in UTC; `--tz` only changes how they are shown. Tables name the zone in the
column header and the title; JSON and CSV carry ISO-8601 times with their UTC offset. JSON and CSV stream
row by row; a table is built in memory, so it shows at most `TABLE_MAX_ROWS` rows and says so.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import IO, TYPE_CHECKING, Any, Literal

import orjson
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import settings_from
from pipeline.read.jsonout import exact_number

if TYPE_CHECKING:
    from pipeline.ops.config import Settings
    from pipeline.read.query import CollectionResolver, Db

OutputFormat = Literal["table", "json", "csv"]
FORMATS: tuple[OutputFormat, ...] = ("table", "json", "csv")
ColumnKind = Literal["text", "time", "price", "int", "float4"]
# Width for tables when stdout is not a terminal (pipes, files): wide enough that nothing is cut.
PIPE_WIDTH = 200
# A rich table is built in memory before it is printed (about 0.4 ms and 6 kB per row): beyond this many
# rows it is cut, with a notice; JSON and CSV stream any number of rows.
TABLE_MAX_ROWS = 1000


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: ColumnKind = "text"


def zone_label(zone: tzinfo, at: datetime | None = None) -> str:
    """'UTC' or 'America/Sao_Paulo, UTC-03:00' (the offset at `at`, or now)."""
    name = str(zone)
    if name == "UTC":
        return "UTC"
    moment = (at or datetime.now(zone)).astimezone(zone)
    offset = moment.utcoffset()
    if offset is None:
        return name
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{name}, UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def iso(ts: datetime, zone: tzinfo) -> str:
    """ISO-8601 with milliseconds and the zone's offset: 2026-01-05T10:00:00.000-03:00."""
    return ts.astimezone(zone).isoformat(timespec="milliseconds")


def table_time(ts: datetime, zone: tzinfo) -> str:
    return ts.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def price_text(value: float | Decimal | None) -> str:
    """A price for a table (display only: two decimals when it is a whole number of cents, else up to six).
    JSON and CSV carry the stored value exactly (a Decimal128 price with exactly its digits)."""
    if value is None:
        return "-"
    if isinstance(value, Decimal):  # exact: whole cents with two decimals, anything else with every digit
        return f"{value:,.2f}" if value == round(value, 2) else f"{value:,f}"
    if abs(value - round(value, 2)) < 1e-9:
        return f"{value:,.2f}"
    return f"{value:,.6f}".rstrip("0")


def _cell(value: Any, kind: ColumnKind, zone: tzinfo) -> str:
    if value is None:
        return "-"
    if kind == "time":
        return table_time(value, zone)
    if kind == "price":
        return price_text(value)
    if kind == "int":
        return f"{value:,}"
    if kind == "float4":
        return f"{value:,.4f}"
    return str(value)


def _plain(value: Any, zone: tzinfo) -> Any:
    # Floats stay floats: json and csv write the shortest decimal that reads back as the same double;
    # Decimals (Decimal128 prices) are written with exactly their digits.
    return iso(value, zone) if isinstance(value, datetime) else value


def stdout_console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=PIPE_WIDTH)
    return console


def emit(
    rows: Iterable[Mapping[str, Any]],
    columns: list[Column],
    fmt: OutputFormat,
    zone: tzinfo,
    title: str = "",
    out: IO[str] | None = None,
    empty: str = "no rows",
    max_rows: int | None = None,
) -> int:
    """Print rows in the chosen format; returns the number of rows printed. JSON: one object per line (JSON
    Lines). JSON and CSV stream row by row; a table holds at most `max_rows` rows (default TABLE_MAX_ROWS),
    then a notice says it was cut (the rows after it are not read)."""
    stream = out or sys.stdout
    max_rows = TABLE_MAX_ROWS if max_rows is None else max_rows
    count = 0
    if fmt == "json":
        for row in rows:
            record = {c.key: _plain(row[c.key], zone) for c in columns}
            stream.write(orjson.dumps(record, default=exact_number).decode() + "\n")
            count += 1
        return count
    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow([c.key for c in columns])
        for row in rows:
            writer.writerow([_plain(row[c.key], zone) for c in columns])
            count += 1
        return count
    zone_name = zone_label(zone)
    table = Table()
    for column in columns:
        header = f"{column.header} ({zone_name})" if column.kind == "time" else column.header
        table.add_column(header, justify="left" if column.kind in ("text", "time") else "right", no_wrap=True)
    cut = False
    for row in rows:
        if count == max_rows:
            cut = True
            break
        table.add_row(*(_cell(row[c.key], c.kind, zone) for c in columns))
        count += 1
    console = stdout_console() if out is None else Console(file=out, highlight=False, width=PIPE_WIDTH)
    # The title on its own line: a table title would wrap to the width of a narrow table.
    if count:
        if title:
            console.print(title, markup=False, style="bold")
        console.print(table)
        if cut:
            console.print(
                f"table cut at {max_rows:,} rows (more rows match): use --format csv or --format json for "
                "every row (streamed), or narrow the query (--limit, --from, --to)",
                markup=False,
                style="yellow",
            )
    else:
        console.print(f"{title}: {empty}" if title else empty, markup=False)
    return count


def with_database(args: argparse.Namespace, body: Callable[[Settings, Db, CollectionResolver], int]) -> int:
    """Load settings, run `body(settings, db, resolver)`. The client connects lazily, so a body that validates
    its arguments first rejects bad input without touching the network. Bad input raises a QueryError (exit
    2); MongoDB unreachable or failing becomes one PipelineError line naming the server (exit 1); a closed
    pipe (`| head`) ends the command quietly with 0."""
    from pymongo.errors import PyMongoError

    from pipeline.clients.mongo import make_client
    from pipeline.core.errors import PipelineError, describe
    from pipeline.ops.redact import redact_text, redact_uri
    from pipeline.read.query import CollectionResolver

    settings = settings_from(args, logging=False)
    mongo = settings.mongo
    where = redact_uri(mongo.uri.get_secret_value())
    secrets = [s.get_secret_value() for s in (mongo.password, mongo.uri) if s is not None]

    def failure(what: str, exc: PyMongoError) -> PipelineError:
        return PipelineError(f"{what} MongoDB at {where}: {redact_text(describe(exc), secrets)}")

    try:
        client = make_client(mongo)
    except PyMongoError as exc:  # e.g. an unparsable URI option
        raise failure("cannot connect to", exc) from None
    try:
        db = client[mongo.database]
        return body(settings, db, CollectionResolver.from_settings(db, settings))
    except PyMongoError as exc:
        raise failure("cannot query", exc) from None
    except BrokenPipeError:
        quiet_stdout()
        return 0
    finally:
        client.close()


def quiet_stdout() -> None:
    """After the reader of a pipe went away (`| head`): no second BrokenPipeError at interpreter exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
