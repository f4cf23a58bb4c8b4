"""`pipeline query ticks|ohlc|stats|latest`: read stored ticks back (see pipeline/read/query)."""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from pipeline.cli.common import add_config_option, non_negative_int

if TYPE_CHECKING:
    from datetime import datetime, tzinfo
    from pathlib import Path

    from pipeline.cli.reading import Column
    from pipeline.ops.config import Settings
    from pipeline.read.query import Bar, CollectionResolver, Db

TIME_HELP = (
    "ISO-8601 (naive = UTC, e.g. 2026-01-05T13:00 or 2026-01-05T10:00-03:00), now, or relative to now "
    "(-90s, -15m, -1h, -2d, -1w)"
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "query",
        help="read stored ticks back: ticks, OHLC bars, per-symbol statistics, latest ticks",
        description="Query the ticks stored in MongoDB. Times are UTC unless --tz is given (display only). "
        "Ranges are half-open: from <= ts < to. Ticks are in one order everywhere: ts, then partition, "
        "then offset. Bad input exits 2, an unreachable MongoDB exits 1.",
    )
    action = parser.add_subparsers(dest="action", metavar="ACTION")
    action.required = True

    ticks = action.add_parser(
        "ticks",
        help="the ticks of a symbol in a time range",
        description="The ticks of SYMBOL with from <= ts < to, in the tick order (ts, partition, offset) or "
        "its exact reverse. A table shows at most 1,000 rows (and says so); JSON and CSV stream every row.",
    )
    _symbol_and_range(ticks)
    ticks.add_argument(
        "--limit", type=non_negative_int, default=20, help="at most N ticks (default 20; 0 = no limit)"
    )
    order = ticks.add_mutually_exclusive_group()
    order.add_argument(
        "--newest-first",
        dest="newest_first",
        action="store_true",
        default=None,
        help="newest tick first (the default without --from)",
    )
    order.add_argument(
        "--oldest-first",
        dest="newest_first",
        action="store_false",
        help="oldest tick first (the default with --from)",
    )
    _output(ticks)
    ticks.set_defaults(func=query_ticks)

    ohlc = action.add_parser(
        "ohlc",
        help="OHLC bars (open, high, low, close, volume, trades, VWAP)",
        description="OHLC bars of SYMBOL computed by MongoDB; only bars with at least one tick. Bars are "
        "aligned to UTC, or with --align-tz to a zone's local midnight and hours (DST-correct).",
    )
    _symbol_and_range(ohlc)
    ohlc.add_argument(
        "--interval", required=True, help="bar size: 1m, 5m, 15m, 1h or 1d (aligned to UTC or --align-tz)"
    )
    ohlc.add_argument(
        "--align-tz",
        metavar="ZONE",
        help="align bars to this IANA zone (1d bars start at its local midnight); also the display zone "
        "unless --tz is given (default: UTC)",
    )
    ohlc.add_argument("--plot", metavar="PNG", help="also write a candlestick chart with volume bars")
    _output(ohlc, tz_default="UTC, or --align-tz")
    ohlc.set_defaults(func=query_ohlc)

    for name, func, help_text, description in (
        (
            "stats",
            query_stats,
            "per symbol: count, first/last tick, last/average price, volume",
            "Per symbol and collection: the number of ticks, the first and last tick time, the price of the "
            "last tick (in the tick order), the average price and the total volume.",
        ),
        (
            "latest",
            query_latest,
            "the newest tick of each symbol",
            "The newest tick of each symbol over all its collections: the last in the tick order (of ticks "
            "sharing the newest ts, the highest partition, then offset).",
        ),
    ):
        per_symbol = action.add_parser(name, help=help_text, description=description)
        per_symbol.add_argument(
            "symbols", nargs="*", metavar="SYMBOL", help="only these symbols (default: all)"
        )
        _output(per_symbol)
        per_symbol.set_defaults(func=func)


def _symbol_and_range(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("symbol", metavar="SYMBOL", help="e.g. PETR4 (case-insensitive)")
    add_range_options(parser)


def add_range_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="start", metavar="TIME", help="from this time, inclusive; " + TIME_HELP
    )
    parser.add_argument("--to", dest="end", metavar="TIME", help="until this time, exclusive")


