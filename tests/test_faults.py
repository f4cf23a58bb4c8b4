"""Fault injection against the real test servers: each test ends with "nothing lost, nothing duplicated".

- a kill loop (30 x kill -9 during 100,000 messages), with the commit monitor running throughout;
- a MongoDB outage (kill -9 of the server, restart on the same data directory 10 s later);
- a Kafka outage (the broker frozen for 10 s; the broker unreachable for 10 s through a cut proxy);
- a group of workers that grows and shrinks (SIGTERM and kill -9) while it consumes.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.dev.servers import EmbeddedKafka, EmbeddedMongo, free_port
from tests.harness import (
    CommitMonitor,
    ProcessWorker,
    Scenario,
    TcpProxy,
    assert_exactly_once,
    kill_loop,
    stored_count,
    wait_for,
)

pytestmark = [pytest.mark.servers, pytest.mark.slow]


def _on(sc: Scenario, *, bootstrap: str | None = None, mongo_uri: str | None = None) -> Scenario:
    servers = dataclasses.replace(
        sc.servers, bootstrap=bootstrap or sc.servers.bootstrap, mongo_uri=mongo_uri or sc.servers.mongo_uri
    )
    return dataclasses.replace(sc, servers=servers, ends={})


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


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
    _no_traceback(result.log)


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[EmbeddedKafka]:
    kafka = EmbeddedKafka(tmp_path).start()
    try:
        yield kafka
    finally:
        kafka.stop()


def test_mongodb_outage_worker_waits_commits_nothing_and_resumes(
    make_scenario: Callable[..., Scenario], own_mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    sc = _on(make_scenario(("petr4", "vale3"), partitions=3), mongo_uri=own_mongo.uri)
    sc.add_verification_index(sc.topics)
    report = sc.produce(16_000)
    monitor = CommitMonitor(sc, {t: t for t in sc.topics}, report.offsets).start()
    worker = ProcessWorker(sc.env(PIPELINE_RETRY__MAX_BACKOFF_MS="2000"), tmp_path / "worker.log").start()
    try:
        wait_for(
            lambda: stored_count(sc) > 3_000, timeout=90, interval=0.1, what="progress before the outage"
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


@pytest.mark.parametrize("outage", ["frozen", "unreachable"])
def test_kafka_outage_worker_survives_and_resumes(
    outage: str, make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    # A dedicated broker: frozen with SIGSTOP, or reached only through a proxy that is cut (connections reset,
    # then refused). Tansu keeps data in memory only, so a restart would lose the topic: an outage of 10 s
    # with the data kept is the honest equivalent here.
    proxy: TcpProxy | None = None
    if outage == "unreachable":
        kafka = EmbeddedKafka(tmp_path, advertised_port=free_port())
        kafka.start()
        proxy = TcpProxy(kafka.port, kafka.advertised_port).start()
        bootstrap = f"127.0.0.1:{kafka.advertised_port}"
    else:
        kafka = EmbeddedKafka(tmp_path).start()
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
                lambda: stored_count(sc) > 3_000, timeout=90, interval=0.1, what="progress before the outage"
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
        kafka.stop()


def test_group_grows_and_shrinks_with_sigterm_and_kill_9(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    total = 40_000
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    sc.add_verification_index(sc.topics)
    report = sc.produce(total)
    monitor = CommitMonitor(sc, {t: t for t in sc.topics}, report.offsets).start()
    env = sc.env()
    workers: dict[str, ProcessWorker] = {}

    def start(name: str) -> None:
        workers[name] = ProcessWorker(env, tmp_path / f"{name}.log").start()

    def at(fraction: float) -> None:
        wait_for(
            lambda: stored_count(sc) >= fraction * total, timeout=120, interval=0.1, what=f"{fraction:.0%}"
        )
        assert stored_count(sc) < total, "the stream ended before the membership change: test needs more data"

    exit_codes: dict[str, int] = {}
    try:
        for name in ("w1", "w2", "w3"):
            start(name)
        at(0.15)
        workers["w1"].terminate(signal.SIGTERM)  # leaves cleanly: flush, commit, exit 0
        exit_codes["w1"] = workers["w1"].wait(30)
        at(0.30)
        start("w4")
        at(0.45)
        workers["w2"].kill9()  # dies mid-batch: its uncommitted work is re-delivered to another member
        at(0.60)
        start("w5")
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=300, interval=0.5, what="all committed"
        )
        for name in ("w3", "w4", "w5"):
            assert workers[name].alive(), f"{name} exited"
            workers[name].terminate(signal.SIGTERM)
        for name in ("w3", "w4", "w5"):
            exit_codes[name] = workers[name].wait(30)
    finally:
        for worker in workers.values():
            worker.stop()
        monitor.stop()
    assert exit_codes == {"w1": 0, "w3": 0, "w4": 0, "w5": 0}
    assert not monitor.violations, monitor.violations[:5]
    assert_exactly_once(sc, report)
    for worker in workers.values():
        _no_traceback(worker.log_text())
