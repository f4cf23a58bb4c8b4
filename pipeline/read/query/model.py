"""What queries return (frozen dataclasses with aware UTC datetimes) and the one order of ticks.

**The order of ticks**, everywhere (tick lists in both directions, OHLC open and close, the last price of
the statistics, the latest tick, exports): by `ts`, then Kafka partition, then offset, then topic. Ticks of
one millisecond are thus in the order a reader of their partition saw them; `newest_first` is exactly the
reverse. MongoDB walks the `{symbol, ts}` index for the `ts` part; ties are ordered by `order_key` on the
client, or compared with `$min`/`$max` over an `order_document` in aggregations (BSON compares embedded
documents field by field, in order).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from pymongo.collection import Collection
from pymongo.database import Database

Db = Database[dict[str, Any]]
CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)
# A stored price: a float (a BSON double or integer) or, with `tick.price_type: decimal128`, the exact
# Decimal of a BSON Decimal128. Both may be in one collection (a configuration change); results of
# aggregations over decimal prices are Decimal (MongoDB computes them in Decimal128).
Price = float | Decimal


def price_of(value: Any) -> Price | None:
    """A stored number as a Price: a Decimal128 as its exact Decimal, an int or a double as a float; None
    for anything else (not a number, or a Decimal128 NaN/Infinity)."""
    if isinstance(value, Decimal128):
        number = value.to_decimal()
        return number if number.is_finite() else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass(frozen=True)
class Tick:
    symbol: str
    ts: datetime  # aware, UTC
    price: Price
    volume: int
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Bar:
    """One OHLC bar: ticks with start <= ts < start + interval."""

    start: datetime  # aware, UTC
    open: Price
    high: Price
    low: Price
    close: Price
    volume: int
    trades: int
    vwap: Price | None  # sum(price * volume) / sum(volume); None when the bar's volume is 0
    first_ts: datetime
    last_ts: datetime


@dataclass(frozen=True)
class SymbolStats:
    symbol: str
    collection: str
    count: int
    first_ts: datetime
    last_ts: datetime
    last_price: Price
    avg_price: Price
    total_volume: int


OrderKey = tuple[datetime, int, int, str]


def order_key(tick: Tick) -> OrderKey:
    """The one order of ticks: ts, then partition, then offset, then topic."""
    return (tick.ts, tick.partition, tick.offset, tick.topic)


def order_document(**values: Any) -> dict[str, Any]:
    """An aggregation expression whose BSON comparison is the tick order (then `values`): `$min` of it is
    the first tick of a group, `$max` the last."""
    order = {"ts": "$ts", "partition": "$_id.partition", "offset": "$_id.offset", "topic": "$_id.topic"}
    return {**order, **values}


def document_order_key(doc: dict[str, Any]) -> OrderKey:
    """order_key of a document built by `order_document` (for merging results of several collections)."""
    return (doc["ts"], int(doc.get("partition", -1)), int(doc.get("offset", -1)), str(doc.get("topic", "")))


def tick_from_doc(doc: dict[str, Any]) -> Tick | None:
    """A stored document as a Tick; None when it is not a tick (e.g. a raw-format document with a symbol)."""
    _id = doc.get("_id")
    ts = doc.get("ts")
    price = price_of(doc.get("price"))
    volume = doc.get("volume")
    if not isinstance(ts, datetime) or price is None or not isinstance(volume, int):
        return None
    coords = _id if isinstance(_id, dict) else {}
    return Tick(
        symbol=str(doc.get("symbol")),
        ts=ts,
        price=price,
        volume=int(volume),
        topic=str(coords.get("topic", "")),
        partition=int(coords.get("partition", -1)),
        offset=int(coords.get("offset", -1)),
    )


def collection(db: Db, name: str) -> Collection[dict[str, Any]]:
    """A collection that returns aware UTC datetimes."""
    return db.get_collection(name, codec_options=CODEC)
