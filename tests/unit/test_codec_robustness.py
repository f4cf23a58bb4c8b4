"""One message can never stop the pipeline: every decoder turns any input into a document or a DataError.

Regression tests for inputs that used to escape as other exceptions (OverflowError, RecursionError), exact
handling of integers beyond 64 bits (never stored as a rounded double), and property-based tests that feed
arbitrary bytes and arbitrary JSON to every decoder.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import bson
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.codec import (
    DataError,
    Decoder,
    TickSchema,
    check_fields,
    decode_raw,
    make_document,
    make_tick_decoder,
)
from pipeline.core.timefmt import EPOCH

decode_tick = make_tick_decoder(TickSchema())
DECODERS: dict[str, Decoder] = {"tick": decode_tick, "raw": decode_raw}


def tick(**extra: object) -> dict[str, object]:
    return {"symbol": "PETR4", "price": 36.5, "volume": 100, "ts": "2024-05-02T13:00:00Z", **extra}


def kind_of(decode: Decoder, value: bytes) -> str:
    with pytest.raises(DataError) as info:
        decode(value)
    return info.value.kind


@pytest.mark.parametrize("ts", ["0001-01-01T00:30:00+01:00", "9999-12-31T23:30:00-01:00"])
def test_a_zone_shift_out_of_the_date_range_is_a_data_error(ts: str) -> None:
    assert kind_of(decode_tick, orjson.dumps(tick(ts=ts))) == "invalid_timestamp"


@pytest.mark.parametrize("name", ["tick", "raw"])
def test_an_extra_field_nested_thousands_of_levels_deep_is_checked_without_recursion(name: str) -> None:
    head = b'{"symbol": "PETR4", "price": 1.5, "volume": 1, "ts": 0, "deep": '
    # orjson refuses to parse beyond 1024 levels: a data error, not a crash.
    assert kind_of(DECODERS[name], head + b'{"x": ' * 5_000 + b"1" + b"}" * 5_001) == "invalid_json"
    # Within what the parser accepts, the field check walks every level without recursing (the recursion
    # limit is lowered so that a recursive check would fail here).
    text = head + b'{"x": ' * 1_000 + b'{"$where": 1}' + b"}" * 1_001
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        kind = kind_of(DECODERS[name], text)
    finally:
        sys.setrecursionlimit(limit)
    assert kind == "invalid_field_name"
    check_fields({"a": [[[[[[{"b": [1]}]]]]]]})  # and accepts what is fine


@pytest.mark.parametrize("name", ["tick", "raw"])
@pytest.mark.parametrize(
    "literal", ["1180591620717411303424", "-9223372036854775809", "18446744073709551616"]
)
def test_an_integer_beyond_64_bits_is_dead_lettered_never_rounded(name: str, literal: str) -> None:
    value = ('{"symbol": "PETR4", "price": 1.5, "volume": 1, "ts": 0, "n": ' + literal + "}").encode()
    assert kind_of(DECODERS[name], value) == "integer_out_of_range"
    nested = (
        '{"symbol": "PETR4", "price": 1.5, "volume": 1, "ts": 0, "n": [1, {"m": ' + literal + "}]}"
    ).encode()
    assert kind_of(DECODERS[name], nested) == "integer_out_of_range"


def test_a_big_volume_literal_is_rejected_not_rounded() -> None:
    value = b'{"symbol": "PETR4", "price": 1.5, "volume": 1180591620717411303424, "ts": 0}'
    assert kind_of(decode_tick, value) == "invalid_field"


@pytest.mark.parametrize("name", ["tick", "raw"])
def test_a_big_floating_point_literal_is_a_double_and_is_stored(name: str) -> None:
    value = b'{"symbol": "PETR4", "price": 1.5, "volume": 1, "ts": 0, "n": 1e19, "m": 2.5e30}'
    fields = DECODERS[name](value)
    assert fields["n"] == 1e19 and fields["m"] == 2.5e30


def _outcome(decode: Decoder, value: bytes | None) -> None:
    """A document MongoDB can encode, or a DataError; anything else fails the test."""
    try:
        fields = decode(value)
    except DataError as exc:
        assert exc.kind and exc.message
        return
    document = make_document(fields, "t", 0, 0, 0, None, EPOCH)
    bson.encode(document)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)
tick_like = st.fixed_dictionaries(
    {},
    optional={
        "symbol": st.one_of(st.text(max_size=40), json_values),
        "price": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), json_values),
        "volume": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(), json_values),
        "ts": st.one_of(
            st.datetimes().map(lambda d: d.isoformat()),
            st.text(max_size=40),
            st.integers(min_value=-(2**70), max_value=2**70),
            st.floats(allow_nan=False),
            json_values,
        ),
        "extra": json_values,
        "$bad": json_values,
        "_id": json_values,
    },
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
@pytest.mark.parametrize("name", ["tick", "raw"])
def test_arbitrary_bytes_give_a_document_or_a_data_error(name: str, value: bytes) -> None:
    _outcome(DECODERS[name], value)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
@pytest.mark.parametrize("name", ["tick", "raw"])
def test_arbitrary_json_gives_a_document_or_a_data_error(name: str, obj: object) -> None:
    _outcome(DECODERS[name], json.dumps(obj).encode())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tick_like)
@pytest.mark.parametrize("name", ["tick", "raw"])
def test_arbitrary_tick_like_objects_give_a_document_or_a_data_error(name: str, obj: dict[str, Any]) -> None:
    _outcome(DECODERS[name], json.dumps(obj).encode())


# --- mapped decoders (tick.fields, tick.ts_format, tick.price_type) -----------------------------------------

MAPPING = {"symbol": "ticker", "price": "last", "volume": "qty", "ts": "time"}
MAPPED: dict[str, Decoder] = {
    "mapped": make_tick_decoder(TickSchema(fields=MAPPING)),
    "nested": make_tick_decoder(
        TickSchema(fields={"symbol": "instrument.code", "price": "quote.last", "ts": "quote.at"})
    ),
    "decimal": make_tick_decoder(TickSchema(fields=MAPPING, price_type="decimal128")),
    "epoch_ns": make_tick_decoder(TickSchema(fields=MAPPING, ts_format="epoch_ns")),
    "epoch_s": make_tick_decoder(TickSchema(ts_format="epoch_s", price_type="decimal128")),
}
feed_like = st.fixed_dictionaries(
    {},
    optional={
        "ticker": st.one_of(st.text(max_size=40), json_values),
        "last": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(), json_values),
        "qty": st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(), json_values),
        "time": st.one_of(
            st.integers(min_value=-(2**80), max_value=2**80),
            st.floats(allow_nan=False),
            st.datetimes().map(lambda d: d.isoformat()),
            json_values,
        ),
        "symbol": json_values,
        "price": json_values,
        "instrument": st.one_of(st.fixed_dictionaries({"code": st.text(max_size=12)}), json_values),
        "quote": st.one_of(
            st.fixed_dictionaries(
                {"last": st.floats(allow_nan=False, allow_infinity=False), "at": st.integers()}
            ),
            json_values,
        ),
        "extra": json_values,
        "$bad": json_values,
        "kafka": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200))
@pytest.mark.parametrize("name", list(MAPPED))
def test_mapped_decoders_turn_arbitrary_bytes_into_a_document_or_a_data_error(
    name: str, value: bytes
) -> None:
    _outcome(MAPPED[name], value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(feed_like)
@pytest.mark.parametrize("name", list(MAPPED))
def test_mapped_decoders_turn_arbitrary_feed_objects_into_a_document_or_a_data_error(
    name: str, obj: dict[str, Any]
) -> None:
    value = json.dumps(obj).encode()
    _outcome(MAPPED[name], value)
    try:
        MAPPED[name](value)
    except DataError as exc:  # every refusal of a JSON object is a named one, never a caught surprise
        assert exc.kind != "undecodable", exc.message


canonical_tick = st.fixed_dictionaries(
    {
        "symbol": st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,8}\Z"),
        "price": st.floats(min_value=1e-6, max_value=1e12, allow_nan=False) | st.integers(1, 10**12),
        "volume": st.integers(min_value=0, max_value=2**63 - 1),
        "ts": st.integers(min_value=-(2**40), max_value=2**40),
    },
    optional={"venue": st.text(max_size=8), "seq": st.integers(min_value=-(2**63), max_value=2**63 - 1)},
)


@settings(max_examples=400, deadline=None)
@given(canonical_tick)
def test_a_renamed_feed_decodes_exactly_like_the_canonical_tick(obj: dict[str, Any]) -> None:
    renamed = {MAPPING.get(k, k): v for k, v in obj.items()}
    assert MAPPED["mapped"](orjson.dumps(renamed)) == decode_tick(orjson.dumps(obj))


@settings(max_examples=400, deadline=None)
@given(canonical_tick)
def test_a_decimal128_price_is_the_literal_the_json_text_carries(obj: dict[str, Any]) -> None:
    from decimal import Decimal

    text = json.dumps({MAPPING.get(k, k): v for k, v in obj.items()})
    fields = MAPPED["decimal"](text.encode())
    literal = Decimal(repr(obj["price"])) if isinstance(obj["price"], float) else Decimal(obj["price"])
    assert fields["price"].as_tuple() == literal.as_tuple()
    assert float(fields["price"]) == float(obj["price"])
    # Everything else is what the double decoder gives.
    assert {k: v for k, v in fields.items() if k != "price"} == {
        k: v for k, v in decode_tick(json.dumps(obj).encode()).items() if k != "price"
    }
