"""The core delivery guarantee against the real test broker (Tansu) and test MongoDB server (SecantusDB)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from tests.harness import (
    Scenario,
    committed_offsets,
    end_offsets,
    produced_ids,
    reset_group_offsets,
    stored_ids,
    thread_worker,
    wait_for,
)

pytestmark = [pytest.mark.servers, pytest.mark.write_path]


def test_ten_thousand_ticks_stored_once_and_committed_then_redelivery_is_harmless(
    make_scenario: Callable[..., Scenario],
) -> None:
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    report = sc.produce(10_000)
    ends = end_offsets(report)
    assert report.delivered == 10_000 and len(ends) == 6, "expected 2 topics x 3 partitions"
    tps = list(ends)

    with thread_worker(sc.settings()) as runner:
        wait_for(lambda: sc.committed(tps) == ends, timeout=180, interval=0.5, what="all offsets committed")
        assert runner.stop() == 0
    totals = runner.worker.totals
    assert (totals.stored, totals.duplicates, totals.dead_lettered) == (10_000, 0, 0)

    with sc.mongo() as client:
        db = client[sc.database]
        ids = stored_ids(db, sc.topics)
        assert len(ids) == 10_000
        assert Counter(ids).most_common(1)[0][1] == 1
        assert set(ids) == produced_ids(report)
        for topic in sc.topics:
            assert "symbol_1_ts_1" in db[topic].index_information()
        doc = db[sc.topics[0]].find_one({"_id.partition": 1})
    assert doc is not None
    assert set(doc) == {"_id", "symbol", "price", "volume", "ts", "kafka", "ingested_at"}
    assert list(doc["_id"]) == ["topic", "partition", "offset"]
    assert doc["symbol"] == sc.topics[0].upper() and doc["kafka"]["key"] == doc["symbol"]
    assert isinstance(doc["ts"], datetime) and isinstance(doc["ingested_at"], datetime)
    assert isinstance(doc["kafka"]["timestamp"], datetime)
    assert isinstance(doc["price"], float) and doc["price"] > 0 and isinstance(doc["volume"], int)
    age = datetime.now(UTC) - doc["ts"].replace(tzinfo=UTC)
    assert timedelta(0) <= age < timedelta(minutes=10)
    assert committed_offsets(sc.servers.bootstrap, sc.group, tps) == ends

    # Re-delivery: rewind the group to the beginning and run again.
    reset_group_offsets(sc.servers.bootstrap, sc.group, {tp: 0 for tp in tps})
    assert set(sc.committed(tps).values()) == {0}
    with thread_worker(sc.settings()) as runner:
        wait_for(lambda: sc.committed(tps) == ends, timeout=180, interval=0.5, what="offsets committed again")
        assert runner.stop() == 0
    totals = runner.worker.totals
    assert (totals.stored, totals.duplicates, totals.dead_lettered) == (0, 10_000, 0)
    with sc.mongo() as client:
        ids = stored_ids(client[sc.database], sc.topics)
    assert len(ids) == 10_000 and set(ids) == produced_ids(report)


def test_regex_subscription_takes_matching_topics_only(make_scenario: Callable[..., Scenario]) -> None:
    sc = make_scenario(("ticks.petr4", "ticks.vale3", "other"), partitions=2)
    suffix = sc.topics[0].rsplit("-", 1)[1]
    matching = [t for t in sc.topics if t.startswith("ticks.")]
    # The topics are "ticks.petr4-<suffix>": subscribe by pattern, as a user would with ^ticks\..*
    pattern = rf"^ticks\..*-{suffix}$"
    report = sc.produce(600)
    ends = {tp: end for tp, end in end_offsets(report).items() if tp[0] in matching}
    settings = sc.settings(kafka={"topics": [pattern]})
    with thread_worker(settings) as runner:
        wait_for(
            lambda: sc.committed(list(ends)) == ends, timeout=120, interval=0.5, what="matching topics done"
        )
        assert runner.stop() == 0
    with sc.mongo() as client:
        db = client[sc.database]
        names = set(db.list_collection_names())
        assert set(matching) <= names and "other-" + suffix not in names
        ids = stored_ids(db, matching)
        assert "symbol_1_ts_1" in db[matching[0]].index_information()
    assert set(ids) == {i for i in produced_ids(report) if i[0] in matching}


def test_two_workers_in_one_group_split_partitions_and_store_everything_once(
    make_scenario: Callable[..., Scenario],
) -> None:
    # Produced in two parts, the second once both workers share the partitions: however fast the servers
    # drain a backlog, both workers then have ticks to store.
    sc = make_scenario(("petr4",), partitions=6)
    before = sc.produce(5_000, seed=1)
    with thread_worker(sc.settings()) as first:
        wait_for(lambda: first.worker.totals.stored > 500, timeout=60, what="first worker progress")
        with thread_worker(sc.settings()) as second:
            wait_for(lambda: second.worker.assigned, timeout=60, what="second worker assigned")
            wait_for(
                lambda: len(first.worker.assigned) + len(second.worker.assigned) == 6,
                timeout=60,
                what="the 6 partitions shared",
            )
            after = sc.produce(15_000, seed=2)
            ends = dict(sc.ends)
            wait_for(
                lambda: sc.committed(list(ends)) == ends, timeout=180, interval=0.5, what="all committed"
            )
            assert second.worker.totals.stored > 0
            assert second.stop() == 0
        assert first.stop() == 0
    assert first.worker.metrics.rebalances.labels("revoke")._value.get() >= 1
    with sc.mongo() as client:
        ids = stored_ids(client[sc.database], sc.topics)
    assert len(ids) == 20_000 and set(ids) == produced_ids(before) | produced_ids(after)
