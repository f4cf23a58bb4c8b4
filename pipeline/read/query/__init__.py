"""Reading stored ticks back (library API; `pipeline query` and `pipeline export` are its command line).

Every function takes a pymongo `Database` and returns plain dataclasses, so it works the same from the CLI, a
notebook or a test. Aggregations (OHLC bars, statistics, latest ticks) run on the server.

    from pymongo import MongoClient
    from pipeline import query

    db = MongoClient("mongodb://127.0.0.1:27017/?directConnection=true")["market"]
    query.ticks(db, "petr4", start=datetime(2026, 1, 5, 13, tzinfo=UTC), limit=10)
    query.ohlc(db, "PETR4", "5m")
    query.ohlc(db, "PETR4", "1d", align_tz="America/Sao_Paulo")
    query.stats(db)
    query.latest(db)

Ranges are half-open, `start <= ts < end`, in UTC (a naive datetime means UTC). Symbols are stored uppercase
and user input is uppercased. Every query value comes from a typed argument: a symbol must be a string
matching the tick schema's symbol pattern, so it can never become a query operator. Ticks are always in one
order: ts, then partition, then offset (`model`).

The package: `model` (results, the tick order), `errors`, `params` (parsing and validation), `resolver`
(which collections hold a symbol), `ticks` (listing and counting), `paging` (the ticks after a given tick:
cursor paging without skip), `aggregations` (OHLC, statistics, latest).
"""

from pipeline.core.codec import SYMBOL_PATTERN, TICK_INDEX_NAME
from pipeline.read.query.aggregations import (
    bucket_expression,
    latest,
    ohlc,
    ohlc_pipeline,
    stats,
    symbol_stats,
)
from pipeline.read.query.errors import (
    InvalidInterval,
    InvalidRange,
    InvalidSymbol,
    InvalidTime,
    InvalidTimezone,
    QueryError,
    UnknownSymbol,
)
from pipeline.read.query.model import Bar, Db, OrderKey, SymbolStats, Tick, order_key
from pipeline.read.query.paging import check_order_key, iter_ticks_after
from pipeline.read.query.params import (
    DEFAULT_SYMBOL_PATTERN,
    INTERVALS,
    Interval,
    alignment_zone,
    check_interval,
    check_limit,
    check_nonempty_range,
    check_range,
    interval_delta,
    normalize_symbol,
    parse_time,
    parse_zone,
)
from pipeline.read.query.resolver import CollectionResolver, Collections
from pipeline.read.query.ticks import count_ticks, in_tick_order, iter_ticks, tick_filter, tick_sort, ticks

__all__ = [
    "DEFAULT_SYMBOL_PATTERN",
    "INTERVALS",
    "SYMBOL_PATTERN",
    "TICK_INDEX_NAME",
    "Bar",
    "CollectionResolver",
    "Collections",
    "Db",
    "Interval",
    "InvalidInterval",
    "InvalidRange",
    "InvalidSymbol",
    "InvalidTime",
    "InvalidTimezone",
    "OrderKey",
    "QueryError",
    "SymbolStats",
    "Tick",
    "UnknownSymbol",
    "alignment_zone",
    "bucket_expression",
    "check_interval",
    "check_limit",
    "check_nonempty_range",
    "check_order_key",
    "check_range",
    "count_ticks",
    "in_tick_order",
    "interval_delta",
    "iter_ticks",
    "iter_ticks_after",
    "latest",
    "normalize_symbol",
    "ohlc",
    "ohlc_pipeline",
    "order_key",
    "parse_time",
    "parse_zone",
    "stats",
    "symbol_stats",
    "tick_filter",
    "tick_sort",
    "ticks",
]
