"""Decoding Kafka message values into MongoDB documents (pure, no I/O; the per-message hot path).

A tick decoder is built once per schema (`make_tick_decoder`): the field mapping (`fields`: which source
field, or dotted path into nested input, holds each of symbol/price/volume/ts), the timestamp format
(`ts_format`) and the price type (`price_type`: a double, or an exact Decimal128 read from the JSON text)
are resolved then, so the per-message work is what it was without them (bench/decode_mapping.py).

A `DataError` means the message can never be stored as it is (bad JSON, wrong types, out-of-bounds values,
field names MongoDB rejects, too large). Such messages go to the dead-letter destination or stop the
worker, depending on `errors.tolerance`; they are never retried. A decoder never raises anything else: any
failure to turn one message into a document is that message's data error (`guarded`), so one message can
never stop the pipeline.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol, get_args

import bson
import orjson
from bson.binary import Binary
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128

from pipeline.core.timefmt import EPOCH

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_TWO_POW_63 = float(2**63)
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
# How a tick's `ts` is written: `iso` (the default) is an ISO-8601 string, or a number of epoch milliseconds;
# the epoch formats are numbers in that unit.
TsFormat = Literal["iso", "epoch_ms", "epoch_s", "epoch_us", "epoch_ns"]
TS_FORMATS: tuple[TsFormat, ...] = get_args(TsFormat)
# How a tick's price is stored: a BSON double, or a Decimal128 made from the JSON text (no float round trip).
PriceType = Literal["double", "decimal128"]
PRICE_TYPES: tuple[PriceType, ...] = get_args(PriceType)
# Decimal128: 34 significant digits, exponents from -6176 (prices are bounded above by max_price).
DECIMAL128_DIGITS = 34
DECIMAL128_MIN_EXPONENT = -6176


class DataError(Exception):
    """A message that can never be stored. `kind` is a stable, machine-readable error class."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class TickSchema:
    """Types and bounds of a tick: symbol pattern, price in (min_price, max_price], 0 <= volume <= max; where
    each tick field is read from (`fields`: tick field -> source field or dotted path; unlisted fields are
    read from their own name), how `ts` is written and how the price is stored."""

    symbol_pattern: str = SYMBOL_PATTERN
    min_price: float = 0.0
    max_price: float = 1e12
    max_volume: int = INT64_MAX
    fields: Mapping[str, str] | None = None
    ts_format: TsFormat = "iso"
    price_type: PriceType = "double"


def check_field_mapping(fields: Mapping[str, Any]) -> dict[str, str]:
    """A valid `fields` mapping (tick field -> source field, dotted for nested input), or ValueError with one
    line naming the problem. Identity entries (`price: price`) are allowed."""
    mapping: dict[str, str] = {}
    for target, source in fields.items():
        if target not in TICK_FIELDS:
            raise ValueError(f"unknown tick field {target!r}: map {', '.join(TICK_FIELDS)}")
        if not isinstance(source, str) or not source:
            raise ValueError(f"{target}: the source field must be a non-empty string, got {source!r}")
        for part in source.split("."):
            if not part:
                raise ValueError(f"{target}: source path {source!r} has an empty part")
            if part.startswith("$") or "\0" in part:
                raise ValueError(f"{target}: source path {source!r} has a part MongoDB cannot name")
        mapping[target] = source
    sources = [mapping.get(t, t) for t in TICK_FIELDS]
    for target, source in zip(TICK_FIELDS, sources, strict=True):
        if sources.count(source) > 1:
            others = [t for t, s in zip(TICK_FIELDS, sources, strict=True) if s == source and t != target]
            raise ValueError(f"{target} and {others[0]} are both read from {source!r}")
    return mapping


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


def guarded(decode: Decoder) -> Decoder:
    """Any exception a decoder raises becomes a `DataError` of the message (kind `undecodable`)."""

    def safe(value: bytes | None) -> dict[str, Any]:
        try:
            return decode(value)
        except DataError:
            raise
        except Exception as exc:  # a bug or an input nobody foresaw: this message's problem, not the worker's
            raise DataError("undecodable", f"{type(exc).__name__}: {str(exc)[:200]}") from None

    return safe


