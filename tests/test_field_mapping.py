"""Feeds with other field names on the real servers: the worker stores them under the tick names with
`tick.fields` / `tick.ts_format`, dead letters name the source field, and dead letters of a feed that
arrived before its mapping was configured are replayed once it is."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.ingest.routing import Router
from pipeline.ops.config import Settings
from tests.harness import Scenario, run_cli_in_process, thread_worker, wait_for

pytestmark = [pytest.mark.servers]

FIELDS = {"symbol": "ticker", "price": "last", "volume": "qty", "ts": "time"}
AT = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)


def feed(i: int, **override: object) -> bytes:
    at = AT + timedelta(seconds=i)
    value: dict[str, object] = {
        "ticker": "vale3",
        "last": 62.0 + i / 100,
        "qty": 100 + i,
        "time": (at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1),
        "venue": "B3",
    }
    value.update(override)
    return orjson.dumps(value)


def produce(sc: Scenario, values: list[bytes]) -> list[int]:
    offsets = sc.produce_values(sc.topics[0], values)
    sc.ends[(sc.topics[0], 0)] = offsets[-1] + 1
    return offsets


def run_worker(sc: Scenario, **sections: Any) -> Any:
    with thread_worker(sc.settings(**sections)) as runner:
        wait_for(lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=120, interval=0.3, what="committed")
        assert runner.stop() == 0
    return runner.worker.totals


@pytest.mark.write_path
def test_the_worker_stores_a_mapped_feed_and_names_the_source_field_of_bad_messages(
    make_scenario: Callable[..., Scenario],
) -> None:
    sc = make_scenario(tickers=("vale3",), partitions=1)
    offsets = produce(sc, [feed(0), feed(1), feed(2, last="62.02"), feed(3, price=1.0)])
    totals = run_worker(sc, tick={"fields": FIELDS, "ts_format": "epoch_ms"})
    assert totals.stored == 2 and totals.dead_lettered == 2
    with sc.mongo() as client:
        db = client[sc.database]
        docs = sorted(db[sc.topics[0]].find(), key=lambda d: d["_id"]["offset"])
        assert [(d["symbol"], d["price"], d["volume"], d["venue"]) for d in docs] == [
            ("VALE3", 62.0, 100, "B3"),
            ("VALE3", 62.01, 101, "B3"),
        ]
        assert all(not {"ticker", "last", "qty", "time"} & set(d) for d in docs)
        assert docs[1]["ts"].replace(tzinfo=UTC) == AT + timedelta(seconds=1)
        letters = {d["_id"]["offset"]: d["error"] for d in db["dead_letters"].find()}
    assert letters[offsets[2]] == {
        "kind": "invalid_field",
        "message": "price (from 'last') must be a number, got str",
        "stage": "decode",
    }
    assert letters[offsets[3]]["kind"] == "conflicting_field"


def test_a_feed_dead_lettered_before_its_mapping_is_replayed_once_mapped(
    make_scenario: Callable[..., Scenario], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sc = make_scenario(tickers=("vale3",), partitions=1)
    produce(sc, [feed(i) for i in range(5)])
    totals = run_worker(sc)  # no mapping yet: every message lacks 'symbol'
    assert totals.stored == 0 and totals.dead_lettered == 5
    config = tmp_path / "mapped.yaml"
    config.write_text(
        "tick:\n  fields: {symbol: ticker, price: last, volume: qty, ts: time}\n  ts_format: epoch_ms\n"
    )
    env = {**sc.env(), "PIPELINE_CONFIG": str(config)}
    code, out, err = run_cli_in_process(monkeypatch, capsys, env, "dlq", "replay", "--format", "json")
    assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert [(r["kind"], r["outcome"]) for r in rows] == [("missing_field", "stored")] * 5
    code, out, err = run_cli_in_process(
        monkeypatch, capsys, env, "query", "ticks", "VALE3", "--oldest-first", "--format", "json"
    )
    assert code == 0, err
    ticks = [orjson.loads(line) for line in out.splitlines()]
    assert [(t["price"], t["volume"]) for t in ticks] == [(62.0 + i / 100, 100 + i) for i in range(5)]


def test_the_router_applies_a_topics_own_mapping() -> None:
    settings = Settings(topics={"vale3": {"fields": {"symbol": "ticker"}, "ts_format": "epoch_ms"}})
    decode = Router(settings).route("vale3").decode
    assert decode(b'{"ticker": "vale3", "price": 1, "volume": 1, "ts": 0}')["symbol"] == "VALE3"
