"""The tick.fields / tick.ts_format / tick.price_type keys, globally and per topic."""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.core.codec import TickSchema, make_tick_decoder
from pipeline.ops.config import ConfigError, Settings, load_settings


def load(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [n for n in os.environ if n.startswith("PIPELINE_")]:
        monkeypatch.delenv(name)
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return load_settings(str(path))


def problems(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, monkeypatch)
    return info.value.lines


def test_the_defaults_are_todays_decoder() -> None:
    assert Settings().tick_schema("petr4") == TickSchema()


def test_global_and_per_topic_mapping_merge_one_tick_field_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load(
        tmp_path,
        """
tick:
  fields: {symbol: ticker, price: last}
  ts_format: epoch_ms
  price_type: decimal128
topics:
  petr4:
    fields: {price: px, ts: time}
    ts_format: epoch_ns
""",
        monkeypatch,
    )
    petr4 = settings.tick_schema("petr4")
    assert petr4.fields == {"symbol": "ticker", "price": "px", "ts": "time"}
    assert (petr4.ts_format, petr4.price_type) == ("epoch_ns", "decimal128")
    vale3 = settings.tick_schema("vale3")
    assert vale3.fields == {"symbol": "ticker", "price": "last"}
    assert vale3.ts_format == "epoch_ms"
    decode = make_tick_decoder(petr4)
    fields = decode(b'{"ticker": "petr4", "px": 36.50, "volume": 1, "time": 1700000000000000000}')
    assert str(fields["price"]) == "36.50" and isinstance(fields["price"], Decimal)


def test_mapping_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in os.environ if n.startswith("PIPELINE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIPELINE_TICK__FIELDS", '{"price": "last"}')
    monkeypatch.setenv("PIPELINE_TICK__TS_FORMAT", "epoch_s")
    monkeypatch.setenv("PIPELINE_TOPICS__VALE3__FIELDS", '{"volume": "qty"}')
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    settings = load_settings(str(path))
    assert settings.tick_schema("vale3").fields == {"price": "last", "volume": "qty"}
    assert settings.tick_schema("vale3").ts_format == "epoch_s"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("tick:\n  fields: {sym: ticker}\n", "tick.fields: unknown tick field 'sym'"),
        ("tick:\n  fields: {price: ''}\n", "tick.fields: price: the source field must be a non-empty string"),
        ("tick:\n  ts_format: epoch_m\n", "tick.ts_format: Input should be 'iso'"),
        ("tick:\n  price_type: float\n", "tick.price_type: Input should be 'double' or 'decimal128'"),
        (
            "tick:\n  fields: {price: last}\ntopics:\n  petr4:\n    fields: {volume: last}\n",
            "topics.petr4.fields (with tick.fields): price and volume are both read from 'last'",
        ),
    ],
)
def test_bad_tick_keys_are_one_line_each_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, fragment: str
) -> None:
    lines = problems(tmp_path, text, monkeypatch)
    assert any(fragment in line for line in lines), lines


def test_a_decimal_price_filter_that_does_not_order_prices_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (
        "tick:\n  price_type: decimal128\ntopics:\n  petr4:\n"
        "    filter: {all: [{field: volume, op: gte, value: 100}, {field: price, op: exists, value: true}]}\n"
    )
    assert load(tmp_path, text, monkeypatch).tick.price_type == "decimal128"
