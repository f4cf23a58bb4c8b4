"""The KIP-848 consumer group protocol (`kafka.group_protocol: consumer`), on Apache Kafka 4.4 (issue 18.3).

Under this protocol the broker owns the session timeout, the heartbeat interval and the assignment; it
assigns and revokes partitions incrementally. The broker here sets `group.consumer.session.timeout.ms` to
3 s (and the heartbeat to 0.5 s), so a member killed with SIGKILL leaves the group within seconds (the
default is 45 s).

Members join, one leaves with SIGTERM, one dies with SIGKILL, another joins, while MongoDB is slow (every
request the workers send it is held 20 ms by a proxy, so writes are in flight at every hand-over) and a
producer keeps producing throughout: every tick is stored exactly once, nothing is dead-lettered, no
committed offset is ever ahead of the stored data (a commit monitor, throughout), the group ends with lag 0,
and the broker describes it as a `consumer` group.

Switching protocols with the workers stopped (classic -> consumer -> classic) resumes from the group's
committed offsets: nothing is read twice.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import ConsumerGroupType
from confluent_kafka.admin import AdminClient

from pipeline.dev.process import free_port
from tests.conftest import start_broker
from tests.harness import (
    CommitMonitor,
    OffsetWatch,
    PacedProducer,
    ProcessWorker,
    Scenario,
    assert_exactly_once,
    dead_letter_count,
    thread_worker,
    wait_for,
    wait_members,
)
from tests.kafka4_support import DelayProxy, log_events, on_broker, status_json, status_lags

pytestmark = [
    pytest.mark.servers,
    pytest.mark.slow,
    pytest.mark.write_path,
    pytest.mark.apache_kafka("the KIP-848 consumer group protocol (Kafka 4.0+)"),
]

SESSION_MS = 3_000
BROKER = {
    "group.consumer.min.session.timeout.ms": "1000",
    "group.consumer.session.timeout.ms": str(SESSION_MS),
    "group.consumer.min.heartbeat.interval.ms": "250",
    "group.consumer.heartbeat.interval.ms": "500",
}
MONGO_DELAY_S = 0.02


@pytest.fixture(scope="module")
def kip848_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    kafka = start_broker(tmp_path_factory.mktemp("kafka-kip848"), extra=BROKER)
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


def group_type(bootstrap: str, group: str) -> ConsumerGroupType:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group], request_timeout=10)[group].result(10)
    kind: ConsumerGroupType = description.type
    return kind


def test_members_join_leave_and_die_under_the_consumer_protocol_while_mongodb_is_slow(
    make_scenario: Callable[..., Scenario], kip848_kafka: str, tmp_path: Path
) -> None:
    sc = on_broker(make_scenario(("petr4", "vale3"), partitions=3, create=False), kip848_kafka)
    sc.create_topics()
    sc.add_verification_index(sc.topics)
    mongo_port = int(sc.servers.mongo_uri.split(":")[2].split("/")[0])
    proxy = DelayProxy(mongo_port, free_port(), MONGO_DELAY_S).start()
    slow_uri = sc.servers.mongo_uri.replace(f":{mongo_port}/", f":{proxy.listen_port}/")
    env = sc.env(
        PIPELINE_KAFKA__GROUP_PROTOCOL="consumer",
        PIPELINE_MONGO__URI=slow_uri,
        PIPELINE_BATCH__MAX_MESSAGES="200",
        PIPELINE_WORKER__REBALANCE_TIMEOUT_S="5",
    )
    env.pop("PIPELINE_KAFKA__SESSION_TIMEOUT_MS", None)  # the broker's group.consumer.session.timeout.ms
    producer = PacedProducer(sc, 0, rate=400).start()  # until after the last membership change
    monitor = CommitMonitor(sc, {t: t for t in sc.topics}, producer).start()
    watch = OffsetWatch(sc)
    workers: dict[str, ProcessWorker] = {}

    def start(name: str) -> ProcessWorker:
        workers[name] = ProcessWorker(env, tmp_path / f"{name}.log").start()
        return workers[name]

    def members(count: int) -> None:
        wait_members(sc.servers.bootstrap, sc.group, count, timeout=120)

    try:
        a = start("a")
        members(1)
        assert group_type(kip848_kafka, sc.group) == ConsumerGroupType.CONSUMER
        watch.more(500, what="progress with one member")
        start("b")
        members(2)
        watch.more(500, what="progress with two members")
        c = start("c")
        members(3)
        watch.more(500, what="progress with three members")

        workers["b"].terminate(signal.SIGTERM)  # leaves: flushes, commits, its partitions move
        assert workers["b"].wait(60) == 0, workers["b"].log_text()[-3000:]
        members(2)
        watch.more(500, what="progress after the SIGTERM")

        c.kill9()  # dies: the broker fences it after its session timeout, its partitions move
        died = time.monotonic()
        members(1)
        fenced_s = time.monotonic() - died
        assert fenced_s < 10 * SESSION_MS / 1000, f"the dead member left the group after {fenced_s:.1f}s"
        watch.more(500, what="progress after the SIGKILL")

        start("d")
        members(2)
        watch.more(1_000, what="progress with a new member")
        producer.stop()
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=300, interval=0.5, what="all committed"
        )
        for name in ("a", "d"):
            assert workers[name].alive(), workers[name].log_text()[-3000:]
            workers[name].terminate(signal.SIGTERM)
        for name in ("a", "d"):
            assert workers[name].wait(60) == 0, workers[name].log_text()[-3000:]
        assert a.wait(1) == 0
    finally:
        producer.stop_event.set()
        watch.close()
        for worker in workers.values():
            worker.stop()
        monitor.stop()
        proxy.stop()
    assert not monitor.violations, monitor.violations[:5]
    assert monitor.ranges_checked >= 10, "the monitor barely observed any commit"
    assert_exactly_once(sc)
    assert dead_letter_count(sc) == 0, "every tick is valid: nothing may be dead-lettered"
    for worker in workers.values():
        assert "Traceback" not in worker.log_text(), worker.log_text()[-3000:]
    data = status_json(sc.env(PIPELINE_KAFKA__GROUP_PROTOCOL="consumer"))
    assert set(status_lags(data).values()) == {0}, data
    assert (data["group_protocol"], data["group_members"]) == ("consumer", 0), data
    assert any(incremental_revocations(w.log_text()) for w in workers.values()), (
        "no member kept partitions through a revocation: the incremental hand-over was not exercised"
    )


def incremental_revocations(log: str) -> int:
    """Revocations after which the member still held partitions (the new protocol moves only some)."""
    held: set[str] = set()
    count = 0
    for event in log_events(log):
        parts = {p for p in str(event.get("partitions", "")).split(",") if p}
        if event.get("msg") == "partitions assigned":
            held |= parts
        elif event.get("msg") == "partitions revoked":
            held -= parts
            count += bool(held)
    return count


def test_switching_the_group_protocol_with_the_workers_stopped_keeps_the_committed_offsets(
    make_scenario: Callable[..., Scenario],
) -> None:
    """Committed offsets belong to the group id, not to the protocol: stop every worker, change
    kafka.group_protocol, start them again, and they resume where the group stood (no message read twice);
    the broker converts the empty group. Both ways."""
    sc = make_scenario(("petr4",), partitions=3)
    for step, (protocol, count) in enumerate([("classic", 900), ("consumer", 600), ("classic", 300)]):
        sc.produce(count, seed=step)
        with thread_worker(sc.settings(kafka={"group_protocol": protocol})) as runner:
            wait_for(
                lambda: sc.committed(list(sc.ends)) == sc.ends,
                timeout=120,
                interval=0.3,
                what="all committed",
            )
            assert group_type(sc.servers.bootstrap, sc.group).name.lower() == protocol
            assert runner.stop() == 0
        totals = runner.worker.totals
        assert (totals.consumed, totals.stored, totals.duplicates) == (count, count, 0), (protocol, totals)
    assert_exactly_once(sc)
