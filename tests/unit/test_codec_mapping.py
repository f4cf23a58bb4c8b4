"""Field mapping (`tick.fields`), timestamp formats (`tick.ts_format`), exact prices (`tick.price_type`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import bson
import orjson
import pytest
from bson.decimal128 import Decimal128
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.codec import (
    EPOCH,
    TS_FORMATS,
    DataError,
    TickSchema,
    check_field_mapping,
    exact_price_of,
    make_document,
    make_tick_decoder,
    timestamp_parser,
)

FEED = {"ticker": "ticker", "price": "last", "volume": "qty", "ts": "time"}


def error_of(func: Callable[..., object], *args: object) -> DataError:
    with pytest.raises(DataError) as info:
        func(*args)
    return info.value


def feed(**fields: object) -> bytes:
    base: dict[str, object] = {"ticker": "petr4", "last": 36.5, "qty": 100, "time": "2024-05-02T13:00:00Z"}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not None})


mapped = make_tick_decoder(
    TickSchema(fields={"symbol": "ticker", "price": "last", "volume": "qty", "ts": "time"})
)


# --- field mapping ------------------------------------------------------------------------------------------


def test_a_mapped_feed_is_stored_under_the_tick_field_names() -> None:
    fields = mapped(feed(venue="B3"))
    assert fields == {
        "symbol": "PETR4",
        "price": 36.5,
        "volume": 100,
        "ts": datetime(2024, 5, 2, 13, tzinfo=UTC),
        "venue": "B3",
    }
    assert list(fields)[:4] == ["symbol", "price", "volume", "ts"]


def test_unlisted_tick_fields_keep_their_own_names() -> None:
    decode = make_tick_decoder(TickSchema(fields={"price": "last"}))
    fields = decode(b'{"symbol": "VALE3", "last": 62.1, "volume": 5, "ts": 0}')
    assert fields == {"symbol": "VALE3", "price": 62.1, "volume": 5, "ts": EPOCH}


def test_dotted_paths_read_nested_input_and_keep_the_enclosing_object() -> None:
    decode = make_tick_decoder(
        TickSchema(fields={"symbol": "instrument.code", "price": "quote.last", "ts": "quote.at"})
    )
    value = b'{"instrument": {"code": "petr4"}, "quote": {"last": 36.5, "at": 0}, "volume": 7}'
    fields = decode(value)
    assert fields["symbol"] == "PETR4" and fields["price"] == 36.5 and fields["ts"] == EPOCH
    assert fields["volume"] == 7
    # The nested objects are extra fields, stored as sent.
    assert fields["instrument"] == {"code": "petr4"}
    assert fields["quote"] == {"last": 36.5, "at": 0}


@pytest.mark.parametrize(
    ("drop", "message"),
    [
        ("ticker", "required field 'ticker' (symbol) is missing"),
        ("last", "required field 'last' (price) is missing"),
        ("qty", "required field 'qty' (volume) is missing"),
        ("time", "required field 'time' (ts) is missing"),
    ],
)
def test_a_missing_mapped_field_is_named_by_its_source_name(drop: str, message: str) -> None:
    value = orjson.dumps({k: v for k, v in orjson.loads(feed()).items() if k != drop})
    exc = error_of(mapped, value)
    assert (exc.kind, exc.message) == ("missing_field", message)


def test_a_missing_nested_path_is_named_whole() -> None:
    decode = make_tick_decoder(TickSchema(fields={"price": "quote.last"}))
    for value in (
        b'{"symbol": "A", "quote": {}, "volume": 1, "ts": 0}',
        b'{"symbol": "A", "quote": 5, "volume": 1, "ts": 0}',
        b'{"symbol": "A", "volume": 1, "ts": 0}',
    ):
        assert error_of(decode, value).message == "required field 'quote.last' (price) is missing"


@pytest.mark.parametrize(
    ("fields", "kind", "message"),
    [
        ({"ticker": "bad symbol"}, "invalid_field", "symbol (from 'ticker') 'bad symbol' does not match"),
        ({"last": "36.5"}, "invalid_field", "price (from 'last') must be a number, got str"),
        ({"last": -1}, "out_of_bounds", "price (from 'last') -1 is outside"),
        ({"qty": 1.5}, "invalid_field", "volume (from 'qty') must be an integer, got float"),
        ({"qty": -5}, "out_of_bounds", "volume (from 'qty') -5 is outside"),
        ({"time": "soon"}, "invalid_timestamp", "ts (from 'time') 'soon' is not an ISO-8601 timestamp"),
    ],
)
def test_validation_errors_name_the_source_field(fields: dict[str, object], kind: str, message: str) -> None:
    exc = error_of(mapped, feed(**fields))
    assert exc.kind == kind
    assert exc.message.startswith(message), exc.message


def test_a_field_sent_under_a_mapped_tick_name_is_refused_not_dropped() -> None:
    exc = error_of(mapped, feed(price=1.0))
    assert exc.kind == "conflicting_field"
    assert exc.message == "field 'price' is sent too, but tick.fields reads price from 'last'"


def test_reserved_names_and_bad_field_names_are_still_refused_in_mapped_feeds() -> None:
    assert error_of(mapped, feed(kafka=1)).kind == "reserved_field"
    assert error_of(mapped, feed(meta={"$gt": 1})).kind == "invalid_field_name"
    big = feed()[:-1] + b', "n": 1180591620717411303424}'
    assert error_of(mapped, big).kind == "integer_out_of_range"


def test_a_reserved_name_may_be_a_source_field() -> None:
    decode = make_tick_decoder(TickSchema(fields={"symbol": "_id"}))
    assert decode(b'{"_id": "petr4", "price": 1, "volume": 1, "ts": 0}')["symbol"] == "PETR4"


def test_the_default_schema_keeps_todays_messages() -> None:
    decode = make_tick_decoder(TickSchema())
    value = b'{"symbol": "PETR4", "price": "x", "volume": 1, "ts": 0}'
    assert error_of(decode, value).message == "price must be a number, got str"
    assert error_of(decode, b'{"price": 1, "volume": 1, "ts": 0}').message == (
        "required field 'symbol' is missing"
    )


@pytest.mark.parametrize(
    ("mapping", "message"),
    [
        ({"sym": "ticker"}, "unknown tick field 'sym'"),
        ({"price": ""}, "price: the source field must be a non-empty string"),
        ({"price": 5}, "price: the source field must be a non-empty string"),
        ({"price": "quote..last"}, "price: source path 'quote..last' has an empty part"),
        ({"price": "$last"}, "price: source path '$last' has a part MongoDB cannot name"),
        ({"price": "x", "volume": "x"}, "price and volume are both read from 'x'"),
        ({"price": "volume"}, "price and volume are both read from 'volume'"),
    ],
)
def test_bad_mappings_are_refused_with_one_line(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as info:
        check_field_mapping(mapping)
    assert str(info.value).startswith(message), str(info.value)


def test_a_swap_of_names_is_a_valid_mapping() -> None:
    decode = make_tick_decoder(TickSchema(fields={"price": "volume", "volume": "price"}))
    fields = decode(b'{"symbol": "A", "price": 7, "volume": 2.5, "ts": 0}')
    assert fields["price"] == 2.5 and fields["volume"] == 7


# --- timestamp formats ----------------------------------------------------------------------------------


AT = datetime(2024, 5, 2, 13, 0, 0, 123456, tzinfo=UTC)


@pytest.mark.parametrize(
    ("ts_format", "value", "expected"),
    [
        ("epoch_s", 1_714_654_800, datetime(2024, 5, 2, 13, tzinfo=UTC)),
        ("epoch_s", 1_714_654_800.5, datetime(2024, 5, 2, 13, 0, 0, 500000, tzinfo=UTC)),
        ("epoch_ms", 1_714_654_800_123, datetime(2024, 5, 2, 13, 0, 0, 123000, tzinfo=UTC)),
        ("epoch_us", 1_714_654_800_123_456, AT),
        ("epoch_ns", 1_714_654_800_123_456_789, AT),
        ("epoch_ns", -1, datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("iso", "2024-05-02T13:00:00.123456Z", AT),
        ("iso", 1_714_654_800_000, datetime(2024, 5, 2, 13, tzinfo=UTC)),
    ],
)
def test_each_ts_format(ts_format: Any, value: object, expected: datetime) -> None:
    decode = make_tick_decoder(TickSchema(ts_format=ts_format))
    fields = decode(orjson.dumps({"symbol": "A", "price": 1, "volume": 1, "ts": value}))
    assert fields["ts"] == expected


@pytest.mark.parametrize("ts_format", [f for f in TS_FORMATS if f != "iso"])
@pytest.mark.parametrize("value", ["1714654800", True, None, [1]])
def test_epoch_formats_take_numbers_only(ts_format: Any, value: object) -> None:
    decode = make_tick_decoder(TickSchema(ts_format=ts_format))
    exc = error_of(decode, orjson.dumps({"symbol": "A", "price": 1, "volume": 1, "ts": value}))
    assert exc.kind == "invalid_timestamp"
    assert exc.message.startswith("ts must be a number of epoch "), exc.message


@pytest.mark.parametrize("ts_format", TS_FORMATS)
def test_an_epoch_out_of_range_is_a_data_error(ts_format: Any) -> None:
    exc = error_of(timestamp_parser(ts_format, "ts (from 'time')"), 10**30)
    assert exc.kind == "invalid_timestamp"
    assert exc.message.startswith("ts (from 'time') ")


def test_an_unknown_ts_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown ts_format 'epoch_m'"):
        timestamp_parser("epoch_m")  # type: ignore[arg-type]


# --- exact prices -------------------------------------------------------------------------------------------

exact = make_tick_decoder(TickSchema(price_type="decimal128"))


def tick_text(price: str, tail: str = "") -> bytes:
    return ('{"symbol": "PETR4", "price": ' + price + ', "volume": 1, "ts": 0' + tail + "}").encode()


@pytest.mark.parametrize(
    "literal",
    [
        "38.12",
        "38.10",
        "0.1",
        "62.190000000000005",
        "38.120000000000000000000000000001",
        "1E+3",
        "1e-20",
        "123456789012.5",
        "7",
    ],
)
def test_a_decimal128_price_is_the_json_text_exactly(literal: str) -> None:
    fields = exact(tick_text(literal))
    assert fields["price"] == Decimal(literal)
    assert str(fields["price"]) == str(Decimal(literal))  # the same digits and exponent (38.10 stays 38.10)
    document = make_document(fields, "t", 0, 0, None, None, EPOCH)
    assert document["price"] == Decimal128(Decimal(literal))
    stored = bson.decode(bson.encode(document))
    assert stored["price"].to_decimal().as_tuple() == Decimal(literal).as_tuple()


@pytest.mark.parametrize(
    "tail",
    [
        ', "book": {"price": 1.5}',  # the key's name appears twice: read again exactly
        ', "note": "a \\"quoted\\" text"',  # a backslash anywhere: read again exactly
        ', "price_src": "price"',
    ],
)
def test_the_exact_price_is_found_however_the_text_is_written(tail: str) -> None:
    fields = exact(tick_text("38.10", tail))
    assert str(fields["price"]) == "38.10"


def test_a_duplicated_price_key_takes_the_last_one_like_the_parser() -> None:
    value = b'{"symbol": "A", "price": 1.50, "volume": 1, "ts": 0, "price": 2.50}'
    assert str(exact(value)["price"]) == "2.50"


def test_an_escaped_key_name_is_read_exactly() -> None:
    value = b'{"symbol": "A", "pr\\u0069ce": 3.10, "volume": 1, "ts": 0}'
    assert str(exact(value)["price"]) == "3.10"


def test_an_exact_price_from_a_mapped_nested_path() -> None:
    decode = make_tick_decoder(TickSchema(fields={"price": "quote.last"}, price_type="decimal128"))
    value = b'{"symbol": "A", "quote": {"last": 36.50, "bid": 36.40}, "volume": 1, "ts": 0}'
    assert str(decode(value)["price"]) == "36.50"


def test_decimal128_bounds_and_precision() -> None:
    assert error_of(exact, tick_text("0")).kind == "out_of_bounds"
    assert error_of(exact, tick_text("1e13")).kind == "out_of_bounds"
    assert exact(tick_text("1e12"))["price"] == Decimal("1e12")
    too_precise = error_of(exact, tick_text("1." + "0" * 40 + "1"))
    assert too_precise.kind == "invalid_field"
    assert "cannot be stored exactly as a Decimal128" in too_precise.message
    tiny = error_of(exact, tick_text("1e-7000"))
    assert tiny.kind == "invalid_field"


def test_double_prices_stay_doubles() -> None:
    fields = make_tick_decoder(TickSchema())(tick_text("38.10"))
    assert type(fields["price"]) is float and fields["price"] == 38.1
    assert type(make_document(fields, "t", 0, 0, None, None, EPOCH)["price"]) is float


@settings(max_examples=500, deadline=None)
@given(
    st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
        lambda d: len(d.as_tuple().digits) <= 34 and -6000 < d.as_tuple().exponent < 300  # type: ignore[operator]
    )
)
def test_exact_prices_encode_exactly_as_bson_does(number: Decimal) -> None:
    price = exact_price_of(number)
    assert price.bson.bid == Decimal128(number).bid
    assert price.as_tuple() == number.as_tuple()
    assert bson.decode(bson.encode({"p": price.bson}))["p"].to_decimal().as_tuple() == number.as_tuple()
