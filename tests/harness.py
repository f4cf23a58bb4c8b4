"""Test harness: real test servers, worker runners (thread or subprocess), and delivery-guarantee checks.

Every integration test talks to the real servers started by conftest.py (Apache Kafka, or the Tansu fallback;
SecantusDB and FerretDB); nothing here mocks Kafka or MongoDB.
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
    mongo_name: str = "SecantusDB"


@dataclass
class Scenario:
    """One isolated test scenario: its own topics, consumer group and database on the shared servers."""

    servers: Servers
    topics: list[str]
    group: str
    database: str
    partitions: int = 3
    replication: int = 1
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
        if (
            env.get("PIPELINE_KAFKA__GROUP_PROTOCOL") == "consumer"
            and "PIPELINE_KAFKA__SESSION_TIMEOUT_MS" not in overrides
        ):
            del env["PIPELINE_KAFKA__SESSION_TIMEOUT_MS"]  # a broker setting under KIP-848: refused if set
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
        if base["kafka"].get("group_protocol") == "consumer" and "session_timeout_ms" not in sections.get(
            "kafka", {}
        ):
            del base["kafka"]["session_timeout_ms"]  # a broker setting under KIP-848: refused if set
        return Settings(**base)

    def create_topics(self, topics: list[str] | None = None, partitions: int | None = None) -> None:
        create_topics(self.kafka, topics or self.topics, partitions or self.partitions, self.replication)

    def produce(
        self,
        count: int,
        topics: list[str] | None = None,
        seed: int = 7,
        producer_config: dict[str, Any] | None = None,
    ) -> ProduceReport:
        producer = TickProducer(
            self.kafka,
            topics or self.topics,
            seed=seed,
            record_offsets=True,
            spread=True,
            extra_config=producer_config,
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
    """The group's committed offsets; retried within `timeout` while the coordinator is loading or moving
    (right after a broker start or a failover)."""
    from confluent_kafka import KafkaError

    retry = {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError._TIMED_OUT,
    }
    deadline = time.monotonic() + timeout
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        while True:
            try:
                parts = consumer.committed(
                    [TopicPartition(t, p) for t, p in tps], timeout=max(0.5, deadline - time.monotonic())
                )
                break
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if time.monotonic() >= deadline or error is None or error.code() not in retry:
                    raise
                time.sleep(0.2)
    finally:
        consumer.close()
    return {(p.topic, p.partition): p.offset for p in parts}


class OffsetWatch:
    """The group's committed offsets, summed: cheap progress to wait on (one OffsetFetch to the broker),
    unlike counting stored documents, which some servers can only do by scanning the collection."""

    def __init__(self, sc: Scenario, tps: list[TP] | None = None) -> None:
        self.tps = tps or [(t, p) for t in sc.topics for p in range(sc.partitions)]
        self._consumer = Consumer(
            {"bootstrap.servers": sc.servers.bootstrap, "group.id": sc.group, "enable.auto.commit": False}
        )

    def total(self) -> int:
        """-1 while the broker cannot be asked (an outage): never satisfies a wait."""
        try:
            parts = self._consumer.committed([TopicPartition(t, p) for t, p in self.tps], timeout=5)
        except KafkaException:
            return -1
        return sum(max(0, p.offset) for p in parts)

    def wait(self, at_least: int, timeout: float = 180, what: str = "progress") -> int:
        wait_for(lambda: self.total() >= at_least, timeout=timeout, interval=0.05, what=what)
        return self.total()

    def more(self, count: int, timeout: float = 180, what: str = "progress") -> int:
        """Wait for `count` more committed offsets than now (now = once the broker can be asked)."""
        base: list[int] = []
        wait_for(
            lambda: base.append(self.total()) or base[-1] >= 0, timeout=timeout, what="the committed offsets"
        )
        return self.wait(base[-1] + count, timeout, what)

    def close(self) -> None:
        self._consumer.close()


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
        self._started_lines_before = self.log_text().count('"msg":"worker started"')
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

    def wait_started(self, timeout: float = 60) -> None:
        """Until this run has logged 'worker started' (its signal handlers are installed by then: a SIGTERM
        sent earlier would kill the interpreter instead of stopping the worker)."""
        before = self._started_lines_before

        def started() -> bool:
            assert self.alive(), f"the worker exited at start-up:\n{self.log_text()[-3000:]}"
            return self.log_text().count('"msg":"worker started"') > before

        wait_for(started, timeout=timeout, interval=0.1, what="the worker to start")

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

    `produced` is either the offsets of a backlog produced beforehand, or a PacedProducer still producing:
    then each cycle checks the committed ranges up to the last offset whose delivery was reported so far
    (per partition, delivery reports come in offset order) and the rest in a later cycle.

    It counts distinct coordinates, not documents (a collection without a unique `_id`, time-series, could
    hold one twice). `dead_lettered` offsets must be in the dead-letter collection once committed, and
    `filtered` offsets are expected nowhere; every other produced offset must be stored.
    """

    def __init__(
        self,
        scenario: Scenario,
        collections: dict[str, str],
        produced: dict[TP, list[int]] | PacedProducer,
        dead_lettered: dict[TP, set[int]] | None = None,
        filtered: dict[TP, set[int]] | None = None,
        dead_letter_collection: str = "dead_letters",
    ) -> None:
        self.scenario = scenario
        self.collections = collections  # topic -> collection
        self.dead_lettered = dead_lettered or {}
        self.filtered = filtered or {}
        self.dead_letter_collection = dead_letter_collection
        self._live = produced if isinstance(produced, PacedProducer) else None
        if isinstance(produced, PacedProducer):
            tps = [(t, p) for t in scenario.topics for p in range(scenario.partitions)]
            self.produced: dict[TP, list[int]] = {tp: [] for tp in tps}
        else:
            self.produced = {tp: sorted(offsets) for tp, offsets in produced.items()}
        self.checked: dict[TP, int] = {tp: 0 for tp in self.produced}
        self.violations: list[str] = []
        self.cycles = 0
        self.skipped_cycles = 0
        self.ranges_checked = 0
        # (time, committed offsets) every 0.1 s, for tests that check when commits happened.
        self.history: list[tuple[float, dict[TP, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-monitor", daemon=True)
        # The history is sampled by its own thread: a check cycle blocked by a MongoDB outage must not
        # thin out the record of when offsets moved.
        self._history_thread = threading.Thread(target=self._sample, name="commit-history", daemon=True)
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
        self._history_thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        self._history_thread.join(30)
        self.check_once()  # one last cycle on the final state
        self._consumer.close()
        self._client.close()

    def _sample(self) -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": self.scenario.servers.bootstrap,
                "group.id": self.scenario.group,
                "enable.auto.commit": False,
            }
        )
        tps = [TopicPartition(t, p) for t, p in self.produced]
        try:
            while not self._stop.is_set():
                try:
                    parts = consumer.committed(tps, timeout=10)
                    self.history.append((time.monotonic(), {(p.topic, p.partition): p.offset for p in parts}))
                except KafkaException:
                    pass  # the broker is down (fault tests): no sample this time
                self._stop.wait(0.1)
        finally:
            consumer.close()

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

    def _refresh_produced(self) -> None:
        if self._live is None:
            return
        for tp, offsets in list(self._live.producer.report.offsets.items()):
            if tp in self.produced and len(offsets) > len(self.produced[tp]):
                self.produced[tp] = list(offsets)

    def check_once(self) -> None:
        import bisect

        tps = list(self.produced)
        parts = self._consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=10)
        self._refresh_produced()  # after reading the commits: what was committed was produced before
        db = self._client[self.scenario.database]
        for part in parts:
            tp = (part.topic, part.partition)
            committed = part.offset
            if self._live is not None:  # only as far as the deliveries reported so far
                known = self.produced[tp]
                committed = min(committed, known[-1] + 1 if known else 0)
            if committed < 0 or committed <= self.checked[tp]:
                continue
            low = self.checked[tp]
            offsets = self.produced[tp]
            in_range = offsets[bisect.bisect_left(offsets, low) : bisect.bisect_left(offsets, committed)]
            dead = {o for o in self.dead_lettered.get(tp, ()) if low <= o < committed}
            skipped = {o for o in self.filtered.get(tp, ()) if low <= o < committed}
            expected = len(in_range) - len(dead) - len(skipped & set(in_range))
            where = {
                "_id.topic": tp[0],
                "_id.partition": tp[1],
                "_id.offset": {"$gte": low, "$lt": committed},
            }
            stored = len(db[self.collections[tp[0]]].distinct("_id.offset", where))
            self.ranges_checked += 1
            if stored < expected:
                self.violations.append(
                    f"{tp[0]}[{tp[1]}]: committed {committed} but only {stored}/{expected} messages in "
                    f"[{low}, {committed}) are stored"
                )
            if dead:
                lettered = set(db[self.dead_letter_collection].distinct("_id.offset", where))
                if not dead <= lettered:
                    self.violations.append(
                        f"{tp[0]}[{tp[1]}]: committed {committed} but dead letters "
                        f"{sorted(dead - lettered)[:5]} in [{low}, {committed}) are not durable"
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


def committed_total(sc: Scenario) -> int:
    """The group's committed offsets summed over the scenario's partitions (0 where none): cheap progress
    (one request to the broker), where counting documents may mean a scan on some servers."""
    tps = list(sc.ends) or [(t, p) for t in sc.topics for p in range(sc.partitions)]
    try:
        return sum(max(0, o) for o in sc.committed(tps, timeout=5).values())
    except KafkaException:
        return -1


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
        worker.wait_started()
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
    """Start the worker, kill -9 it in the middle of its ingestion, restart it; `kills_wanted` times. Then a
    last run until everything is committed, stopped with SIGTERM.

    The kill points are chosen by progress, not by time, so they fall inside the stream whatever the
    servers' speed: kill #i comes once the group's committed offsets reach a random point of the i-th of
    `kills_wanted` equal slices of the first 70% of the data, after a further random 0-0.2 s (so it lands
    anywhere in the worker's batch/commit cycle). The margin keeps the last kill before the end even when
    the worker is far ahead of its last commit."""
    import random

    rng = random.Random(seed)
    env = env or sc.env()
    ends = {tp: end for tp, end in sc.ends.items()}
    span = 0.7 * total / kills_wanted
    targets = [int(span * (i + rng.uniform(0.1, 0.9))) for i in range(kills_wanted)]
    kills: list[int] = []
    watch = OffsetWatch(sc, list(ends))
    try:
        for target in targets:
            worker = ProcessWorker(env, log_path).start()
            try:
                watch.wait(target, timeout=120, what=f"{target} committed before kill #{len(kills) + 1}")
                time.sleep(rng.uniform(0.0, 0.2))
                worker.kill9()
                # Counted after the kill: some servers count by scanning, which takes seconds under load.
                at = stored_count(sc)
                assert at < total, (
                    f"ingestion finished before kill #{len(kills) + 1} (committed {watch.total()} of "
                    f"{total}): the test needs more data, or the worker stores without committing"
                )
                kills.append(at)
            finally:
                worker.stop()
    finally:
        watch.close()
    final = ProcessWorker(env, log_path).start()
    try:
        final.wait_started()
        wait_for(lambda: sc.committed(list(ends)) == ends, timeout=300, interval=0.5, what="all committed")
        final.terminate(signal.SIGTERM)
        code = final.wait(30)
    finally:
        final.stop()
    return KillLoopResult(kills, code, log_path.read_text(errors="replace"))


class PacedProducer:
    """Produces ticks at `rate`/s from a thread while a test injects faults: `count` of them, or with
    count=0 until `stop()` (the test stops it after its last fault, so every fault happens mid-stream,
    whatever the servers' speed). `join()` records the delivered end offsets in the scenario and returns
    the report; with `message.timeout.ms` long enough, a broker outage only delays deliveries (the
    idempotent producer retries), it does not fail them."""

    def __init__(
        self,
        sc: Scenario,
        count: int,
        rate: float,
        seed: int = 11,
        bootstrap: str | None = None,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        kafka = sc.kafka
        if bootstrap is not None:
            kafka = KafkaConfig(bootstrap_servers=bootstrap, topics=sc.topics, group_id=sc.group)
        self.sc = sc
        self.count = count
        self.rate = rate
        self.stop_event = threading.Event()
        self.producer = TickProducer(
            kafka,
            sc.topics,
            seed=seed,
            record_offsets=True,
            spread=True,
            extra_config={"message.timeout.ms": 300_000, **(extra_config or {})},
        )
        self.report: ProduceReport | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="paced-producer", daemon=True)

    def _run(self) -> None:
        try:
            self.report = self.producer.run(self.count, rate=self.rate, stop=self.stop_event)
        except BaseException as exc:
            self.error = exc

    def start(self) -> PacedProducer:
        self._thread.start()
        return self

    @property
    def sent(self) -> int:
        return self.producer.report.sent

    @property
    def delivered(self) -> int:
        return self.producer.report.delivered

    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 600) -> ProduceReport:
        self.stop_event.set()
        return self.join(timeout)

    def join(self, timeout: float = 600) -> ProduceReport:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error
        assert self.report is not None
        assert self.report.ok, f"producing failed: {self.report.first_error}"
        for tp, offsets in self.report.offsets.items():
            self.sc.ends[tp] = max(self.sc.ends.get(tp, 0), max(offsets) + 1)
        return self.report