def parse_timestamp(value: Any, label: str = "ts") -> datetime:
    """ISO-8601 string (naive means UTC) or epoch milliseconds -> aware UTC datetime (`ts_format: iso`).
    `label` names the field in error messages."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise DataError(
                "invalid_timestamp", f"{label} {value[:64]!r} is not an ISO-8601 timestamp"
            ) from None
        if parsed.tzinfo is UTC:  # the usual "...Z": nothing to convert
            return parsed
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        try:
            return parsed.astimezone(UTC)
        except OverflowError:  # e.g. year 1 at +01:00: the UTC instant is before year 1
            raise DataError(
                "invalid_timestamp", f"{label} {value[:64]!r} is outside the representable range"
            ) from None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return EPOCH + timedelta(milliseconds=value)
        except OverflowError:
            raise DataError("invalid_timestamp", f"{label} {value!r} epoch-millis is out of range") from None
    raise DataError(
        "invalid_timestamp", f"{label} must be an ISO-8601 string or epoch millis, got {_kind(value)}"
    )


_EPOCH_UNIT_NAMES = {
    "epoch_s": "seconds",
    "epoch_ms": "milliseconds",
    "epoch_us": "microseconds",
    "epoch_ns": "nanoseconds",
}


def timestamp_parser(ts_format: TsFormat, label: str = "ts") -> Callable[[Any], datetime]:
    """The parser of one `ts_format` (an epoch format takes a JSON number in its unit, nothing else)."""
    if ts_format == "iso":
        if label == "ts":
            return parse_timestamp
        return lambda value: parse_timestamp(value, label)
    if ts_format not in TS_FORMATS:
        raise ValueError(f"unknown ts_format {ts_format!r}: use one of {', '.join(TS_FORMATS)}")
    unit = _EPOCH_UNIT_NAMES[ts_format]
    # timedelta(days, seconds, microseconds, milliseconds): positional arguments are the cheapest call.
    to_delta: Callable[[Any], timedelta] = {
        "epoch_s": lambda v: timedelta(0, v),
        "epoch_ms": lambda v: timedelta(0, 0, 0, v),
        "epoch_us": lambda v: timedelta(0, 0, v),
        # Integer nanoseconds stay exact down to the microsecond (a BSON date keeps milliseconds).
        "epoch_ns": lambda v: timedelta(0, 0, v // 1000 if isinstance(v, int) else v / 1000),
    }[ts_format]

    def parse(value: Any) -> datetime:
        if value.__class__ is bool or not isinstance(value, int | float):
            raise DataError(
                "invalid_timestamp",
                f"{label} must be a number of epoch {unit} ({ts_format}), got {_kind(value)}",
            )
        try:
            return EPOCH + to_delta(value)
        except (OverflowError, ValueError):
            raise DataError("invalid_timestamp", f"{label} {value!r} epoch {unit} is out of range") from None

    return parse


def check_fields(obj: Any, path: str = "") -> bool:
    """Reject what MongoDB cannot store: '$'-prefixed or NUL-containing keys, integers beyond int64.

    Iterative (an explicit stack), so a document nested thousands of levels deep is checked, not a crash.
    Returns True when a double of integral value beyond int64 was seen: the JSON parser reads integer literals
    that big as doubles, so only the JSON text can tell (`check_fields_exactly`).
    """
    huge_double = False
    stack: list[tuple[Any, str]] = [(obj, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key.startswith("$") or "\0" in key:
                    raise DataError(
                        "invalid_field_name", f"field name {where}{key!r} is not allowed in MongoDB"
                    )
                if isinstance(value, dict | list | int | float):
                    stack.append((value, f"{where}{key}."))
        elif isinstance(item, list):
            stack.extend((value, where) for value in item if isinstance(value, dict | list | int | float))
        elif isinstance(item, float):
            # (beyond int64, or rounded onto its edge)
            huge_double = huge_double or (item.is_integer() and abs(item) >= _TWO_POW_63)
        elif isinstance(item, int) and not INT64_MIN <= item <= INT64_MAX:
            raise DataError(
                "integer_out_of_range", f"integer in {where.rstrip('.') or 'value'} exceeds 64 bits"
            )
    return huge_double


def check_fields_exactly(obj: Any, value: bytes) -> None:
    """`check_fields`, and an integer beyond 64 bits is never stored as a rounded double: where a huge
    integral double appears, the JSON text is parsed again with exact integers to see how it was written
    (an integer literal is out of range; a floating-point literal such as 1e19 is a double, stored as one)."""
    if check_fields(obj):
        try:
            exact = json.loads(value)
        except (ValueError, RecursionError):
            raise DataError("integer_out_of_range", "an integer beyond 64 bits cannot be stored") from None
        check_fields(exact)


def check_size(value: bytes, document: dict[str, Any]) -> None:
    if len(value) >= _SIZE_CHECK_FROM and len(bson.encode(document)) > MAX_BSON_BYTES:
        raise DataError("document_too_large", f"document exceeds MongoDB's {MAX_BSON_BYTES} byte limit")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _path_getter(path: str) -> Callable[[dict[str, Any]], Any]:
    """obj -> the value at a dotted path; KeyError(path) when some part is missing or not an object."""
    parts = path.split(".")
    if len(parts) == 1:
        return operator.itemgetter(path)
    if len(parts) == 2:
        outer, inner = parts

        def get_two(obj: dict[str, Any]) -> Any:
            holder = obj.get(outer)
            if holder.__class__ is not dict or inner not in holder:
                raise KeyError(path)
            return holder[inner]

        return get_two

    def get(obj: dict[str, Any]) -> Any:
        value: Any = obj
        for part in parts:
            if value.__class__ is not dict or part not in value:
                raise KeyError(path)
            value = value[part]
        return value

    return get


class ExactPrice(Decimal):
    """A price exactly as the JSON text wrote it (`price_type: decimal128`): a Decimal (`38.10` keeps its
    digits and exponent) that carries its BSON Decimal128, built once from the same digits (bson's own
    Decimal -> Decimal128 conversion costs several microseconds)."""

    __slots__ = ("bson",)
    bson: Decimal128


_TEN_TO_34 = 10**DECIMAL128_DIGITS
_LOW_64 = (1 << 64) - 1
_EXPONENT_BIAS = 6176


def exact_price(
    negative: bool, coefficient: int, exponent: int, text: str, label: str = "price"
) -> ExactPrice:
    """The ExactPrice sign * coefficient * 10**exponent (`text` is its decimal string), or a DataError when
    a Decimal128 cannot hold it exactly (more than 34 significant digits, or an exponent below -6176; prices
    are bounded above by max_price, far below Decimal128's largest exponent)."""
    if coefficient >= _TEN_TO_34 or exponent < DECIMAL128_MIN_EXPONENT:
        raise DataError(
            "invalid_field",
            f"{label} {text[:60]} cannot be stored exactly as a Decimal128 "
            f"(at most {DECIMAL128_DIGITS} significant digits)",
        )
    price = ExactPrice(text)
    # BID encoding of a coefficient below 2**113: sign, 14-bit biased exponent, 113-bit coefficient.
    high = (coefficient >> 64) | ((exponent + _EXPONENT_BIAS) << 49) | (int(negative) << 63)
    price.bson = Decimal128((high, coefficient & _LOW_64))  # type: ignore[arg-type]  # (high, low) bits
    return price


def exact_price_of(value: Decimal | int, label: str = "price") -> ExactPrice:
    """An exact number (a Decimal or an int) as an ExactPrice."""
    number = Decimal(value)
    negative, digits, exponent = number.as_tuple()
    if not isinstance(exponent, int):  # NaN, Infinity: never from JSON, refused anyway
        raise DataError("invalid_field", f"{label} {number} is not a finite number")
    coefficient = int("".join(map(str, digits))) if digits else 0
    return exact_price(bool(negative), coefficient, exponent, str(number), label)


# A JSON number after a key: sign, integer part, fraction, exponent.
_NUMBER_AFTER_KEY = re.compile(rb"\s*:\s*((-?)(0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?)")
# Distinct valid symbols remembered by a tick decoder (the cache starts again when full).
_SYMBOL_CACHE_SIZE = 4096
# Prices repeat (a random walk in cents): the ExactPrice of each literal is built once.
_EXACT_CACHE_SIZE = 65_536


def _exact_price_reader(path: str, label: str) -> Callable[[bytes, float], ExactPrice]:
    """The price exactly as the JSON text writes it (the JSON parser read it as the double `parsed`).

    Fast path: when the value has no backslash (so no key can be spelt with escapes) and the name of the key
    holding the price occurs once in the text, the number after it is the price's literal (checked: it reads
    back as `parsed`). Otherwise the text is parsed again with exact decimals (`json.loads(parse_float=
    Decimal)`, a few times the cost of a decode) and the price taken from there."""
    key = path.rsplit(".", 1)[-1]
    token = b'"' + key.encode() + b'"'
    get = _path_getter(path)
    cache: dict[bytes, tuple[ExactPrice, float]] = {}

    def read(value: bytes, parsed: float) -> ExactPrice:
        if b"\\" not in value and value.count(token) == 1:
            match = _NUMBER_AFTER_KEY.match(value, value.index(token) + len(token))
            if match is not None:
                literal = match.group(1)
                known = cache.get(literal)
                if known is None:
                    sign, whole, fraction, power = match.group(2, 3, 4, 5)
                    fraction = fraction or b""
                    exponent = (int(power) if power else 0) - len(fraction)
                    price = exact_price(
                        sign == b"-", int(whole + fraction), exponent, literal.decode(), label
                    )
                    if len(cache) >= _EXACT_CACHE_SIZE:
                        cache.clear()
                    known = cache[literal] = (price, float(price))
                if known[1] == parsed:  # (else not the key we thought: read it the slow way)
                    return known[0]
        try:
            exact = get(json.loads(value, parse_float=Decimal))
        except (ValueError, RecursionError, KeyError):
            exact = None
        if isinstance(exact, bool) or not isinstance(exact, Decimal | int):
            raise DataError("undecodable", f"{label} could not be read exactly from the JSON text")
        return exact_price_of(exact, label)

    return read


def make_tick_decoder(schema: TickSchema) -> Decoder:
    """The decoder of one schema. Everything the schema decides (field names, the timestamp parser, the price
    type) is resolved here, once; per message the work is the same for every mapping of top-level fields."""
    symbol_ok = re.compile(schema.symbol_pattern).match
    min_price, max_price, max_volume = schema.min_price, schema.max_price, schema.max_volume
    mapping = check_field_mapping(schema.fields or {})
    k_symbol, k_price, k_volume, k_ts = (mapping.get(t, t) for t in TICK_FIELDS)
    source_of = dict(zip(TICK_FIELDS, (k_symbol, k_price, k_volume, k_ts), strict=True))
    target_of = {source: target for target, source in source_of.items()}

    def label(target: str) -> str:
        source = source_of[target]
        return target if source == target else f"{target} (from {source!r})"

    l_symbol, l_price, l_volume, l_ts = (label(t) for t in TICK_FIELDS)
    parse_ts = timestamp_parser(schema.ts_format, l_ts)
    decimal = schema.price_type == "decimal128"
    read_exact = _exact_price_reader(k_price, l_price) if decimal else None
    exact_min, exact_max = Decimal(min_price), Decimal(max_price)  # the bounds' exact values
    nested = any("." in source for source in source_of.values())
    # Top-level source fields: not stored again as extra fields (a nested path's enclosing object is).
    consumed = frozenset(source for source in source_of.values() if "." not in source)
    n_consumed = len(consumed)
    g_symbol, g_price, g_volume, g_ts = (_path_getter(source_of[t]) for t in TICK_FIELDS)

    def missing(exc: KeyError) -> DataError:
        source = exc.args[0]
        target = target_of.get(source, source)
        named = f"{source!r}" if source == target else f"{source!r} ({target})"
        return DataError("missing_field", f"required field {named} is missing")

    # Valid symbols seen, and their stored (uppercase) form: a feed has few symbols, so the pattern is
    # matched once per symbol, not once per message.
    symbols: dict[str, str] = {}

    def decode(value: bytes | None) -> dict[str, Any]:
        obj = parse_json_object(value)
        assert value is not None
        try:
            if nested:
                symbol = g_symbol(obj)
                price = g_price(obj)
                volume = g_volume(obj)
                ts = g_ts(obj)
            else:
                symbol = obj[k_symbol]
                price = obj[k_price]
                volume = obj[k_volume]
                ts = obj[k_ts]
        except KeyError as exc:
            raise missing(exc) from None
        stored_symbol = symbols.get(symbol) if symbol.__class__ is str else None
        if stored_symbol is None:
            if not isinstance(symbol, str) or not symbol_ok(symbol):
                raise DataError(
                    "invalid_field", f"{l_symbol} {str(symbol)[:40]!r} does not match {schema.symbol_pattern}"
                )
            stored_symbol = symbol.upper()
            if len(symbols) >= _SYMBOL_CACHE_SIZE:
                symbols.clear()
            symbols[str(symbol)] = stored_symbol
        # (exact classes first: the usual JSON float and int are checked without the general tests)
        if price.__class__ is not float and (isinstance(price, bool) or not isinstance(price, int | float)):
            raise DataError("invalid_field", f"{l_price} must be a number, got {_kind(price)}")
        if read_exact is None:
            if not min_price < price <= max_price:
                raise DataError("out_of_bounds", f"{l_price} {price} is outside ({min_price}, {max_price}]")
        else:
            price = read_exact(value, price) if isinstance(price, float) else exact_price_of(price, l_price)
            # Decimal against Decimal: exact, and far cheaper than Decimal against float.
            if not exact_min < price <= exact_max:
                raise DataError("out_of_bounds", f"{l_price} {price} is outside ({min_price}, {max_price}]")
        if volume.__class__ is not int:
            if isinstance(volume, float) and volume.is_integer() and INT64_MIN <= volume <= INT64_MAX:
                volume = int(volume)
            if isinstance(volume, bool) or not isinstance(volume, int):
                raise DataError("invalid_field", f"{l_volume} must be an integer, got {_kind(volume)}")
        if not 0 <= volume <= max_volume:
            raise DataError("out_of_bounds", f"{l_volume} {volume} is outside [0, {max_volume}]")
        fields: dict[str, Any] = {
            "symbol": stored_symbol,
            "price": price if decimal or price.__class__ is float else float(price),
            "volume": volume,
            "ts": parse_ts(ts),
        }
        if len(obj) > n_consumed:
            for key, extra in obj.items():
                if key in consumed:
                    continue
                if key in fields:
                    raise DataError(
                        "conflicting_field",
                        f"field {key!r} is sent too, but tick.fields reads {key} from {source_of[key]!r}",
                    )
                if key in RESERVED_FIELDS:
                    raise DataError("reserved_field", f"field {key!r} is reserved by the pipeline")
                fields[key] = extra
            check_fields_exactly({k: v for k, v in fields.items() if k not in TICK_FIELDS}, value)
        return fields

    return guarded(decode)


def _decode_raw(value: bytes | None) -> dict[str, Any]:
    obj = parse_json_object(value)
    assert value is not None
    for key in RESERVED_FIELDS.intersection(obj):
        raise DataError("reserved_field", f"field {key!r} is reserved by the pipeline")
    check_fields_exactly(obj, value)
    return obj


decode_raw: Decoder = guarded(_decode_raw)
"""Any JSON object, stored as-is (format: raw)."""


def decode_key(key: bytes | None) -> str | Binary | None:
    """A message key as stored: text when it is UTF-8, else its exact bytes."""
    if key is None:
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return Binary(key)


def encode_key(stored: object) -> bytes | None:
    """The original key bytes back from the stored form (`decode_key`'s inverse)."""
    if isinstance(stored, str):
        return stored.encode()
    if isinstance(stored, bytes):  # Binary is a bytes subclass
        return bytes(stored)
    return None


def make_document(
    fields: dict[str, Any],
    topic: str,
    partition: int,
    offset: int,
    timestamp_ms: int | None,
    key: bytes | None,
    ingested_at: datetime,
) -> dict[str, Any]:
    """The stored document. `_id` is the message's coordinates, which makes every insert idempotent.

    `ts` stays the tick decoder's aware UTC datetime: making it naive (`replace(tzinfo=None)`) costs more
    than the BSON encoder's `utcoffset()` call on it (bench/put_cost.py). `kafka.timestamp` is a naive UTC
    datetime, shared by the messages of one millisecond; `ingested_at` is UTC, naive or aware. An exact price
    (a Decimal, from `price_type: decimal128`) is stored as a BSON Decimal128. `fields` is not changed.
    """
    document = {"_id": {"topic": topic, "partition": partition, "offset": offset}, **fields}
    price = document.get("price")
    if price.__class__ is ExactPrice:
        document["price"] = price.bson
    elif price.__class__ is Decimal:
        document["price"] = Decimal128(price)
    document["kafka"] = {
        "timestamp": None if timestamp_ms is None else kafka_date(timestamp_ms),
        "key": decode_key(key),
    }
    document["ingested_at"] = ingested_at
    return document


_EPOCH_NAIVE = datetime(1970, 1, 1)
# The last Kafka timestamp converted, and its date: a busy producer stamps runs of messages with the same
# millisecond. (One tuple, replaced whole: safe to read from any thread.)
_last_kafka_date: tuple[int, datetime | DatetimeMS] = (0, _EPOCH_NAIVE)


def kafka_date(timestamp_ms: int) -> datetime | DatetimeMS:
    """A Kafka timestamp (epoch milliseconds) as the naive UTC datetime BSON stores as a date."""
    global _last_kafka_date
    last_ms, last = _last_kafka_date
    if timestamp_ms == last_ms:
        return last
    try:
        date: datetime | DatetimeMS = _EPOCH_NAIVE + timedelta(0, 0, 0, timestamp_ms)
    except OverflowError:  # beyond datetime's years: BSON still takes it
        date = DatetimeMS(timestamp_ms)
    _last_kafka_date = (timestamp_ms, date)
    return date
