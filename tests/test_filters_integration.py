"""Per-topic filters (`topics.<name>.filter`) with the real worker, broker and MongoDB server: only
matching ticks are stored, the others are counted as filtered, and every offset (filtered ones included)
is committed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Producer

from pipeline.read import query as q
from tests.harness import Scenario
from tests.query_data import run_worker_until_committed

pytestmark = pytest.mark.servers

T0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
MIN_PRICE, MIN_VOLUME = 38.5, 500


def _produce(sc: Scenario, topic: str, values: list[tuple[int, bytes]]) -> dict[tuple[int, int], bytes]:
    """(partition, value) pairs -> {(partition, offset): value}, from the delivery reports."""
    producer = Producer({"bootstrap.servers": sc.servers.bootstrap, "enable.idempotence": True})
    placed: dict[tuple[int, int], bytes] = {}
    errors: list[str] = []

    def report(error: object, message: object) -> None:
        if error is not None:
            errors.append(str(error))
        else:
            placed[(message.partition(), message.offset())] = message.value()  # type: ignore[attr-defined]

    for partition, value in values:
        producer.produce(topic, value=value, key=b"k", partition=partition, on_delivery=report)
    producer.flush(30)
    assert not errors and len(placed) == len(values), errors
    for (partition, offset), _ in placed.items():
        sc.ends[(topic, partition)] = max(sc.ends.get((topic, partition), 0), offset + 1)
    return placed


def _tick(symbol: str, i: int, price: float, volume: int) -> bytes:
    ts = (T0 + timedelta(seconds=i)).isoformat()
    return orjson.dumps({"symbol": symbol, "price": price, "volume": volume, "ts": ts})


def test_filter_stores_only_matching_ticks_counts_the_rest_and_commits_every_offset(
    make_scenario: Callable[..., Scenario],
) -> None:
    sc = make_scenario(("petr4", "vale3"), partitions=2)
    filtered_topic, plain_topic = sc.topics
    # Boundaries on purpose: price must be > 38.5 (38.5 itself is out), volume >= 500 (500 itself is in).
    prices = [38.0, 38.5, 38.51, 39.0, 40.0]
    volumes = [100, 499, 500, 800]
    values: list[tuple[int, bytes]] = []
    expected_kept: set[tuple[float, int]] = set()
    i = 0
    for price in prices:
        for volume in volumes:
            values.append((i % 2, _tick("PETR4", i, price, volume)))
            if price > MIN_PRICE and volume >= MIN_VOLUME:
                expected_kept.add((price, volume))
            i += 1
    values.append((1, b"not json"))  # invalid: dead-lettered, not "filtered"
    values.append((0, _tick("PETR4", i, 10.0, 100)))  # each partition ends with a filtered message
    values.append((1, _tick("PETR4", i + 1, 99.0, 100)))
    produced = _produce(sc, filtered_topic, values)
    plain = _produce(sc, plain_topic, [(p, _tick("VALE3", n, 30.0, 100)) for n, p in enumerate([0, 1] * 5)])

    spec = {
        "all": [
            {"field": "price", "op": "gt", "value": MIN_PRICE},
            {"field": "volume", "op": "gte", "value": MIN_VOLUME},
        ]
    }
    settings = sc.settings(topics={filtered_topic: {"filter": spec}})
    totals = run_worker_until_committed(sc, settings, dict(sc.ends))

    kept = len(expected_kept)
    assert kept == 6
    assert totals.filtered == len(values) - 1 - kept  # everything but the bad message and the kept ticks
    assert totals.dead_lettered == 1
    assert totals.stored == kept + len(plain)
    with sc.mongo() as client:
        db = client[sc.database]
        docs = list(db[filtered_topic].find())
        assert {(d["price"], d["volume"]) for d in docs} == expected_kept and len(docs) == kept
        for doc in docs:  # each stored document is the produced message at those coordinates
            source = orjson.loads(produced[(doc["_id"]["partition"], doc["_id"]["offset"])])
            assert (source["price"], source["volume"]) == (doc["price"], doc["volume"])
        assert db[plain_topic].count_documents({}) == len(plain)
        # The read side agrees.
        stats = {s.symbol: s for s in q.stats(db, [filtered_topic, plain_topic])}
        assert stats["PETR4"].count == kept and stats["VALE3"].count == len(plain)
    # Every offset is committed, including the filtered messages at the end of each partition.
    assert sc.committed(list(sc.ends)) == sc.ends
    assert sc.ends[(filtered_topic, 0)] + sc.ends[(filtered_topic, 1)] == len(values)
