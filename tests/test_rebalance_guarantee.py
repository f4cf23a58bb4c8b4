"""Rebalances while a worker cannot write to MongoDB: its in-flight work for revoked partitions is dropped,
work for kept partitions is never skipped, and nothing is ever committed ahead of the data.

The scenario that lost ticks before (issue 15.1): a worker holds batches in flight when its connection to
MongoDB is cut (it reaches MongoDB through a proxy; the test cuts it); a second worker, which reaches MongoDB
directly, joins, so the first must give partitions up while its writes cannot finish; the second stores and
commits them and leaves; the first gets them back; its connection comes back, and its old writes land late.
With eager, cooperative (incremental) and the KIP-848 consumer group protocol. A commit monitor checks
throughout that no committed offset is ahead of the data.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.dev.process import free_port
from tests.harness import (
    CommitMonitor,
    ProcessWorker,
    Scenario,
    TcpProxy,
    assert_exactly_once,
    dead_letter_count,
    stored_count,
    wait_for,
    wait_members,
)

pytestmark = [pytest.mark.servers, pytest.mark.slow, pytest.mark.write_path]

# Small record batches (~20 ticks, produced with SMALL_RECORD_BATCHES) and fetches of about one record batch
# per partition: librdkafka then interleaves the partitions in what it delivers (~20 ticks of each in turn),
# so every batch of 200 in flight holds messages of every partition, and whatever a rebalance revokes (all
# partitions, or some under the cooperative protocols) has work in flight. (With the producer's default
# batches a fetch returns a whole record batch of hundreds of ticks of one partition however small it is
# asked to be, and a cooperative revoke could find no work in flight for the partitions it moved.)
SMALL_RECORD_BATCHES = {"batch.size": 2048}
SMALL_FETCHES = {"max.partition.fetch.bytes": 2048}
PROTOCOLS: dict[str, dict[str, str]] = {
    "eager": {"PIPELINE_KAFKA__CONSUMER": json.dumps(SMALL_FETCHES)},
    "cooperative": {
        "PIPELINE_KAFKA__CONSUMER": json.dumps(
            {**SMALL_FETCHES, "partition.assignment.strategy": "cooperative-sticky"}
        )
    },
    "consumer": {
        "PIPELINE_KAFKA__GROUP_PROTOCOL": "consumer",
        "PIPELINE_KAFKA__CONSUMER": json.dumps(SMALL_FETCHES),
    },
}


@pytest.mark.parametrize(
    "protocol",
    [
        "eager",
        "cooperative",
        pytest.param(
            "consumer", marks=pytest.mark.apache_kafka("the KIP-848 consumer group protocol (Kafka 4.0+)")
        ),
    ],
)
def test_a_rebalance_while_a_worker_cannot_write_loses_nothing(
    protocol: str, make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    sc.add_verification_index(sc.topics)
    report = sc.produce(12_000, producer_config=SMALL_RECORD_BATCHES)
    env = sc.env(
        PIPELINE_BATCH__MAX_MESSAGES="200",
        PIPELINE_WORKER__REBALANCE_TIMEOUT_S="2",
        PIPELINE_WORKER__SHUTDOWN_TIMEOUT_S="5",
        PIPELINE_RETRY__MAX_BACKOFF_MS="1000",
        PIPELINE_MONGO__SERVER_SELECTION_TIMEOUT_MS="1000",
        **PROTOCOLS[protocol],
    )
    if protocol == "consumer":
        env.pop("PIPELINE_KAFKA__SESSION_TIMEOUT_MS", None)  # a broker setting under this protocol
    mongo_port = int(sc.servers.mongo_uri.split(":")[2].split("/")[0])
    proxy = TcpProxy(mongo_port, free_port()).start()
    proxied = sc.servers.mongo_uri.replace(f":{mongo_port}/", f":{proxy.listen_port}/")
    monitor = CommitMonitor(sc, {t: t for t in sc.topics}, report.offsets).start()
    first = ProcessWorker({**env, "PIPELINE_MONGO__URI": proxied}, tmp_path / "first.log").start()
    second: ProcessWorker | None = None
    try:
        wait_for(lambda: stored_count(sc) > 2_000, timeout=120, interval=0.1, what="progress before the cut")
        proxy.cut()  # the first worker's writes in flight fail and keep failing
        at_cut = stored_count(sc)
        second = ProcessWorker(env, tmp_path / "second.log").start()
        wait_members(sc.servers.bootstrap, sc.group, 2, timeout=120)  # the first gave partitions up
        wait_for(
            lambda: stored_count(sc) > at_cut + 1_000, timeout=120, interval=0.2, what="the second's progress"
        )
        second.terminate(signal.SIGTERM)  # it flushes, commits and leaves
        assert second.wait(60) == 0
        wait_members(sc.servers.bootstrap, sc.group, 1, timeout=120)  # the first takes them back
        proxy.restore()  # its old writes (for partitions it no longer owned under that epoch) land now
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=300, interval=0.5, what="all committed"
        )
        first.terminate(signal.SIGTERM)
        assert first.wait(60) == 0
    finally:
        proxy.stop()
        first.stop()
        if second is not None:
            second.stop()
        monitor.stop()
    assert not monitor.violations, monitor.violations[:5]
    assert_exactly_once(sc, report)
    assert dead_letter_count(sc) == 0, "a valid tick must never be dead-lettered"
    for worker in (first, second):
        assert worker is not None and "Traceback" not in worker.log_text()
    assert "partitions revoked before their in-flight work was durable" in first.log_text()