def group_members(bootstrap: str, group: str, timeout: float = 10.0) -> list[list[TP]]:
    """The group's current members, each as the partitions assigned to it (empty list: no member)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    description = admin.describe_consumer_groups([group], request_timeout=timeout)[group].result(timeout)
    if description.state != ConsumerGroupState.STABLE:
        return []  # empty, or between generations: nobody owns anything yet
    return [[(p.topic, p.partition) for p in m.assignment.topic_partitions] for m in description.members]


def wait_members(bootstrap: str, group: str, count: int, timeout: float = 60.0) -> None:
    """Wait until the group is stable with exactly `count` members that each own at least one partition."""

    def settled() -> bool:
        try:
            members = group_members(bootstrap, group)
        except KafkaException:
            return False
        return len(members) == count and all(members)

    wait_for(settled, timeout=timeout, interval=0.2, what=f"{count} members in group {group}")


def dead_letter_count(sc: Scenario, collection: str = "dead_letters") -> int:
    with MongoClient(sc.servers.mongo_uri, serverSelectionTimeoutMS=20_000) as client:
        return int(client[sc.database][collection].count_documents({}))


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


def use_pipeline_env(monkeypatch: Any, env: dict[str, str]) -> None:
    """Exactly `env` as this process's PIPELINE_* environment (every other PIPELINE_* variable removed)."""
    for name in [n for n in os.environ if n.startswith("PIPELINE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def run_main(capsys: Any, *argv: str) -> tuple[int, str, str]:
    """`pipeline ARGV` in this process, in the current environment: (exit code, stdout, stderr)."""
    from pipeline.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_cli_in_process(
    monkeypatch: Any, capsys: Any, env: dict[str, str], *argv: str
) -> tuple[int, str, str]:
    """`pipeline ARGV` in this process with exactly `env` as its PIPELINE_* environment."""
    use_pipeline_env(monkeypatch, env)
    return run_main(capsys, *argv)
