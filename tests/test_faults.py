"""Fault injection against the real test servers: each test ends with "nothing lost, nothing duplicated".

- a kill loop (30 x kill -9 during 100,000 messages), with the commit monitor running throughout;
- a MongoDB outage (kill -9 of the server, restart on the same data directory 10 s later);
- a Kafka outage (the broker frozen for 10 s; the broker unreachable for 10 s through a cut proxy);
- a group of workers that grows and shrinks (SIGTERM and kill -9) while it consumes.

None of them depends on the servers' speed: the kill points are chosen by progress (harness.kill_loop), the
outages start once part of a backlog is stored and end long before the rest could be, and the group test
paces its producer so that the stream is still flowing at every membership change. Each runs once per
MongoDB-compatible test server (write_path), except the 30-kill loop (the first server only, for time).
Broker crashes and a 3-node cluster: test_broker_faults.py.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.dev.process import free_port
from tests.conftest import MongoServer
from tests.harness import (
    CommitMonitor,
    OffsetWatch,
    PacedProducer,
    ProcessWorker,
    Scenario,
    TcpProxy,
    assert_exactly_once,
    committed_total,
    dead_letter_count,
    kill_loop,
    wait_for,
    wait_members,
)

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def _on(sc: Scenario, *, bootstrap: str | None = None, mongo_uri: str | None = None) -> Scenario:
    servers = dataclasses.replace(
        sc.servers, bootstrap=bootstrap or sc.servers.bootstrap, mongo_uri=mongo_uri or sc.servers.mongo_uri
    )
    return dataclasses.replace(sc, servers=servers, ends={})


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


# ~3.5 min per server on this 2-core machine: on the first server only (the kill loop runs on every server in
# test_crash_and_signals.py's 5-kill test).
def test_thirty_kill_9s_during_100k_messages(make_scenario: Callable[..., Scenario], tmp_path: Path) -> None:
    total = 100_000
    sc = make_scenario(("petr4",), partitions=3)
    sc.add_verification_index(sc.topics)
    report = sc.produce(total)
    monitor = CommitMonitor(sc, {t: t for t in sc.topics}, report.offsets).start()
    env = sc.env(PIPELINE_KAFKA__SESSION_TIMEOUT_MS="2000")
    try:
        result = kill_loop(sc, total, kills_wanted=30, log_path=tmp_path / "worker.log", seed=30, env=env)
    finally:
        monitor.stop()
    assert len(result.kills) == 30 and result.final_exit_code == 0
    assert not monitor.violations, monitor.violations[:5]
    assert monitor.ranges_checked >= 30
    assert_exactly_once(sc, report)
    assert dead_letter_count(sc) == 0, "every tick is valid: a re-delivery must never be dead-lettered"
    _no_traceback(result.log)


@pytest.mark.write_path
def test_mongodb_outage_worker_waits_commits_nothing_and_resumes(
    make_scenario: Callable[..., Scenario], own_mongo: MongoServer, tmp_path: Path
) -> None:
    sc = _on(make_scenario(("petr4", "vale3"), partitions=3), mongo_uri=own_mongo.uri)
    sc.add_verification_index(sc.topics)
    report = sc.produce(16_000)
    monitor = CommitMonitor(sc, {t: t for t in sc.topics}, report.offsets).start()
    worker = ProcessWorker(sc.env(PIPELINE_RETRY__MAX_BACKOFF_MS="2000"), tmp_path / "worker.log").start()
    try:
        wait_for(
            lambda: committed_total(sc) > 3_000, timeout=90, interval=0.1, what="progress before the outage"
        )
        own_mongo.kill()
        down_at = time.monotonic()
        time.sleep(10)
        assert worker.alive(), "the worker exited during the MongoDB outage"
        up_at = time.monotonic()
        own_mongo.start()
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=240, interval=0.5, what="all committed"
        )
        assert worker.alive()
        worker.terminate(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.stop()
        monitor.stop()
    assert not monitor.violations, monitor.violations[:5]
    # Once MongoDB was down (allowing 2 s for a write acknowledged just before the kill), no commit moved.
    frozen = [offsets for t, offsets in monitor.history if down_at + 2 <= t < up_at]
    assert len(frozen) >= 10, "the monitor did not observe the outage"
    assert all(offsets == frozen[0] for offsets in frozen), "offsets were committed while MongoDB was down"
    assert_exactly_once(sc, report)
    log = worker.log_text()
    assert "MongoDB unavailable" in log and "retrying" in log
    _no_traceback(log)


@pytest.mark.write_path
@pytest.mark.parametrize("outage", ["frozen", "unreachable"])
def test_kafka_outage_worker_survives_and_resumes(
    outage: str, make_scenario: Callable[..., Scenario], own_kafka: Callable[..., Any], tmp_path: Path
) -> None:
    # A dedicated broker: frozen with SIGSTOP for 10 s (longer than the 3 s session: the group expires the
    # member meanwhile), or reached only through a proxy that is cut (connections reset, then refused).
    # A broker killed and restarted on the same log dir: test_broker_faults.py.
    proxy: TcpProxy | None = None
    if outage == "unreachable":
        kafka = own_kafka(advertised_port=free_port())
        proxy = TcpProxy(kafka.port, kafka.advertised_port).start()
        bootstrap = f"127.0.0.1:{kafka.advertised_port}"
    else:
        kafka = own_kafka()
        bootstrap = kafka.bootstrap
    base = make_scenario(("petr4", "vale3"), partitions=3, create=False)
    sc = _on(base, bootstrap=bootstrap)
    try:
        sc.create_topics()
        sc.add_verification_index(sc.topics)
        report = sc.produce(16_000)
        monitor = CommitMonitor(sc, {t: t for t in sc.topics}, report.offsets).start()
        worker = ProcessWorker(sc.env(), tmp_path / "worker.log").start()
        try:
            wait_for(
                lambda: committed_total(sc) > 3_000,
                timeout=90,
                interval=0.1,
                what="progress before the outage",
            )
            if proxy is not None:
                proxy.cut()
            else:
                assert kafka.server is not None and kafka.server.proc is not None
                kafka.server.proc.send_signal(signal.SIGSTOP)
            time.sleep(10)
            assert worker.alive(), "the worker exited during the Kafka outage"
            if proxy is not None:
                proxy.restore()
            else:
                assert kafka.server is not None and kafka.server.proc is not None
                kafka.server.proc.send_signal(signal.SIGCONT)
            wait_for(
                lambda: sc.committed(list(sc.ends)) == sc.ends,
                timeout=240,
                interval=0.5,
                what="all committed",
            )
            assert worker.alive()
            worker.terminate(signal.SIGTERM)
            assert worker.wait(30) == 0
        finally:
            worker.stop()
            monitor.stop()
        assert not monitor.violations, monitor.violations[:5]
        assert_exactly_once(sc, report)
        _no_traceback(worker.log_text())
    finally:
        if kafka.server is not None and kafka.server.proc is not None and kafka.server.alive():
            kafka.server.proc.send_signal(signal.SIGCONT)
        if proxy is not None:
            proxy.stop()


@pytest.mark.write_path
def test_group_grows_and_shrinks_with_sigterm_and_kill_9(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    # The producer is paced (1,000 ticks/s) and runs until after the last membership change, so every
    # change happens while the stream is flowing, however fast or slow the servers are. Each change waits
    # for 3,000 more committed offsets since the previous one (progress, not time), and then for the group
    # to settle (a member count) before the next.
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    sc.add_verification_index(sc.topics)
    env = sc.env()
    bootstrap = sc.servers.bootstrap
    workers: dict[str, ProcessWorker] = {}
    watch = OffsetWatch(sc)

    def start(name: str) -> None:
        workers[name] = ProcessWorker(env, tmp_path / f"{name}.log").start()

    def progress(what: str) -> None:
        watch.more(3_000, what=f"3,000 more committed before {what}")
        assert producer is not None and producer.running()

    exit_codes: dict[str, int] = {}
    producer: PacedProducer | None = None
    monitor: CommitMonitor | None = None
    for name in ("w1", "w2", "w3"):
        start(name)
    try:
        wait_members(bootstrap, sc.group, 3)
        producer = PacedProducer(sc, 0, rate=1_000).start()
        monitor = CommitMonitor(sc, {t: t for t in sc.topics}, producer).start()
        progress("w1 leaves")
        workers["w1"].terminate(signal.SIGTERM)  # leaves cleanly: flush, commit, exit 0
        exit_codes["w1"] = workers["w1"].wait(30)
        wait_members(bootstrap, sc.group, 2)
        progress("w4 joins")
        start("w4")
        wait_members(bootstrap, sc.group, 3)
        progress("w2 is killed")
        workers["w2"].kill9()  # dies mid-batch: its uncommitted work is re-delivered to another member
        wait_members(bootstrap, sc.group, 2)  # once its session expired
        progress("w5 joins")
        start("w5")
        wait_members(bootstrap, sc.group, 3)
        progress("the end of the stream")
        report = producer.stop()
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=300, interval=0.5, what="all committed"
        )
        for name in ("w3", "w4", "w5"):
            assert workers[name].alive(), f"{name} exited"
            workers[name].terminate(signal.SIGTERM)
        for name in ("w3", "w4", "w5"):
            exit_codes[name] = workers[name].wait(30)
    finally:
        watch.close()
        if producer is not None:
            producer.stop_event.set()
        for worker in workers.values():
            worker.stop()
        if monitor is not None:
            monitor.stop()
    assert exit_codes == {"w1": 0, "w3": 0, "w4": 0, "w5": 0}
    assert monitor is not None and not monitor.violations, monitor.violations[:5]
    assert_exactly_once(sc, report)
    assert dead_letter_count(sc) == 0, "every tick is valid: a re-delivery must never be dead-lettered"
    for worker in workers.values():
        _no_traceback(worker.log_text())
