"""Unit tests for pipeline.core.codec: decoding Kafka values into MongoDB documents."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
import orjson
import pytest
from bson.binary import Binary
from bson.codec_options import CodecOptions

from pipeline.core import codec
from pipeline.core.codec import (
    EPOCH,
    INT64_MAX,
    INT64_MIN,
    MAX_BSON_BYTES,
    DataError,
    TickSchema,
    check_fields,
    check_size,
    decode_key,
    decode_raw,
    make_document,
    make_tick_decoder,
    parse_json_object,
    parse_timestamp,
)
from pipeline.core.coordinates import document_id

decode_tick = make_tick_decoder(TickSchema())
_DROP = object()  # marks a tick field to leave out


def tick(**fields: object) -> bytes:
    base: dict[str, object] = {"symbol": "petr4", "price": 36.5, "volume": 100, "ts": "2024-05-02T13:00:00Z"}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not _DROP})


def error_of(func: Callable[..., object], *args: object) -> DataError:
    with pytest.raises(DataError) as info:
        func(*args)
    return info.value


# --- DataError ----------------------------------------------------------------------------------------------


def test_data_error_carries_kind_and_message() -> None:
    exc = DataError("invalid_json", "value is not valid JSON")
    assert exc.kind == "invalid_json"
    assert exc.message == "value is not valid JSON"
    assert str(exc) == "value is not valid JSON"


# --- tick decoder: accepted values --------------------------------------------------------------------------


def test_tick_decoder_normalises_a_valid_tick() -> None:
    fields = decode_tick(tick())
    assert fields == {
        "symbol": "PETR4",
        "price": 36.5,
        "volume": 100,
        "ts": datetime(2024, 5, 2, 13, 0, tzinfo=UTC),
    }
    assert list(fields) == ["symbol", "price", "volume", "ts"]


def test_tick_decoder_converts_integer_price_to_float() -> None:
    fields = decode_tick(tick(price=36))
    assert fields["price"] == 36.0
    assert type(fields["price"]) is float


def test_tick_decoder_accepts_integral_float_volume_as_int() -> None:
    fields = decode_tick(tick(volume=250.0))
    assert fields["volume"] == 250
    assert type(fields["volume"]) is int


def test_tick_decoder_accepts_epoch_millis_timestamp() -> None:
    fields = decode_tick(tick(ts=1_714_654_800_000))
    assert fields["ts"] == datetime(2024, 5, 2, 13, 0, tzinfo=UTC)


def test_tick_decoder_keeps_extra_fields_after_the_tick_fields() -> None:
    fields = decode_tick(tick(exchange="B3", book={"bid": 36.4, "ask": [36.6, 36.7]}))
    assert fields["exchange"] == "B3"
    assert fields["book"] == {"bid": 36.4, "ask": [36.6, 36.7]}
    assert list(fields)[:4] == ["symbol", "price", "volume", "ts"]


def test_tick_decoder_normalises_tick_fields_even_when_extras_are_present() -> None:
    fields = decode_tick(tick(symbol="vale3", price=7, volume=3.0, ts=0, exchange="B3"))
    assert fields == {"symbol": "VALE3", "price": 7.0, "volume": 3, "ts": EPOCH, "exchange": "B3"}
    assert type(fields["price"]) is float


@pytest.mark.parametrize("price", [1e12, 0.000001])
def test_tick_decoder_price_bounds_are_exclusive_below_inclusive_above(price: float) -> None:
    assert decode_tick(tick(price=price))["price"] == price


@pytest.mark.parametrize("volume", [0, INT64_MAX])
def test_tick_decoder_volume_bounds_are_inclusive(volume: int) -> None:
    assert decode_tick(tick(volume=volume))["volume"] == volume


@pytest.mark.parametrize("symbol", ["A", "petr4", "BRK.B", "X_1-2", "A" * 32])
def test_tick_decoder_accepts_symbols_matching_the_default_pattern(symbol: str) -> None:
    assert decode_tick(tick(symbol=symbol))["symbol"] == symbol.upper()


# --- tick decoder: rejected values --------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["symbol", "price", "volume", "ts"])
def test_tick_decoder_rejects_missing_required_field(missing: str) -> None:
    exc = error_of(decode_tick, tick(**{missing: _DROP}))
    assert exc.kind == "missing_field"
    assert exc.message == f"required field {missing!r} is missing"


@pytest.mark.parametrize("symbol", ["", "-abc", "A" * 33, "has space", "ÁÉ", 123, None, ["PETR4"]])
def test_tick_decoder_rejects_bad_symbols(symbol: object) -> None:
    exc = error_of(decode_tick, tick(symbol=symbol))
    assert exc.kind == "invalid_field"
    assert exc.message.startswith("symbol ")
    assert TickSchema().symbol_pattern in exc.message


def test_tick_decoder_truncates_a_long_symbol_in_the_error_message() -> None:
    exc = error_of(decode_tick, tick(symbol="Z" * 1000))
    assert "Z" * 40 in exc.message
    assert "Z" * 41 not in exc.message


def test_tick_decoder_checks_every_symbol_however_many_it_has_seen() -> None:
    # Valid symbols are remembered (the pattern is matched once per symbol); more symbols than the
    # decoder remembers, and a bad one after each of them, must still be told apart.
    decode = make_tick_decoder(TickSchema())
    for i in range(codec._SYMBOL_CACHE_SIZE + 50):
        assert decode(tick(symbol=f"s{i}"))["symbol"] == f"S{i}"
        if i % 997 == 0:
            assert error_of(decode, tick(symbol=f"-s{i}")).kind == "invalid_field"
    assert decode(tick(symbol="petr4"))["symbol"] == "PETR4"
    assert decode(tick(symbol="PETR4"))["symbol"] == "PETR4"
    assert error_of(decode, tick(symbol=["petr4"])).kind == "invalid_field"  # unhashable: no cache lookup


@pytest.mark.parametrize(
    ("price", "got"), [("36.5", "str"), (True, "bool"), (None, "null"), ([1], "list"), ({}, "dict")]
)
def test_tick_decoder_rejects_non_numeric_price(price: object, got: str) -> None:
    exc = error_of(decode_tick, tick(price=price))
    assert exc.kind == "invalid_field"
    assert exc.message == f"price must be a number, got {got}"


@pytest.mark.parametrize("price", [0, 0.0, -1, 1e12 + 1])
def test_tick_decoder_rejects_out_of_bounds_price(price: float) -> None:
    exc = error_of(decode_tick, tick(price=price))
    assert exc.kind == "out_of_bounds"
    assert "outside (0.0, 1000000000000.0]" in exc.message


@pytest.mark.parametrize(
    ("volume", "got"), [(1.5, "float"), ("10", "str"), (True, "bool"), (False, "bool"), (None, "null")]
)
def test_tick_decoder_rejects_non_integer_volume(volume: object, got: str) -> None:
    exc = error_of(decode_tick, tick(volume=volume))
    assert exc.kind == "invalid_field"
    assert exc.message == f"volume must be an integer, got {got}"


@pytest.mark.parametrize("volume", [-1, -1.0, INT64_MAX + 1])
def test_tick_decoder_rejects_out_of_bounds_volume(volume: float) -> None:
    exc = error_of(decode_tick, tick(volume=volume))
    assert exc.kind == "out_of_bounds"
    assert exc.message.startswith("volume ")


def test_tick_decoder_uses_the_schema_bounds_and_pattern() -> None:
    decode = make_tick_decoder(
        TickSchema(symbol_pattern=r"^[A-Z]{4}\d$", min_price=10, max_price=20, max_volume=5)
    )
    assert decode(tick(symbol="PETR4", price=20, volume=5))["price"] == 20.0
    assert error_of(decode, tick(symbol="petr4")).kind == "invalid_field"  # pattern is case-sensitive
    assert error_of(decode, tick(symbol="PETR4", price=10)).kind == "out_of_bounds"
    assert error_of(decode, tick(symbol="PETR4", price=20.01)).kind == "out_of_bounds"
    exc = error_of(decode, tick(symbol="PETR4", price=15, volume=6))
    assert exc.kind == "out_of_bounds"
    assert exc.message == "volume 6 is outside [0, 5]"


@pytest.mark.parametrize("reserved", ["_id", "kafka", "ingested_at"])
def test_tick_decoder_rejects_reserved_extra_fields(reserved: str) -> None:
    exc = error_of(decode_tick, tick(**{reserved: 1}))
    assert exc.kind == "reserved_field"
    assert exc.message == f"field {reserved!r} is reserved by the pipeline"


@pytest.mark.parametrize(
    "extra",
    [{"$where": 1}, {"meta": {"$gt": 1}}, {"meta": [{"ok": 1}, {"$bad": 2}]}, {"a\u0000b": 1}],
)
def test_tick_decoder_rejects_field_names_mongodb_refuses(extra: dict[str, object]) -> None:
    exc = error_of(decode_tick, tick(**extra))
    assert exc.kind == "invalid_field_name"


def test_tick_decoder_rejects_extra_integer_beyond_int64() -> None:
    exc = error_of(decode_tick, tick(seq=INT64_MAX + 1))
    assert exc.kind == "integer_out_of_range"
    assert exc.message == "integer in seq exceeds 64 bits"


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (None, "null_value"),
        (b"", "invalid_json"),
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"text"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
    ],
)
def test_tick_decoder_rejects_values_that_are_not_json_objects(value: bytes | None, kind: str) -> None:
    assert error_of(decode_tick, value).kind == kind


def test_tick_decoder_rejects_bad_timestamp() -> None:
    exc = error_of(decode_tick, tick(ts="yesterday"))
    assert exc.kind == "invalid_timestamp"


# --- parse_json_object --------------------------------------------------------------------------------------


def test_parse_json_object_messages() -> None:
    assert error_of(parse_json_object, None).message == "message has no value (tombstone)"
    assert error_of(parse_json_object, b"[]").message == "JSON value is a list, expected an object"
    assert error_of(parse_json_object, b"{").message.startswith("value is not valid JSON: ")
    assert parse_json_object(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}


# --- parse_timestamp ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-05-02T13:00:00Z", datetime(2024, 5, 2, 13, 0, tzinfo=UTC)),
        ("2024-05-02T10:00:00-03:00", datetime(2024, 5, 2, 13, 0, tzinfo=UTC)),
        ("2024-05-02T13:00:00.123456", datetime(2024, 5, 2, 13, 0, 0, 123456, tzinfo=UTC)),
        ("2024-05-02", datetime(2024, 5, 2, tzinfo=UTC)),
        (0, EPOCH),
        (1_714_654_800_123, datetime(2024, 5, 2, 13, 0, 0, 123000, tzinfo=UTC)),
        (1.5, EPOCH + timedelta(microseconds=1500)),
        (-1000, datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_parse_timestamp_returns_aware_utc(value: object, expected: datetime) -> None:
    parsed = parse_timestamp(value)
    assert parsed == expected
    assert parsed.utcoffset() == timedelta(0)


def test_parse_timestamp_converts_offsets_to_utc_tzinfo() -> None:
    parsed = parse_timestamp("2024-05-02T15:30:00+02:30")
    assert parsed.tzinfo == UTC
    assert (parsed.hour, parsed.minute) == (13, 0)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("02/05/2024", "is not an ISO-8601 timestamp"),
        ("", "is not an ISO-8601 timestamp"),
        (True, "got bool"),
        (None, "got null"),
        ([2024], "got list"),
        ({"$date": 1}, "got dict"),
        (10**20, "epoch-millis is out of range"),
        (-(10**20), "epoch-millis is out of range"),
        (1e300, "epoch-millis is out of range"),
    ],
)
def test_parse_timestamp_rejects_invalid_values(value: object, fragment: str) -> None:
    exc = error_of(parse_timestamp, value)
    assert exc.kind == "invalid_timestamp"
    assert fragment in exc.message


def test_parse_timestamp_truncates_long_strings_in_the_message() -> None:
    exc = error_of(parse_timestamp, "x" * 500)
    assert "x" * 64 in exc.message
    assert "x" * 65 not in exc.message


# --- check_fields -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        {"a": 1, "b": {"c": [1, 2, {"d": "x"}]}},
        {"price$": 1, "a.b": 2},  # '$' is only forbidden as a prefix; dots are allowed
        {"n": INT64_MAX, "m": INT64_MIN, "flag": True},
        [],
        "scalar",
    ],
)
def test_check_fields_accepts_storable_values(obj: object) -> None:
    check_fields(obj)


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ({"$set": 1}, "'$set'"),
        ({"outer": {"$inner": 1}}, "outer.'$inner'"),
        ({"list": [[{"$deep": 1}]]}, "list.'$deep'"),
        ({"nul\u0000key": 1}, "nul\\x00key"),
    ],
)
def test_check_fields_rejects_bad_field_names_with_their_path(obj: object, fragment: str) -> None:
    exc = error_of(check_fields, obj)
    assert exc.kind == "invalid_field_name"
    assert fragment in exc.message
    assert exc.message.endswith("is not allowed in MongoDB")


@pytest.mark.parametrize(
    ("obj", "where"),
    [
        ({"a": INT64_MAX + 1}, "a"),
        ({"a": {"b": INT64_MIN - 1}}, "a.b"),
        ({"a": [1, 2, 2**70]}, "a"),
        (2**64, "value"),
    ],
)
def test_check_fields_rejects_integers_beyond_int64(obj: object, where: str) -> None:
    exc = error_of(check_fields, obj)
    assert exc.kind == "integer_out_of_range"
    assert exc.message == f"integer in {where} exceeds 64 bits"


# --- check_size ---------------------------------------------------------------------------------------------


def test_check_size_rejects_documents_over_the_bson_limit() -> None:
    document = {"blob": "x" * MAX_BSON_BYTES}
    exc = error_of(check_size, b"v" * (512 * 1024), document)
    assert exc.kind == "document_too_large"
    assert str(MAX_BSON_BYTES) in exc.message


def test_check_size_accepts_large_documents_under_the_limit() -> None:
    document = {"blob": "x" * (MAX_BSON_BYTES - 100)}
    assert len(bson.encode(document)) <= MAX_BSON_BYTES
    check_size(b"v" * (1024 * 1024), document)


def test_check_size_skips_measuring_small_values() -> None:
    # Below 512 KiB of JSON the document cannot reach 16 MiB, so it is not measured (hot path).
    check_size(b"v" * (512 * 1024 - 1), {"blob": "x" * (MAX_BSON_BYTES + 1)})


# --- decode_raw ---------------------------------------------------------------------------------------------


def test_decode_raw_stores_any_object_as_is() -> None:
    value = {"anything": [1, "two", {"three": 3.0}], "nested": {"x": None}, "Symbol": "lower"}
    assert decode_raw(orjson.dumps(value)) == value


@pytest.mark.parametrize("reserved", ["_id", "kafka", "ingested_at"])
def test_decode_raw_rejects_reserved_fields(reserved: str) -> None:
    exc = error_of(decode_raw, orjson.dumps({"a": 1, reserved: {}}))
    assert exc.kind == "reserved_field"
    assert repr(reserved) in exc.message


def test_decode_raw_validates_field_names_and_integers() -> None:
    assert error_of(decode_raw, b'{"a": {"$b": 1}}').kind == "invalid_field_name"
    assert error_of(decode_raw, b'{"a": [18446744073709551615]}').kind == "integer_out_of_range"
    assert error_of(decode_raw, b"[]").kind == "not_an_object"
    assert error_of(decode_raw, None).kind == "null_value"


# --- decode_key / make_document -----------------------------------------------------------------------------


def test_decode_key() -> None:
    assert decode_key(None) is None
    assert decode_key(b"PETR4") == "PETR4"
    assert decode_key("ação".encode()) == "ação"
    assert decode_key(b"") == ""
    raw = decode_key(b"\xff\x00\x01")
    assert isinstance(raw, Binary)
    assert bytes(raw) == b"\xff\x00\x01"


def stored(document: dict[str, Any]) -> dict[str, Any]:
    """The document as MongoDB stores it (BSON round trip, dates read back as aware UTC datetimes)."""
    return bson.decode(bson.encode(document), codec_options=CodecOptions(tz_aware=True, tzinfo=UTC))


def test_make_document_adds_coordinates_kafka_metadata_and_ingest_time() -> None:
    ingested = datetime(2024, 5, 2, 13, 0, 1, tzinfo=UTC)
    fields = {"symbol": "PETR4", "price": 36.5}
    doc = stored(make_document(fields, "petr4", 2, 41, 1_714_654_800_000, b"k1", ingested))
    assert doc == {
        "_id": {"topic": "petr4", "partition": 2, "offset": 41},
        "symbol": "PETR4",
        "price": 36.5,
        "kafka": {"timestamp": datetime(2024, 5, 2, 13, 0, tzinfo=UTC), "key": "k1"},
        "ingested_at": ingested,
    }
    assert next(iter(doc)) == "_id"
    assert doc["_id"] == document_id("petr4", 2, 41)
    assert fields == {"symbol": "PETR4", "price": 36.5}  # input not mutated


def test_make_document_without_timestamp_or_key() -> None:
    doc = make_document({}, "t", 0, 0, None, None, EPOCH)
    assert doc["kafka"] == {"timestamp": None, "key": None}


def test_make_document_keeps_binary_keys() -> None:
    doc = stored(make_document({}, "t", 0, 0, 0, b"\x80", EPOCH))
    assert doc["kafka"]["key"] == b"\x80"  # BSON binary subtype 0 decodes to bytes
    assert doc["kafka"]["timestamp"] == EPOCH


def test_make_document_round_trips_through_bson() -> None:
    fields = decode_tick(tick(extra={"n": [1, 2]}))
    doc = make_document(fields, "petr4", 0, 7, 1, b"\xfe", datetime(2024, 1, 1, tzinfo=UTC))
    decoded = bson.decode(bson.encode(doc))
    assert decoded["_id"] == {"topic": "petr4", "partition": 0, "offset": 7}
    assert decoded["kafka"]["key"] == b"\xfe"
    assert decoded["extra"] == {"n": [1, 2]}
