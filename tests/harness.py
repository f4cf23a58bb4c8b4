"""Test harness: real test servers, worker runners (thread or subprocess), and delivery-guarantee checks.

Every integration test talks to the real Tansu broker and the real SecantusDB server started by conftest.py;
nothing here mocks Kafka or MongoDB.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from pymongo import ASCENDING, MongoClient
from pymongo.errors import ConnectionFailure as PyMongoConnectionFailure

from pipeline.clients.admin import create_topics
from pipeline.dev.simulator import ProduceReport, TickProducer
from pipeline.ingest.worker import Worker
from pipeline.ops.config import KafkaConfig, Settings

TP = tuple[str, int]
REPO = Path(__file__).resolve().parent.parent


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(
    predicate: Callable[[], bool], timeout: float, interval: float = 0.1, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Servers:
    bootstrap: str
    mongo_uri: str
    workdir: Path


@dataclass
class Scenario:
    """One isolated test scenario: its own topics, consumer group and database on the shared servers."""

    servers: Servers
    topics: list[str]
    group: str
    database: str
    partitions: int = 3
    extra_env: dict[str, str] = field(default_factory=dict)
    # End offsets (next offset) of everything produced so far, from delivery reports.
    ends: dict[TP, int] = field(default_factory=dict)

    @property
    def kafka(self) -> KafkaConfig:
        return KafkaConfig(bootstrap_servers=self.servers.bootstrap, topics=self.topics, group_id=self.group)

    def env(self, **overrides: str) -> dict[str, str]:
        """PIPELINE_* environment for a worker subprocess."""
        env = {
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": self.servers.bootstrap,
            "PIPELINE_KAFKA__TOPICS": ",".join(self.topics),
            "PIPELINE_KAFKA__GROUP_ID": self.group,
            "PIPELINE_KAFKA__SESSION_TIMEOUT_MS": "3000",
            "PIPELINE_MONGO__URI": self.servers.mongo_uri,
            "PIPELINE_MONGO__DATABASE": self.database,
            "PIPELINE_METRICS__ENABLED": "false",
            "PIPELINE_LOG__FORMAT": "json",
            "PIPELINE_LOG__SUMMARY_INTERVAL_S": "2",
            "PIPELINE_WORKER__STARTUP_TIMEOUT_S": "10",
        }
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def settings(self, **sections: Any) -> Settings:
        """In-process worker settings (same values as env(), as init arguments)."""
        base: dict[str, Any] = {
            "kafka": {
                "bootstrap_servers": self.servers.bootstrap,
                "topics": self.topics,
                "group_id": self.group,
                "session_timeout_ms": 3000,
            },
            "mongo": {"uri": self.servers.mongo_uri, "database": self.database},
            "metrics": {"enabled": False},
            "log": {"format": "json", "summary_interval_s": 2},
            "worker": {"startup_timeout_s": 10},
        }
        for section, values in sections.items():
            base[section] = {**base.get(section, {}), **values}
        return Settings(**base)

    def create_topics(self, topics: list[str] | None = None, partitions: int | None = None) -> None:
        create_topics(self.kafka, topics or self.topics, partitions or self.partitions)

    def produce(self, count: int, topics: list[str] | None = None, seed: int = 7) -> ProduceReport:
        producer = TickProducer(
            self.kafka, topics or self.topics, seed=seed, record_offsets=True, spread=True
        )
        report = producer.run(count)
        assert report.ok, f"producing failed: {report.first_error}"
        for tp, offsets in report.offsets.items():
            self.ends[tp] = max(self.ends.get(tp, 0), max(offsets) + 1)
        return report

    def produce_values(self, topic: str, values: list[bytes | None], partition: int = 0) -> list[int]:
        """Produce exact values (None = a null value) to one partition; returns their offsets in order."""
        offsets: list[int] = []
        errors: list[str] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                offsets.append(msg.offset())

        producer = Producer({"bootstrap.servers": self.servers.bootstrap, "enable.idempotence": True})
        for value in values:
            producer.produce(topic, value=value, key=b"k", partition=partition, on_delivery=delivered)
            producer.flush(30)  # one at a time: offsets come back in order
        assert not errors and len(offsets) == len(values), errors
        return offsets

    def mongo(self) -> MongoClient[dict[str, Any]]:
        return MongoClient(self.servers.mongo_uri, serverSelectionTimeoutMS=20_000)

    def committed(self, tps: list[TP], timeout: float = 10.0) -> dict[TP, int]:
        return committed_offsets(self.servers.bootstrap, self.group, tps, timeout)

    def add_verification_index(self, collections: list[str]) -> None:
        """Test-only index on the _id coordinates: lets the monitor count an offset range cheaply (the
        SecantusDB test server does not use the _id index for embedded-document _id range queries)."""
        with self.mongo() as client:
            for name in collections:
                client[self.database][name].create_index(
                    [("_id.topic", ASCENDING), ("_id.partition", ASCENDING), ("_id.offset", ASCENDING)]
                )


def committed_offsets(bootstrap: str, group: str, tps: list[TP], timeout: float = 10.0) -> dict[TP, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=timeout)
    finally:
        consumer.close()
    return {(p.topic, p.partition): p.offset for p in parts}


def reset_group_offsets(bootstrap: str, group: str, offsets: dict[TP, int]) -> None:
    """Like kafka-consumer-groups --reset-offsets: the group must have no active members."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False
        )
    finally:
        consumer.close()