def _output(parser: argparse.ArgumentParser, tz_default: str = "UTC") -> None:
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="default: table")
    parser.add_argument(
        "--tz",
        metavar="ZONE",
        help=f"show times in this IANA zone, e.g. America/Sao_Paulo (default: {tz_default})",
    )
    add_config_option(parser)


def time_range(args: argparse.Namespace) -> tuple[datetime | None, datetime | None]:
    """Parse --from/--to (QueryError on a bad value) and check from < to, before any I/O."""
    from pipeline.read.query import check_nonempty_range, parse_time

    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end) if args.end else None
    return check_nonempty_range(start, end)


def _span(start: datetime | None, end: datetime | None, zone: tzinfo) -> str:
    from pipeline.cli.reading import table_time

    if start is None and end is None:
        return "all time"
    return f"{table_time(start, zone) if start else '...'} to {table_time(end, zone) if end else '...'}"


def _tick_columns(first: str) -> list[Column]:
    """The columns of a tick; `first` is "ts" (tick lists) or "symbol" (latest ticks)."""
    from pipeline.cli.reading import Column

    time, symbol = Column("ts", "time", "time"), Column("symbol", "symbol")
    return [
        *((time, symbol) if first == "ts" else (symbol, time)),
        Column("price", "price", "price"),
        Column("volume", "volume", "int"),
        Column("topic", "topic"),
        Column("partition", "partition", "int"),
        Column("offset", "offset", "int"),
    ]


def query_ticks(args: argparse.Namespace) -> int:
    from pipeline.cli.reading import TABLE_MAX_ROWS, emit, with_database, zone_label
    from pipeline.read.query import iter_ticks, normalize_symbol, parse_zone

    def body(settings: Settings, db: Db, resolver: CollectionResolver) -> int:
        symbol = normalize_symbol(args.symbol, settings.tick.symbol_pattern)
        zone = parse_zone(args.tz or "UTC")
        start, end = time_range(args)
        newest_first = args.newest_first if args.newest_first is not None else start is None
        limit = args.limit or None
        if args.format == "table":  # one row more than the table shows: it tells whether it was cut
            limit = min(limit or TABLE_MAX_ROWS + 1, TABLE_MAX_ROWS + 1)
        stream = iter_ticks(
            db, symbol, start=start, end=end, limit=limit, newest_first=newest_first, collections=resolver
        )
        # Read the first tick before printing anything: an unknown symbol is reported alone (no CSV header).
        first = next(stream, None)
        rows = (vars(t) for t in itertools.chain([first] if first else [], stream))
        order = "newest first" if newest_first else "oldest first"
        at_most = f", at most {args.limit:,}" if args.limit else ""
        title = f"{symbol} ticks, {_span(start, end, zone)} ({zone_label(zone)}), {order}{at_most}"
        emit(rows, _tick_columns("ts"), args.format, zone, title, empty="no ticks in this range")
        return 0

    return with_database(args, body)


BAR_KEYS = ("start", "open", "high", "low", "close", "volume", "trades", "vwap")


def query_ohlc(args: argparse.Namespace) -> int:
    from pipeline.cli.reading import Column, emit, with_database, zone_label
    from pipeline.read.query import check_interval, normalize_symbol, ohlc, parse_zone

    def body(settings: Settings, db: Db, resolver: CollectionResolver) -> int:
        symbol = normalize_symbol(args.symbol, settings.tick.symbol_pattern)
        interval = check_interval(args.interval)
        align = parse_zone(args.align_tz) if args.align_tz else None
        zone = parse_zone(args.tz) if args.tz else align or parse_zone("UTC")
        start, end = time_range(args)
        plot = _plot_path(args.plot) if args.plot else None
        bars = ohlc(db, symbol, interval, start=start, end=end, collections=resolver, align_tz=align)
        aligned = f", bars aligned to {align.key}" if align is not None and align.key != "UTC" else ""
        title = f"{symbol} {interval} bars, {_span(start, end, zone)} ({zone_label(zone)}){aligned}"
        if plot is not None:
            _plot(plot, symbol, interval, bars, start, end, zone)
        emit(
            ({k: getattr(b, k) for k in BAR_KEYS} for b in bars),
            [
                Column("start", "bar start", "time"),
                Column("open", "open", "price"),
                Column("high", "high", "price"),
                Column("low", "low", "price"),
                Column("close", "close", "price"),
                Column("volume", "volume", "int"),
                Column("trades", "trades", "int"),
                Column("vwap", "VWAP", "float4"),
            ],
            args.format,
            zone,
            title,
            empty="no ticks in this range",
        )
        if plot is not None:
            print(f"chart written to {plot}", file=sys.stderr)
        return 0

    return with_database(args, body)


