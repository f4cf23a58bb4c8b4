"""The delivery guarantee when the broker itself fails, on Apache Kafka (kill -9 and restart on the same log
directory is something only a broker with durable storage can do; these tests skip on the Tansu fallback).

(a) the broker killed with SIGKILL and restarted on its log directory while the worker ingests, within the
    worker's session timeout;
(b) a 3-node KRaft cluster (RF=3, min.insync.replicas=2): the leader of a partition and then the group
    coordinator killed with SIGKILL mid-stream and restarted later, the producer never stopping;
(c) the broker down for four session timeouts (the worker's client declares its assignment lost, rejoins
    after the restart and resumes from the committed offsets).

They run on the first MongoDB-compatible test server only: the MongoDB server plays no part in what they
test, and on this 2-core machine they take 40 s to 2.5 min each (FerretDB runs the worker's own kill -9,
MongoDB-outage and Kafka-outage tests in test_faults.py and test_crash_and_signals.py).

Each ends with: every produced offset stored exactly once, zero dead letters, committed offsets equal to
the end offsets, no commit ever ahead of the stored data (the commit monitor, throughout), no traceback.
The producer is paced and keeps producing through every fault, so each fault happens mid-stream whatever
the servers' speed.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from tests.harness import (
    CommitMonitor,
    OffsetWatch,
    PacedProducer,
    ProcessWorker,
    Scenario,
    assert_exactly_once,
    dead_letter_count,
    wait_for,
)

pytestmark = [
    pytest.mark.servers,
    pytest.mark.slow,
    pytest.mark.apache_kafka("a broker crash and restart on the same log directory"),
]


def _on(sc: Scenario, bootstrap: str, replication: int = 1) -> Scenario:
    servers = dataclasses.replace(sc.servers, bootstrap=bootstrap)
    return dataclasses.replace(sc, servers=servers, ends={}, replication=replication)


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


def _finish(sc: Scenario, producer: PacedProducer, worker: ProcessWorker, watch: OffsetWatch) -> None:
    """After some more progress the producer stops; the worker commits everything and stops cleanly."""
    watch.more(1_000, what="progress after the faults")
    producer.stop()
    wait_for(lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=300, interval=0.5, what="all committed")
    assert worker.alive(), worker.log_text()[-3000:]
    worker.terminate(signal.SIGTERM)
    assert worker.wait(30) == 0


def _guarantee(sc: Scenario, monitor: CommitMonitor, worker: ProcessWorker) -> None:
    assert not monitor.violations, monitor.violations[:5]
    assert monitor.ranges_checked >= 10, "the monitor barely observed any commit"
    assert_exactly_once(sc)
    assert dead_letter_count(sc) == 0, "every tick is valid: nothing may be dead-lettered"
    _no_traceback(worker.log_text())


def _broker_restart(
    make_scenario: Callable[..., Scenario],
    own_kafka: Callable[..., Any],
    tmp_path: Path,
    *,
    session_ms: int,
    down_s: float,
) -> None:
    kafka = own_kafka()
    node = kafka.nodes[0]
    sc = _on(make_scenario(("petr4", "vale3"), partitions=3, create=False), kafka.bootstrap)
    sc.create_topics()
    sc.add_verification_index(sc.topics)
    producer = PacedProducer(sc, 0, rate=500).start()  # until after the fault
    monitor = CommitMonitor(sc, {t: t for t in sc.topics}, producer).start()
    watch = OffsetWatch(sc)
    env = sc.env(PIPELINE_KAFKA__SESSION_TIMEOUT_MS=str(session_ms), PIPELINE_RETRY__MAX_BACKOFF_MS="2000")
    worker = ProcessWorker(env, tmp_path / "worker.log").start()
    try:
        watch.wait(2_000, what="2,000 committed before the crash")
        node.kill()
        time.sleep(down_s)
        assert worker.alive(), "the worker exited while the broker was down"
        node.start()
        _finish(sc, producer, worker, watch)
    finally:
        watch.close()
        producer.stop_event.set()
        worker.stop()
        monitor.stop()
    _guarantee(sc, monitor, worker)


def test_broker_killed_and_restarted_on_its_log_dir_while_the_worker_ingests(
    make_scenario: Callable[..., Scenario], own_kafka: Callable[..., Any], tmp_path: Path
) -> None:
    # Down ~1 s plus the restart (~5 s): within the worker's 10 s session.
    _broker_restart(make_scenario, own_kafka, tmp_path, session_ms=10_000, down_s=1.0)


def test_broker_down_longer_than_the_session_timeout(
    make_scenario: Callable[..., Scenario], own_kafka: Callable[..., Any], tmp_path: Path
) -> None:
    # Down 12 s (plus the restart) with a 3 s session: the consumer declares its partitions lost meanwhile.
    _broker_restart(make_scenario, own_kafka, tmp_path, session_ms=3_000, down_s=12.0)


def _leader(admin: AdminClient, topic: str, partition: int) -> int:
    return int(admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader)


def _coordinator(admin: AdminClient, group: str) -> int:
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(timeout=15)
    return int(description.coordinator.id)


def test_three_node_cluster_leader_and_group_coordinator_killed_mid_stream(
    make_scenario: Callable[..., Scenario], own_kafka: Callable[..., Any], tmp_path: Path
) -> None:
    cluster = own_kafka(nodes=3)
    sc = _on(make_scenario(("petr4", "vale3"), partitions=3, create=False), cluster.bootstrap, replication=3)
    sc.create_topics()
    sc.add_verification_index(sc.topics)
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    producer = PacedProducer(sc, 0, rate=400).start()  # never stops until both faults are over
    monitor = CommitMonitor(sc, {t: t for t in sc.topics}, producer).start()
    watch = OffsetWatch(sc)
    worker = ProcessWorker(sc.env(PIPELINE_RETRY__MAX_BACKOFF_MS="2000"), tmp_path / "worker.log").start()
    try:
        watch.wait(2_000, what="progress before the first crash")
        coordinator = _coordinator(admin, sc.group)
        # The leader of a partition on another node than the coordinator (so the two crashes differ).
        victim = next(
            (t, p) for t in sc.topics for p in range(sc.partitions) if _leader(admin, t, p) != coordinator
        )
        leader = cluster.node(_leader(admin, *victim))
        leader.kill()
        time.sleep(5)  # the controller fences it after 3 s; another in-sync replica takes the lead
        watch.more(1_000, what="progress with a leader down (RF=3, min.insync.replicas=2)")
        leader.start()
        watch.more(1_000, what="progress after the leader's restart")

        coordinator_node = cluster.node(_coordinator(admin, sc.group))
        coordinator_node.kill()
        time.sleep(5)
        watch.more(1_000, what="progress with the coordinator down (it moved)")
        coordinator_node.start()
        assert producer.running()
        _finish(sc, producer, worker, watch)
    finally:
        watch.close()
        producer.stop_event.set()
        worker.stop()
        monitor.stop()
    _guarantee(sc, monitor, worker)