def stored_ids(db: Any, collections: list[str]) -> list[tuple[str, int, int]]:
    ids = []
    for name in collections:
        for doc in db[name].find({}, {"_id": 1}):
            _id = doc["_id"]
            ids.append((_id["topic"], _id["partition"], _id["offset"]))
    return ids


def produced_ids(report: ProduceReport) -> set[tuple[str, int, int]]:
    return {(t, p, o) for (t, p), offsets in report.offsets.items() for o in offsets}


def end_offsets(report: ProduceReport) -> dict[TP, int]:
    return {tp: max(offsets) + 1 for tp, offsets in report.offsets.items()}


# ---- worker runners ------------------------------------------------------------------------------------


class ThreadWorker:
    """A Worker running in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.worker = Worker(settings)
        self.exit_code: int | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="test-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.exit_code = self.worker.run()
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> ThreadWorker:
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> int | None:
        self.worker.request_stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker thread did not stop"
        if self.error is not None:
            raise self.error
        return self.exit_code


@contextlib.contextmanager
def thread_worker(settings: Settings) -> Iterator[ThreadWorker]:
    runner = ThreadWorker(settings).start()
    try:
        yield runner
    finally:
        if runner.thread.is_alive():
            runner.stop()


class ProcessWorker:
    """`python -m pipeline run` as a real subprocess (for kill -9 and signal tests)."""

    def __init__(self, env: dict[str, str], log_path: Path, args: list[str] | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ProcessWorker:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "run", *self.args],
            env={**clean, **self.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait(10)


# ---- the delivery-guarantee monitor ------------------------------------------------------------------------


class CommitMonitor:
    """Checks continuously, while the worker runs, that no committed offset is ahead of the data in MongoDB.

    Each cycle reads the group's committed offsets first, then counts the stored documents in every offset
    range that became committed since the previous cycle. Stored data only grows, so a range that is still
    incomplete after its commit was observed was incomplete when it was committed: a violation.
    """

    def __init__(
        self, scenario: Scenario, collections: dict[str, str], produced: dict[TP, list[int]]
    ) -> None:
        self.scenario = scenario
        self.collections = collections  # topic -> collection
        self.produced = {tp: sorted(offsets) for tp, offsets in produced.items()}
        self.checked: dict[TP, int] = {tp: 0 for tp in produced}
        self.violations: list[str] = []
        self.cycles = 0
        self.skipped_cycles = 0
        self.ranges_checked = 0
        # (time, committed offsets) of every cycle, for tests that check when commits happened.
        self.history: list[tuple[float, dict[TP, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-monitor", daemon=True)
        self._consumer = Consumer(
            {
                "bootstrap.servers": scenario.servers.bootstrap,
                "group.id": scenario.group,
                "enable.auto.commit": False,
            }
        )
        # Short server selection: during a MongoDB outage a cycle fails fast and is retried.
        self._client: MongoClient[dict[str, Any]] = MongoClient(
            scenario.servers.mongo_uri, serverSelectionTimeoutMS=2000
        )

    def start(self) -> CommitMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self.check_once()  # one last cycle on the final state
        self._consumer.close()
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except (PyMongoConnectionFailure, KafkaException):
                # A server is down (fault tests): skip this cycle. Nothing is marked checked, so the next
                # cycle re-checks every range committed meanwhile.
                self.skipped_cycles += 1
            except Exception as exc:  # any other monitor error must fail the test, not vanish
                self.violations.append(f"monitor error: {exc!r}")
                return
            self._stop.wait(0.05)

    def check_once(self) -> None:
        tps = list(self.produced)
        parts = self._consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
        self.history.append((time.monotonic(), {(p.topic, p.partition): p.offset for p in parts}))
        db = self._client[self.scenario.database]
        for part in parts:
            tp = (part.topic, part.partition)
            committed = part.offset
            if committed < 0 or committed <= self.checked[tp]:
                continue
            low = self.checked[tp]
            expected = sum(1 for o in self.produced[tp] if low <= o < committed)
            stored = db[self.collections[tp[0]]].count_documents(
                {"_id.topic": tp[0], "_id.partition": tp[1], "_id.offset": {"$gte": low, "$lt": committed}}
            )
            self.ranges_checked += 1
            if stored < expected:
                self.violations.append(
                    f"{tp[0]}[{tp[1]}]: committed {committed} but only {stored}/{expected} messages in "
                    f"[{low}, {committed}) are stored"
                )
            self.checked[tp] = committed
        self.cycles += 1


# ---- fault drivers ---------------------------------------------------------------------------------------


def assert_exactly_once(sc: Scenario, report: ProduceReport | None = None) -> None:
    """Every produced message stored exactly once (no duplicate, missing or foreign document), and every
    partition committed to its end."""
    from collections import Counter

    with MongoClient(sc.servers.mongo_uri, serverSelectionTimeoutMS=20_000) as client:
        ids = stored_ids(client[sc.database], sc.topics)
    expected = {(t, p, o) for (t, p), end in sc.ends.items() for o in range(end)}
    if report is not None:
        expected = produced_ids(report)
    counts = Counter(ids)
    duplicates = [i for i, n in counts.items() if n > 1]
    assert not duplicates, f"{len(duplicates)} duplicated documents, e.g. {duplicates[:3]}"
    missing = expected - set(counts)
    assert not missing, f"{len(missing)} messages missing, e.g. {sorted(missing)[:3]}"
    foreign = set(counts) - expected
    assert not foreign, f"{len(foreign)} unexpected documents, e.g. {sorted(foreign)[:3]}"
    assert sc.committed(list(sc.ends)) == sc.ends, "not every partition is committed to its end"


def stored_count(sc: Scenario, collections: list[str] | None = None) -> int:
    with MongoClient(sc.servers.mongo_uri, serverSelectionTimeoutMS=5000) as client:
        db = client[sc.database]
        return sum(db[name].estimated_document_count() for name in collections or sc.topics)


@dataclass
class KillLoopResult:
    kills: list[int]  # stored count at each kill
    final_exit_code: int
    log: str


def run_process_until_committed(
    sc: Scenario, env: dict[str, str], log_path: Path, timeout: float = 180
) -> str:
    """Run `pipeline run` as a process until every produced offset is committed, stop it with SIGTERM
    (it must exit 0), and return its log."""
    worker = ProcessWorker(env, log_path).start()
    try:
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends,
            timeout=timeout,
            interval=0.5,
            what="all committed",
        )
        worker.terminate(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.stop()
    return worker.log_text()


def kill_loop(
    sc: Scenario, total: int, kills_wanted: int, log_path: Path, seed: int, env: dict[str, str] | None = None
) -> KillLoopResult:
    """Start the worker, kill -9 it at a random moment of its ingestion, restart it; `kills_wanted` times.
    Then a last run until everything is committed, stopped with SIGTERM."""
    import random

    rng = random.Random(seed)
    env = env or sc.env()
    ends = {tp: end for tp, end in sc.ends.items()}
    kills: list[int] = []
    while len(kills) < kills_wanted:
        before = stored_count(sc)
        worker = ProcessWorker(env, log_path).start()
        try:
            wait_for(lambda b=before: stored_count(sc) > b, timeout=90, interval=0.05, what="progress")
            time.sleep(rng.uniform(0.0, 1.2))
            at = stored_count(sc)
            assert at < total, f"ingestion finished before kill #{len(kills) + 1}; the test needs more data"
            worker.kill9()
            kills.append(at)
        finally:
            worker.stop()
    final = ProcessWorker(env, log_path).start()
    try:
        wait_for(lambda: sc.committed(list(ends)) == ends, timeout=300, interval=0.5, what="all committed")
        final.terminate(signal.SIGTERM)
        code = final.wait(30)
    finally:
        final.stop()
    return KillLoopResult(kills, code, log_path.read_text(errors="replace"))


class TcpProxy:
    """A TCP forwarder that can cut every connection and refuse new ones (a broker outage on demand)."""

    def __init__(self, target_port: int, listen_port: int) -> None:
        import socket

        self.target_port = target_port
        self.listen_port = listen_port
        self._socket_mod = socket
        self._conns: list[Any] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> TcpProxy:
        socket = self._socket_mod
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.listen_port))
        server.listen(64)
        self._server = server
        self._thread = threading.Thread(target=self._accept, args=(server,), daemon=True)
        self._thread.start()
        return self

    def _accept(self, server: Any) -> None:
        socket = self._socket_mod
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()

    def cut(self) -> None:
        """Close the listener and every connection: clients see resets, then 'connection refused'."""
        socket = self._socket_mod
        if self._server is not None:
            self._server.close()
            self._server = None
        with self._lock:
            conns, self._conns = self._conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    def restore(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()