def _plot(
    path: Path,
    symbol: str,
    interval: str,
    bars: list[Bar],
    start: datetime | None,
    end: datetime | None,
    zone: tzinfo,
) -> None:
    """The candlestick chart (ChartError, a bad-input error, when there is nothing or too much to plot)."""
    from pipeline.cli.reading import zone_label
    from pipeline.read.chart import plot_ohlc
    from pipeline.read.query import interval_delta

    title = symbol
    if bars:
        first = start or bars[0].start
        last = end or bars[-1].start + interval_delta(interval)
        fmt = "%Y-%m-%d %H:%M"
        span = f"{first.astimezone(zone).strftime(fmt)} to {last.astimezone(zone).strftime(fmt)}"
        title = f"{symbol}  {interval} bars  {span} ({zone_label(zone, first)})  {len(bars)} bars"
    plot_ohlc(
        bars,
        path,
        title=title,
        interval=interval_delta(interval),
        zone=zone,
        zone_label=zone_label(zone, bars[0].start if bars else None),
    )


def _plot_path(text: str) -> Path:
    from pathlib import Path

    from pipeline.read.query import QueryError

    path = Path(text)
    if path.suffix.lower() != ".png":
        raise QueryError(f"--plot {text!r}: the chart is a PNG, name the file *.png")
    if not path.parent.is_dir():
        raise QueryError(f"--plot {text!r}: directory {str(path.parent)!r} does not exist")
    return path


def _per_symbol(
    args: argparse.Namespace,
    fetch: Callable[[Db, CollectionResolver], Iterable[Any]],
    columns: list[Column],
    title: str,
) -> int:
    """stats and latest: one row per symbol (restricted to the SYMBOL arguments, each of which must exist)."""
    from pipeline.cli.reading import emit, with_database
    from pipeline.read.query import UnknownSymbol, normalize_symbol, parse_zone

    def body(settings: Settings, db: Db, resolver: CollectionResolver) -> int:
        wanted = {normalize_symbol(s, settings.tick.symbol_pattern) for s in args.symbols}
        zone = parse_zone(args.tz or "UTC")
        rows = [r for r in fetch(db, resolver) if not wanted or r.symbol in wanted]
        missing = sorted(wanted - {r.symbol for r in rows})
        if missing:
            raise UnknownSymbol(resolver.unknown_message(missing[0]))
        where = f"{title} in database {settings.mongo.database!r}"
        emit((vars(r) for r in rows), columns, args.format, zone, where, empty="no ticks stored")
        return 0

    return with_database(args, body)


def query_stats(args: argparse.Namespace) -> int:
    from pipeline.cli.reading import Column
    from pipeline.read.query import stats

    columns = [
        Column("symbol", "symbol"),
        Column("collection", "collection"),
        Column("count", "ticks", "int"),
        Column("first_ts", "first", "time"),
        Column("last_ts", "last", "time"),
        Column("last_price", "last price", "price"),
        Column("avg_price", "avg price", "float4"),
        Column("total_volume", "volume", "int"),
    ]
    return _per_symbol(args, stats, columns, "ticks stored")


def query_latest(args: argparse.Namespace) -> int:
    from pipeline.read.query import latest

    return _per_symbol(args, latest, _tick_columns("symbol"), "latest tick of each symbol")
