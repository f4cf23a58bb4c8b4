"""Server-side aggregations: OHLC bars, per-symbol statistics, the latest tick of each symbol.

First and last ticks of a group (a bar's open and close, the last price, the latest tick) follow the one tick
order (ts, partition, offset, topic): `$min`/`$max` of an `order_document` pick them without sorting, and
results of several collections are merged with the same order.

Prices may be doubles or Decimal128 (`tick.price_type`), even mixed: MongoDB compares and sums them across
types (a sum or average that meets a Decimal128 is a Decimal128), and results come back as `Price` (float or
exact Decimal). A server that lacks an operator these pipelines use (FerretDB 1.x has neither `$dateTrunc`
nor the `$min`/`$max`/`$first` accumulators) is reported in one line naming it (`UnsupportedOperation`).
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, tzinfo
from decimal import Decimal
from typing import Any

from pymongo.errors import OperationFailure

from pipeline.core.errors import PipelineError
from pipeline.read.query.model import (
    Bar,
    Db,
    Price,
    SymbolStats,
    Tick,
    collection,
    document_order_key,
    order_document,
    order_key,
    price_of,
    tick_from_doc,
)
from pipeline.read.query.params import INTERVALS, alignment_zone, check_interval, check_range
from pipeline.read.query.resolver import Collections, all_collections, candidates, first_nonempty
from pipeline.read.query.ticks import tick_filter

# Decimal128's precision, for what is computed on the client from Decimal results (combined VWAPs).
_DECIMAL128 = decimal.Context(prec=34)
# Server replies meaning "this operator does not exist here": NotImplemented (FerretDB), unknown $group
# operator, unrecognized expression, unknown pipeline stage.
_UNSUPPORTED_CODES = frozenset({238, 15952, 168, 40324})
_OPERATOR = re.compile(r"\$[A-Za-z]+")


class UnsupportedOperation(PipelineError):
    """The MongoDB server does not implement an aggregation operator a query needs (exit code 1: the
    input is fine, the server cannot answer it)."""


def aggregate(db: Db, name: str, pipeline: Sequence[dict[str, Any]], what: str) -> Iterator[dict[str, Any]]:
    """db[name].aggregate(pipeline), with an operator the server lacks reported as one line."""
    try:
        yield from collection(db, name).aggregate(list(pipeline))
    except OperationFailure as exc:
        if exc.code not in _UNSUPPORTED_CODES:
            raise
        message = str((exc.details or {}).get("errmsg") or exc)
        # The operator is the last one named ("Invalid $group :: caused by :: The operator $dateTrunc ...").
        operators = _OPERATOR.findall(message)
        operator = operators[-1] if operators else "an aggregation operator"
        raise UnsupportedOperation(
            f"the MongoDB server of database {db.name!r} does not implement {operator}, needed for {what} "
            f"(it said: {message[:200]}); MongoDB 5.0+ implements every operator tickpipe's queries use"
        ) from None


def _number_sum(values: Iterable[Any]) -> Price:
    """Sum of server-computed numbers, exact (Decimal) as soon as one of them is a Decimal128."""
    numbers = [price_of(v) for v in values]
    if any(isinstance(n, Decimal) for n in numbers):
        return sum((Decimal(n) if n is not None else Decimal(0) for n in numbers), Decimal(0))
    return sum(float(n or 0.0) for n in numbers)


def _price(value: Any, what: str) -> Price:
    price = price_of(value)
    if price is None:
        raise PipelineError(f"a stored {what} is not a number: {str(value)[:40]!r}")
    return price


# ---- OHLC bars ------------------------------------------------------------------------------------------


def bucket_expression(interval: str, align_tz: str | tzinfo | None = None) -> dict[str, Any]:
    """The bar start of a tick: `$dateTrunc` of its ts to the interval, in UTC or in an IANA zone (local
    midnight and hours, DST-correct: a 1d bar of a day with a DST change lasts 23 or 25 hours)."""
    unit, size = INTERVALS[check_interval(interval)]
    trunc: dict[str, Any] = {"date": "$ts", "unit": unit, "binSize": size}
    zone = alignment_zone(align_tz)
    if zone is not None:
        trunc["timezone"] = zone  # a validated zone name, never a '$' expression
    return {"$dateTrunc": trunc}


def ohlc_pipeline(
    symbol: str,
    interval: str,
    start: datetime | None = None,
    end: datetime | None = None,
    align_tz: str | tzinfo | None = None,
) -> list[dict[str, Any]]:
    """The server-side aggregation: range $match (the index), $group by bar start, with the open and close
    as the $min/$max of the tick order."""
    return [
        {"$match": tick_filter(symbol, start, end)},
        {
            "$group": {
                "_id": bucket_expression(interval, align_tz),
                "first": {"$min": order_document(price="$price")},
                "last": {"$max": order_document(price="$price")},
                "high": {"$max": "$price"},
                "low": {"$min": "$price"},
                "volume": {"$sum": "$volume"},
                "trades": {"$sum": 1},
                "pv": {"$sum": {"$multiply": ["$price", "$volume"]}},
            }
        },
        {
            "$project": {
                "_id": 0,
                "start": "$_id",
                "first": 1,
                "last": 1,
                "high": 1,
                "low": 1,
                "volume": 1,
                "trades": 1,
                "pv": 1,
                "vwap": {"$cond": [{"$gt": ["$volume", 0]}, {"$divide": ["$pv", "$volume"]}, None]},
            }
        },
        {"$sort": {"start": 1}},
    ]


def ohlc(
    db: Db,
    symbol: str,
    interval: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    collections: Collections = None,
    align_tz: str | tzinfo | None = None,
) -> list[Bar]:
    """OHLC bars (open, high, low, close, volume, trades, VWAP) of a symbol, computed by MongoDB.

    Bars are aligned to UTC (e.g. 5m bars start at :00, :05, ...; 1d bars at 00:00 UTC), or with `align_tz`
    (an IANA name such as "America/Sao_Paulo") to that zone's local midnight and hours; `start` is always a
    UTC instant. Only bars with at least one tick are returned. A symbol stored in several collections gets
    one aggregation per collection, and bars of the same start are combined (open of the first tick, close
    of the last, in the tick order)."""
    check_interval(interval)
    lo, hi = check_range(start, end)
    alignment_zone(align_tz)
    name, tiers = candidates(db, symbol, collections)
    pipeline = ohlc_pipeline(name, interval, lo, hi, align_tz)

    def run(names: list[str]) -> list[Bar]:
        rows: dict[datetime, list[dict[str, Any]]] = {}
        for n in names:
            for row in aggregate(db, n, pipeline, "OHLC bars"):
                rows.setdefault(row["start"], []).append(row)
        return [_combine(parts) for _, parts in sorted(rows.items())]

    return first_nonempty(db, name, collections, tiers, run)


def _combine(parts: list[dict[str, Any]]) -> Bar:
    first = min((r["first"] for r in parts), key=document_order_key)
    last = max((r["last"] for r in parts), key=document_order_key)
    volume = sum(int(r["volume"]) for r in parts)
    vwap: Price | None
    if len(parts) == 1:
        vwap = price_of(parts[0]["vwap"])
    else:
        pv = _number_sum(r["pv"] for r in parts)
        if not volume:
            vwap = None
        elif isinstance(pv, Decimal):
            vwap = _DECIMAL128.divide(pv, Decimal(volume))
        else:
            vwap = pv / volume
    return Bar(
        start=parts[0]["start"],
        open=_price(first["price"], "open price"),
        high=max(_price(r["high"], "price") for r in parts),
        low=min(_price(r["low"], "price") for r in parts),
        close=_price(last["price"], "close price"),
        volume=volume,
        trades=sum(int(r["trades"]) for r in parts),
        vwap=vwap,
        first_ts=first["ts"],
        last_ts=last["ts"],
    )


# ---- per-symbol statistics ------------------------------------------------------------------------------

_STATS_PIPELINE: list[dict[str, Any]] = [
    {
        "$group": {
            "_id": "$symbol",
            "count": {"$sum": 1},
            "first": {"$min": order_document()},
            "last": {"$max": order_document(price="$price")},
            "avg_price": {"$avg": "$price"},
            "total_volume": {"$sum": "$volume"},
        }
    },
    {"$sort": {"_id": 1}},
]


def symbol_stats(db: Db, collections: Iterable[str]) -> list[SymbolStats]:
    """Per symbol: count, first/last ts, last price (of the last tick in the tick order), average price,
    total volume (server-side $group)."""
    result = []
    for name in collections:
        for row in aggregate(db, name, _STATS_PIPELINE, "statistics"):
            first, last = row.get("first") or {}, row.get("last") or {}
            if not isinstance(row["_id"], str) or not isinstance(first.get("ts"), datetime):
                continue  # documents without a symbol or ts (e.g. raw-format data)
            result.append(
                SymbolStats(
                    symbol=row["_id"],
                    collection=name,
                    count=int(row["count"]),
                    first_ts=first["ts"],
                    last_ts=last["ts"],
                    last_price=_price(last["price"], "last price"),
                    avg_price=_price(row["avg_price"], "average price"),
                    total_volume=int(row["total_volume"]),
                )
            )
    return sorted(result, key=lambda s: (s.symbol, s.collection))


def stats(db: Db, collections: Collections = None) -> list[SymbolStats]:
    """symbol_stats over every tick collection (see CollectionResolver), one row per symbol and collection."""
    return symbol_stats(db, all_collections(db, collections))


# ---- latest ticks ---------------------------------------------------------------------------------------

# The newest ts of each symbol. Descending on both index keys with only $first: MongoDB answers it from the
# {symbol, ts} index, one entry per symbol (DISTINCT_SCAN), however many ticks are stored.
_NEWEST_TS_PIPELINE: list[dict[str, Any]] = [
    {"$sort": {"symbol": -1, "ts": -1}},
    {"$group": {"_id": "$symbol", "ts": {"$first": "$ts"}}},
]
_LOOKUPS_PER_QUERY = 500


def latest(db: Db, collections: Collections = None) -> list[Tick]:
    """The newest tick of each symbol over all its collections (the last in the tick order: of the ticks
    sharing the newest ts, the highest partition, then offset), sorted by symbol."""
    newest: dict[str, Tick] = {}
    for name in all_collections(db, collections):
        coll = collection(db, name)
        newest_ts = [
            {"symbol": row["_id"], "ts": row["ts"]}
            for row in aggregate(db, name, _NEWEST_TS_PIPELINE, "the latest ticks")
            if isinstance(row["_id"], str) and isinstance(row["ts"], datetime)
        ]
        # The ticks at each symbol's newest ts (index point lookups); the last of them in the tick order.
        for first in range(0, len(newest_ts), _LOOKUPS_PER_QUERY):
            for doc in coll.find({"$or": newest_ts[first : first + _LOOKUPS_PER_QUERY]}):
                tick = tick_from_doc(doc)
                if tick is not None and (
                    tick.symbol not in newest or order_key(tick) > order_key(newest[tick.symbol])
                ):
                    newest[tick.symbol] = tick
    return [newest[s] for s in sorted(newest)]
