"""Decoding Kafka message values into MongoDB documents (pure, no I/O; the per-message hot path).

A `DataError` means the message can never be stored as it is (bad JSON, wrong types, out-of-bounds values,
field names MongoDB rejects, too large). Such messages go to the dead-letter destination or stop the
worker, depending on `errors.tolerance`; they are never retried.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import bson
import orjson
from bson.binary import Binary
from bson.datetime_ms import DatetimeMS

from pipeline.core.timefmt import EPOCH

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
# MongoDB's maxBsonObjectSize. Values this big are measured exactly (as BSON) before they are accepted.
MAX_BSON_BYTES = 16 * 1024 * 1024
_SIZE_CHECK_FROM = 512 * 1024
# Fields the pipeline owns in every stored document.
RESERVED_FIELDS = frozenset({"_id", "kafka", "ingested_at"})
TICK_FIELDS = ("symbol", "price", "volume", "ts")
# Symbols are stored uppercase; this is also what keeps a user-supplied symbol from being a query operator.
SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
# The index every tick collection has: range queries by symbol and time (and the read side finds tick
# collections by it).
TICK_INDEX_NAME = "symbol_1_ts_1"
TICK_INDEX = [("symbol", 1), ("ts", 1)]


class DataError(Exception):
    """A message that can never be stored. `kind` is a stable, machine-readable error class."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class TickSchema:
    """Types and bounds of a tick: symbol pattern, price in (min_price, max_price], 0 <= volume <= max."""

    symbol_pattern: str = SYMBOL_PATTERN
    min_price: float = 0.0
    max_price: float = 1e12
    max_volume: int = INT64_MAX


class Decoder(Protocol):
    def __call__(self, value: bytes | None) -> dict[str, Any]: ...


def parse_json_object(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise DataError("null_value", "message has no value (tombstone)")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DataError("invalid_json", f"value is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise DataError("not_an_object", f"JSON value is a {type(obj).__name__}, expected an object")
    return obj


def parse_timestamp(value: Any) -> datetime:
    """ISO-8601 string (naive means UTC) or epoch milliseconds -> aware UTC datetime."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise DataError("invalid_timestamp", f"ts {value[:64]!r} is not an ISO-8601 timestamp") from None
        if parsed.tzinfo is UTC:  # the usual "...Z": nothing to convert
            return parsed
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise DataError("invalid_timestamp", f"ts {value!r} epoch-millis is out of range") from None
    raise DataError("invalid_timestamp", f"ts must be an ISO-8601 string or epoch millis, got {_kind(value)}")


def check_fields(obj: Any, path: str = "") -> None:
    """Reject what MongoDB cannot store: '$'-prefixed or NUL-containing keys, integers beyond int64."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            if key.startswith("$") or "\0" in key:
                raise DataError("invalid_field_name", f"field name {path}{key!r} is not allowed in MongoDB")
            if isinstance(value, dict | list | int):
                check_fields(value, f"{path}{key}.")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict | list | int):
                check_fields(item, path)
    elif isinstance(obj, int) and not INT64_MIN <= obj <= INT64_MAX:
        raise DataError("integer_out_of_range", f"integer in {path.rstrip('.') or 'value'} exceeds 64 bits")


def check_size(value: bytes, document: dict[str, Any]) -> None:
    if len(value) >= _SIZE_CHECK_FROM and len(bson.encode(document)) > MAX_BSON_BYTES:
        raise DataError("document_too_large", f"document exceeds MongoDB's {MAX_BSON_BYTES} byte limit")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def make_tick_decoder(schema: TickSchema) -> Decoder:
    symbol_ok = re.compile(schema.symbol_pattern).match
    min_price, max_price, max_volume = schema.min_price, schema.max_price, schema.max_volume

    def decode(value: bytes | None) -> dict[str, Any]:
        obj = parse_json_object(value)
        try:
            symbol = obj["symbol"]
            price = obj["price"]
            volume = obj["volume"]
            ts = obj["ts"]
        except KeyError as exc:
            raise DataError("missing_field", f"required field {exc.args[0]!r} is missing") from None
        if not isinstance(symbol, str) or not symbol_ok(symbol):
            raise DataError(
                "invalid_field", f"symbol {str(symbol)[:40]!r} does not match {schema.symbol_pattern}"
            )
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise DataError("invalid_field", f"price must be a number, got {_kind(price)}")
        if not min_price < price <= max_price:
            raise DataError("out_of_bounds", f"price {price} is outside ({min_price}, {max_price}]")
        if isinstance(volume, float) and volume.is_integer():
            volume = int(volume)
        if isinstance(volume, bool) or not isinstance(volume, int):
            raise DataError("invalid_field", f"volume must be an integer, got {_kind(volume)}")
        if not 0 <= volume <= max_volume:
            raise DataError("out_of_bounds", f"volume {volume} is outside [0, {max_volume}]")
        fields: dict[str, Any] = {
            "symbol": symbol.upper(),
            "price": float(price),
            "volume": volume,
            "ts": parse_timestamp(ts),
        }
        if len(obj) > 4:
            for key, extra in obj.items():
                if key in fields:
                    continue
                if key in RESERVED_FIELDS:
                    raise DataError("reserved_field", f"field {key!r} is reserved by the pipeline")
                fields[key] = extra
            check_fields({k: v for k, v in fields.items() if k not in TICK_FIELDS})
        return fields

    return decode


def decode_raw(value: bytes | None) -> dict[str, Any]:
    """Any JSON object, stored as-is (format: raw)."""
    obj = parse_json_object(value)
    for key in RESERVED_FIELDS.intersection(obj):
        raise DataError("reserved_field", f"field {key!r} is reserved by the pipeline")
    check_fields(obj)
    return obj


def decode_key(key: bytes | None) -> str | Binary | None:
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return Binary(key)


def make_document(
    fields: dict[str, Any],
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    ingested_at: datetime,
) -> dict[str, Any]:
    """The stored document. `_id` is the message's coordinates, which makes every insert idempotent."""
    document: dict[str, Any] = {"_id": {"topic": topic, "partition": partition, "offset": offset}}
    document.update(fields)
    document["kafka"] = {
        # DatetimeMS is stored as a BSON date, like a datetime, without building one per message.
        "timestamp": DatetimeMS(timestamp_ms) if timestamp_ms is not None else None,
        "key": decode_key(key),
    }
    document["ingested_at"] = ingested_at
    return document


def document_id(topic: str, partition: int, offset: int) -> dict[str, Any]:
    return {"topic": topic, "partition": partition, "offset": offset}


DecoderFactory = Callable[[str], Decoder]
