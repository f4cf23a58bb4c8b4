"""kill -9 during ingestion with every kind of handling at once: filtered ticks, dead letters, the latest
write model and a time-series collection. The commit monitor checks throughout that no committed offset is
ahead of the data — stored ticks counted by distinct coordinates, dead letters in `dead_letters` — and at the
end every offset is where it belongs exactly once.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from tests.harness import CommitMonitor, Scenario, kill_loop, stored_ids

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.write_path]

PER_PARTITION = 2_500
PARTITIONS = 2


def _value(i: int, topic_kind: str) -> tuple[bytes, str]:
    """The i-th message of a topic and what must become of it: stored, filtered or dead."""
    if i % 97 == 13:
        return b'{"symbol": "PETR4", "price": "not a number"}', "dead"
    price = 30 + (i % 50) * 0.5
    ts = f"2026-11-25T13:{i // 600 % 60:02d}:{i // 10 % 60:02d}.{i % 10}00Z"
    value = orjson.dumps({"symbol": "PETR4", "price": price, "volume": 100 + i, "ts": ts})
    if topic_kind == "filtered" and price < 40:
        return value, "filtered"
    return value, "stored"


def _produce(sc: Scenario, kinds: dict[str, str]) -> dict[tuple[str, int], dict[int, str]]:
    """Every topic's messages, idempotently, recording where each offset must end up."""
    fate: dict[tuple[str, int], dict[int, str]] = {}
    lock = threading.Lock()
    producer = Producer(
        {"bootstrap.servers": sc.servers.bootstrap, "enable.idempotence": True, "linger.ms": 20}
    )

    def report(expect: str) -> Callable[[Any, Any], None]:
        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            with lock:
                fate.setdefault((msg.topic(), msg.partition()), {})[msg.offset()] = expect

        return delivered

    for topic, kind in kinds.items():
        for partition in range(PARTITIONS):
            for i in range(PER_PARTITION):
                value, expect = _value(i, kind)
                while True:
                    try:
                        producer.produce(
                            topic, value, b"PETR4", partition=partition, on_delivery=report(expect)
                        )
                        break
                    except BufferError:
                        producer.poll(0.05)
    assert producer.flush(60) == 0
    return fate


@pytest.mark.needs_mongo("timeseries")
def test_kill_9_with_filters_dead_letters_latest_and_timeseries_loses_and_duplicates_nothing(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("plain", "filtered", "latest", "series"), partitions=PARTITIONS)
    kinds = dict(zip(sc.topics, ("plain", "filtered", "latest", "series"), strict=True))
    by_kind = {kind: topic for topic, kind in kinds.items()}
    sc.add_verification_index(sc.topics)
    topics = {
        by_kind["filtered"]: {"filter": {"field": "price", "op": "gte", "value": 40}},
        by_kind["latest"]: {"write_model": "insert_and_latest"},
        by_kind["series"]: {"timeseries": {"granularity": "seconds"}},
    }
    fate = _produce(sc, kinds)
    sc.ends = {tp: max(offsets) + 1 for tp, offsets in fate.items()}
    total = sum(len(offsets) for offsets in fate.values())
    monitor = CommitMonitor(
        sc,
        {t: t for t in sc.topics},
        {tp: sorted(offsets) for tp, offsets in fate.items()},
        dead_lettered={tp: {o for o, f in offsets.items() if f == "dead"} for tp, offsets in fate.items()},
        filtered={tp: {o for o, f in offsets.items() if f == "filtered"} for tp, offsets in fate.items()},
    ).start()
    env = sc.env(PIPELINE_TOPICS=json.dumps(topics), PIPELINE_BATCH__MAX_MESSAGES="300")
    try:
        result = kill_loop(sc, total, kills_wanted=4, log_path=tmp_path / "worker.log", seed=11, env=env)
    finally:
        monitor.stop()
    assert result.final_exit_code == 0
    assert len(result.kills) == 4
    assert not monitor.violations, monitor.violations[:5]
    assert monitor.ranges_checked > 0
    assert "Traceback" not in result.log

    with sc.mongo() as client:
        db = client[sc.database]
        ids = stored_ids(db, sc.topics)
        letters = [
            (d["_id"]["topic"], d["_id"]["partition"], d["_id"]["offset"]) for d in db["dead_letters"].find()
        ]
        latest = db["latest"].find_one({"_id": "PETR4"})
        newest = max(
            db[by_kind["latest"]].find({}, {"ts": 1}),
            key=lambda d: (d["ts"], d["_id"]["partition"], d["_id"]["offset"], d["_id"]["topic"]),
        )
    expected_stored = {
        (t, p, o) for (t, p), offsets in fate.items() for o, f in offsets.items() if f == "stored"
    }
    expected_dead = {(t, p, o) for (t, p), offsets in fate.items() for o, f in offsets.items() if f == "dead"}
    assert len(ids) == len(set(ids)), "a coordinate is stored twice (time-series has no unique _id)"
    assert set(ids) == expected_stored
    assert len(letters) == len(set(letters)) and set(letters) == expected_dead
    assert latest is not None and latest["source"] == newest["_id"] and latest["ts"] == newest["ts"]
