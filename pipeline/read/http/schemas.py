"""The JSON shapes of the HTTP API (pydantic models: they validate every response and make the OpenAPI
document). Times are ISO-8601 in UTC with milliseconds; prices are exactly as stored: a double as the
shortest decimal that reads back as it, a Decimal128 price (and what MongoDB computes from such prices) as a
JSON number with exactly its digits, as `pipeline query --format json` writes them (`to_json`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

from pipeline.read.query import Bar, SymbolStats, Tick

Order = Literal["oldest_first", "newest_first"]


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# A UTC instant in JSON: ISO-8601 with milliseconds and Z (2026-01-05T13:00:00.037Z), as stored.
Time = Annotated[
    datetime,
    PlainSerializer(_iso, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
# A price: a float (a stored double) or a Decimal (a Decimal128 price), a JSON number either way.
Price = Annotated[float | Decimal, WithJsonSchema({"type": "number"})]


def _exact(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value))  # a JSON number with exactly the Decimal's digits
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def to_json(model: BaseModel) -> bytes:
    """The model as JSON, Decimal prices with exactly their digits (pydantic would make them strings)."""
    return orjson.dumps(model.model_dump(mode="python", by_alias=True), default=_exact)


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(_Out):
    """Every error: a stable code and one sentence for a person."""

    error: str = Field(description="A stable code, e.g. `invalid_symbol`, `unknown_symbol`, `unavailable`.")
    message: str = Field(description="One sentence saying what was wrong.")


class TickOut(_Out):
    symbol: str
    ts: Time = Field(description="The tick's time (UTC, millisecond precision).")
    price: Price
    volume: int
    topic: str = Field(description="Kafka coordinates of the tick: topic, partition, offset.")
    partition: int
    offset: int

    @classmethod
    def of(cls, tick: Tick) -> TickOut:
        return cls(
            symbol=tick.symbol,
            ts=tick.ts,
            price=tick.price,
            volume=tick.volume,
            topic=tick.topic,
            partition=tick.partition,
            offset=tick.offset,
        )


class TickPage(_Out):
    symbol: str
    order: Order
    from_: Time | None = Field(alias="from", description="The range's start (inclusive), if given.")
    to: Time | None = Field(description="The range's end (exclusive), if given.")
    ticks: list[TickOut]
    next_cursor: str | None = Field(
        description="Pass as `cursor` (same symbol and order) for the ticks after the last one of this page; "
        "null on the last page."
    )

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class BarOut(_Out):
    start: Time = Field(description="Bar start (UTC); the bar holds start <= ts < start + interval.")
    open: Price = Field(description="Price of the first tick of the bar in the tick order.")
    high: Price
    low: Price
    close: Price = Field(description="Price of the last tick of the bar in the tick order.")
    volume: int
    trades: int = Field(description="Number of ticks in the bar.")
    vwap: Price | None = Field(description="sum(price * volume) / sum(volume); null when the volume is 0.")
    first_ts: Time
    last_ts: Time

    @classmethod
    def of(cls, bar: Bar) -> BarOut:
        return cls(
            start=bar.start,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            trades=bar.trades,
            vwap=bar.vwap,
            first_ts=bar.first_ts,
            last_ts=bar.last_ts,
        )


class Bars(_Out):
    symbol: str
    interval: str
    align_tz: str | None = Field(description="The zone bars are aligned to; null: UTC.")
    from_: Time | None = Field(alias="from")
    to: Time | None
    bars: list[BarOut]

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)


class StatsOut(_Out):
    symbol: str
    collection: str
    count: int
    first_ts: Time
    last_ts: Time
    last_price: Price = Field(description="Price of the last tick in the tick order.")
    avg_price: Price
    total_volume: int

    @classmethod
    def of(cls, row: SymbolStats) -> StatsOut:
        return cls(**vars(row))


class Stats(_Out):
    database: str
    stats: list[StatsOut]


class Latest(_Out):
    database: str
    ticks: list[TickOut] = Field(description="The newest tick of each symbol, sorted by symbol.")


class Symbols(_Out):
    database: str
    symbols: list[str]


class _Open(BaseModel):
    """`pipeline status` output: the documented fields, and any field a newer status adds, passed through."""

    model_config = ConfigDict(extra="allow")


class PartitionOut(_Open):
    partition: int
    committed: int | None = Field(description="Next offset the group will read; null: nothing committed.")
    end_offset: int = Field(description="High watermark as reported by the broker.")
    lag: int | None
    end_offset_reliable: bool


class TopicOut(_Open):
    topic: str
    exists: bool
    collection: str | None
    stored_documents: int | None = Field(description="Estimated count of the topic's collection.")
    partitions: list[PartitionOut]
    committed_total: int | None
    end_total: int
    lag_total: int | None
    end_offsets_reliable: bool


class Status(_Open):
    group: str
    kafka: str
    mongo: str = Field(description="The MongoDB URI, password masked.")
    database: str
    group_protocol: str | None = Field(
        None, description="As the broker describes the group: `classic` or `consumer` (KIP-848); null: none."
    )
    group_protocol_configured: str | None = Field(None, description="`kafka.group_protocol` of this service.")
    group_state: str | None = Field(None, description="The group's state (`stable`, `empty`, `dead`, ...).")
    group_members: int | None = None
    group_description_error: str | None = Field(None, description="Why the broker could not describe it.")
    end_offset_source: str
    end_offsets_reliable: bool
    topics: list[TopicOut]


class Health(_Out):
    status: Literal["ok", "unavailable"]
    mongo: bool | None = None
