"""Storage options per topic: the latest tick per symbol, and time-series collections (kept idempotent)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from pipeline.ops.config import ConfigError, load_settings
from tests.harness import Scenario, reset_group_offsets, stored_ids, thread_worker, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.write_path]


def _run_until_committed(sc: Scenario, settings: Any, ends: dict[tuple[str, int], int]) -> Any:
    with thread_worker(settings) as runner:
        wait_for(
            lambda: runner.worker.error is not None or sc.committed(list(ends)) == ends,
            timeout=180,
            interval=0.5,
            what="all committed",
        )
        assert runner.worker.error is None, f"the worker stopped on: {runner.worker.error}"
        assert runner.stop() == 0
    return runner.worker.totals


def _newest_by_symbol(db: Any, collection: str) -> dict[str, dict[str, Any]]:
    """The newest tick of each symbol in the one tick order: ts, then partition, then offset, then topic
    (ticks sharing a millisecond are ordered as a reader of their partition saw them)."""

    def order(doc: dict[str, Any]) -> tuple[Any, ...]:
        return (doc["ts"], doc["_id"]["partition"], doc["_id"]["offset"], doc["_id"]["topic"])

    newest: dict[str, dict[str, Any]] = {}
    for doc in db[collection].find({}, {"symbol": 1, "ts": 1, "price": 1, "volume": 1}):
        current = newest.get(doc["symbol"])
        if current is None or order(doc) > order(current):
            newest[doc["symbol"]] = doc
    return newest


def test_insert_and_latest_keeps_history_and_the_newest_tick_of_each_symbol(
    make_scenario: Callable[..., Scenario],
) -> None:
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    sc.produce(3_000)
    topics = {t: {"write_model": "insert_and_latest"} for t in sc.topics}
    settings = sc.settings(topics=topics)
    totals = _run_until_committed(sc, settings, dict(sc.ends))
    assert totals.stored == 3_000 and totals.latest_updates > 0
    with sc.mongo() as client:
        db = client[sc.database]
        latest = {d["_id"]: d for d in db["latest"].find()}
        expected = {}
        for topic in sc.topics:
            expected.update(_newest_by_symbol(db, topic))
    assert set(latest) == {t.upper() for t in sc.topics} == set(expected)
    for symbol, doc in latest.items():
        assert doc["ts"] == expected[symbol]["ts"]
        assert doc["price"] == expected[symbol]["price"] and doc["volume"] == expected[symbol]["volume"]
        assert doc["symbol"] == symbol and set(doc["source"]) == {"topic", "partition", "offset"}

    # Re-delivering everything (older ticks, in another order) never moves "latest" back.
    reset_group_offsets(sc.servers.bootstrap, sc.group, {tp: 0 for tp in sc.ends})
    totals = _run_until_committed(sc, settings, dict(sc.ends))
    assert totals.duplicates == 3_000 and totals.latest_updates == 0
    with sc.mongo() as client:
        again = {d["_id"]: d for d in client[sc.database]["latest"].find()}
    assert again == latest


def test_latest_only_write_model_keeps_one_document_per_symbol(
    make_scenario: Callable[..., Scenario],
) -> None:
    sc = make_scenario(("petr4",), partitions=1)
    topic = sc.topics[0]
    base = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)
    # Out of order on purpose: the newest tick (price 3.0) is not the last one produced.
    ticks = [(base + timedelta(seconds=s), p) for s, p in ((1, 1.0), (3, 3.0), (2, 2.0))]
    values = [
        orjson.dumps({"symbol": "PETR4", "price": p, "volume": 100, "ts": ts.isoformat()}) for ts, p in ticks
    ]
    offsets = sc.produce_values(topic, values)
    settings = sc.settings(topics={topic: {"write_model": "latest"}})
    _run_until_committed(sc, settings, {(topic, 0): offsets[-1] + 1})
    with sc.mongo() as client:
        db = client[sc.database]
        assert db[topic].count_documents({}) == 0, "write_model latest must not keep history"
        latest = list(db["latest"].find())
    assert len(latest) == 1
    assert latest[0]["price"] == 3.0 and latest[0]["ts"].replace(tzinfo=UTC) == base + timedelta(seconds=3)


@pytest.mark.needs_mongo("timeseries")
def test_timeseries_collection_is_created_and_stays_idempotent_without_a_unique_id(
    make_scenario: Callable[..., Scenario],
) -> None:
    sc = make_scenario(("petr4", "vale3"), partitions=2)
    sc.produce(2_000)
    options = {"timeseries": {"granularity": "seconds", "expire_after_s": 86_400}}
    settings = sc.settings(topics={t: options for t in sc.topics})
    totals = _run_until_committed(sc, settings, dict(sc.ends))
    assert totals.stored == 2_000
    with sc.mongo() as client:
        db = client[sc.database]
        for topic in sc.topics:
            info = next(iter(db.list_collections(filter={"name": topic})))
            assert info["options"]["timeseries"] == {
                "timeField": "ts",
                "metaField": "symbol",
                "granularity": "seconds",
            }
            assert info["options"]["expireAfterSeconds"] == 86_400
        # The premise: this server, like MongoDB, does not enforce a unique _id in a time-series collection.
        db.create_collection("premise", timeseries={"timeField": "ts", "metaField": "symbol"})
        probe = {"_id": {"topic": "t", "partition": 0, "offset": 0}, "symbol": "X", "ts": datetime.now(UTC)}
        db["premise"].insert_one(dict(probe))
        db["premise"].insert_one(dict(probe))
        assert db["premise"].count_documents({}) == 2

    # So a re-delivery must be de-duplicated by tickpipe itself.
    reset_group_offsets(sc.servers.bootstrap, sc.group, {tp: 0 for tp in sc.ends})
    totals = _run_until_committed(sc, settings, dict(sc.ends))
    assert totals.stored == 0 and totals.duplicates == 2_000
    with sc.mongo() as client:
        ids = stored_ids(client[sc.database], sc.topics)
    assert len(ids) == len(set(ids)) == 2_000


@pytest.mark.parametrize(
    "options",
    [{"format": "raw", "write_model": "latest"}, {"format": "raw", "timeseries": {}}],
)
def test_latest_and_timeseries_need_tick_format(
    options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PIPELINE_TOPICS", "PIPELINE_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as error:
        load_settings(None, topics={"petr4": options})
    assert "topics.petr4" in str(error.value) and "format: tick" in str(error.value)
