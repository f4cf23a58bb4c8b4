"""Compacted topics (`cleanup.policy=compact`), on Apache Kafka 4.4 (issue 18): after the log cleaner has run,
a partition's offsets have gaps (the superseded records are gone). tickpipe stores exactly the surviving
records, under their own offsets, and commits the end offset.

The topic rolls a segment every 100 ms and the broker's cleaner looks for work every 100 ms, so the cleaner
really runs here: the test waits until only the latest record of each key is left in the closed segments
(plus the one record of the active segment, which is never cleaned) before the worker starts.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import start_broker
from tests.harness import TP, ProcessWorker, Scenario, dead_letter_count, stored_ids, wait_for
from tests.kafka4_support import end_offsets_of, on_broker, read_topic, status_json, status_lags, tick

pytestmark = [
    pytest.mark.servers,
    pytest.mark.write_path,
    pytest.mark.apache_kafka("the log cleaner (compaction)"),
]

PARTITIONS = 2
KEYS_PER_PARTITION = 25
ROUNDS = 20  # each key written once per round: 1,000 records
TOPIC_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "100",
    "min.cleanable.dirty.ratio": "0.01",
    "min.compaction.lag.ms": "0",
    "delete.retention.ms": "100",
}


@dataclass(frozen=True)
class Compacted:
    bootstrap: str
    topic: str
    produced: int
    survivors: dict[TP, list[int]]  # offsets left after compaction
    ends: dict[TP, int]


@pytest.fixture(scope="module")
def compacted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Compacted]:
    kafka = start_broker(tmp_path_factory.mktemp("kafka-compact"), extra={"log.cleaner.backoff.ms": "100"})
    try:
        yield _compacted_topic(kafka.bootstrap, f"compacted-{time.monotonic_ns()}")
    finally:
        kafka.stop()


def _compacted_topic(bootstrap: str, topic: str) -> Compacted:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1, config=TOPIC_CONFIG)
    for future in admin.create_topics([new], operation_timeout=30).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    n = 0
    for _round in range(ROUNDS):
        for p in range(PARTITIONS):
            for k in range(KEYS_PER_PARTITION):
                key = f"k{p}-{k:02d}".encode()
                producer.produce(topic, key=key, value=tick(n), partition=p)
                n += 1
        assert producer.flush(30) == 0
        time.sleep(0.15)  # the next round goes into a new segment
    for p in range(PARTITIONS):  # rolls the last round's segment; stays alone in the active segment
        producer.produce(topic, key=f"last-{p}".encode(), value=tick(n), partition=p)
        n += 1
    assert producer.flush(30) == 0
    tps = [(topic, p) for p in range(PARTITIONS)]
    ends = end_offsets_of(bootstrap, tps)
    assert sum(ends.values()) == n
    expected = PARTITIONS * (KEYS_PER_PARTITION + 1)
    left: list[int] = []

    def cleaned() -> bool:
        left[:] = [len(read_topic(bootstrap, topic))]
        return left[0] == expected

    wait_for(cleaned, timeout=180, interval=1, what=f"the cleaner to leave {expected} of {n} records")
    records = read_topic(bootstrap, topic)
    survivors = {tp: sorted(r.offset for r in records if r.partition == tp[1]) for tp in tps}
    for tp, offsets in survivors.items():
        assert len(offsets) == KEYS_PER_PARTITION + 1 and offsets[-1] == ends[tp] - 1
        assert len(offsets) < ends[tp], "no gaps: the cleaner did not run"
    return Compacted(bootstrap, topic, n, survivors, ends)


def test_a_compacted_topic_stores_the_surviving_records_and_commits_the_end_offset(
    make_scenario: Callable[..., Scenario], compacted: Compacted, tmp_path: Path
) -> None:
    sc = on_broker(make_scenario(("petr4",), partitions=PARTITIONS, create=False), compacted.bootstrap)
    sc.topics = [compacted.topic]
    sc.ends = dict(compacted.ends)
    worker = ProcessWorker(sc.env(), tmp_path / "worker.log").start()
    try:
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends or not worker.alive(),
            timeout=120,
            interval=0.3,
            what="committed offsets equal to the end offsets",
        )
        assert worker.alive(), worker.log_text()[-3000:]
        worker.terminate(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.stop()
    assert "Traceback" not in worker.log_text()
    with sc.mongo() as client:
        ids = stored_ids(client[sc.database], sc.topics)
    assert len(ids) == len(set(ids)), "duplicated documents"
    expected = {(compacted.topic, p, o) for (_t, p), offsets in compacted.survivors.items() for o in offsets}
    assert set(ids) == expected
    assert dead_letter_count(sc) == 0
    assert sc.committed(list(sc.ends)) == compacted.ends
    data = status_json(sc.env())
    assert set(status_lags(data).values()) == {0}, data
    (only,) = data["topics"]
    assert only["stored_documents"] == len(expected) and only["committed_total"] == compacted.produced
