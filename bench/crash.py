"""The crash comparison: kill -9 of tickpipe and of the MongoDB Kafka connector mid-stream, a restart, then
every produced (topic, partition, offset) looked for among the stored documents.

Each run has its own fresh topics, database and server. A burst of 1% of the ticks comes first; once the
process has made progress on it (tickpipe: a committed offset; the connector: an acknowledged bulk write:
its JVM takes 5-40 s to start here), a producer paces the rest at `rate` ticks/s for about `seconds`; once
half of those are produced, the process gets SIGKILL and is started again at once
(same group, same configuration; the connector with the same offsets file). Once production is over and
everything produced is stored (tickpipe: committed offsets at the end offsets, which implies stored; the
connector: the stored count, polled every 2 s: it commits offsets only every 60 s), the stored `_id`s are
read back: **missing** = produced offsets with no document, **duplicates** = documents beyond one per
offset, **re-deliveries** = what the restarted process saw again (tickpipe's own `duplicates` counter; the
connector's logged E11000 write errors). A run that never gets everything stored reports what is missing
after `settle_s` instead of failing.

The two store different documents: tickpipe's `_id` is {topic, partition, offset} and `ts` a date; the
connector's `_id` is the string "topic#partition#offset" and `ts` stays a string.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from bench.acked import AckedProcess
from bench.connector import STORES, Connector, Jars
from bench.measures import WorkerProcess, worker_env
from bench.workloads import (
    TP,
    BenchError,
    CommitWatcher,
    Progress,
    Run,
    Target,
    prepare_database,
    uid,
    wait_until,
)
from pipeline.clients.admin import create_topics
from pipeline.dev.simulator import ProduceReport, TickProducer

Coordinate = tuple[str, int, int]  # topic, partition, offset


@dataclass(frozen=True)
class CrashOptions:
    seconds: float = 20.0
    rate: float = 2000.0
    kill_at: float = 0.5  # fraction of the production after which the process is killed
    settle_s: float = 180.0  # after production: how long to wait for everything to be stored
    tickers: tuple[str, ...] = ("petr4", "vale3")
    partitions: int = 3

    @property
    def count(self) -> int:
        return max(2, round(self.rate * self.seconds))


def tickpipe_coordinate(_id: Any) -> Coordinate:
    """tickpipe's `_id`: {"topic": ..., "partition": ..., "offset": ...}."""
    return str(_id["topic"]), int(_id["partition"]), int(_id["offset"])


def connector_coordinate(_id: Any) -> Coordinate:
    """The connector's `_id` (KafkaMetaDataStrategy): the string "topic#partition#offset"."""
    topic, partition, offset = str(_id).rsplit("#", 2)
    return topic, int(partition), int(offset)


def tally(produced: dict[TP, list[int]], stored: Iterable[Coordinate]) -> dict[str, Any]:
    """Compare the produced offsets with the coordinates of the stored documents."""
    expected = {(t, p, o) for (t, p), offsets in produced.items() for o in offsets}
    counts = Counter(stored)
    missing = sorted(expected - counts.keys())
    unexpected = sorted(counts.keys() - expected)
    return {
        "produced": len(expected),
        "stored_documents": sum(counts.values()),
        "distinct_offsets_stored": len(counts.keys() & expected),
        "missing": len(missing),
        "duplicates": sum(n - 1 for n in counts.values() if n > 1),
        "unexpected": len(unexpected),
        "missing_examples": [list(c) for c in missing[:5]],
    }


class _Producer(threading.Thread):
    def __init__(self, target: Target, topics: list[str], count: int, rate: float, seed: int = 13) -> None:
        super().__init__(name="crash-producer", daemon=True)
        self.producer = TickProducer(
            target.kafka(topics), topics, seed=seed, record_offsets=True, spread=True
        )
        self.count, self.rate = count, rate
        self.report: ProduceReport | None = None
        self.error: BaseException | None = None
        self.stop_event = threading.Event()

    @property
    def sent(self) -> int:
        return self.producer.report.sent

    def run(self) -> None:
        try:
            self.report = self.producer.run(self.count, self.rate or None, self.stop_event)
        except BaseException as exc:
            self.error = exc


class _Subject(Protocol):
    """What the comparison does to one process kind: start, progress, kill, done, what it saw again."""

    name: str

    def coordinate(self, _id: Any) -> Coordinate: ...
    def start(self) -> None: ...
    def progress(self) -> int: ...
    def alive(self) -> bool: ...
    def kill(self) -> None: ...
    def done(self, ends: dict[TP, int]) -> bool: ...
    def stop(self) -> None: ...
    def close(self) -> None: ...
    def redeliveries(self) -> int | None: ...
    def log(self) -> str: ...


class _Tickpipe:
    name = "tickpipe"

    def coordinate(self, _id: Any) -> Coordinate:
        return tickpipe_coordinate(_id)

    def __init__(self, target: Target, topics: list[str], database: str, session_timeout_ms: int) -> None:
        self.target = target
        self.group = f"bench-crash-{uid()}"
        self.env = worker_env(target, topics, self.group, database, session_timeout_ms)
        self.workers: list[WorkerProcess] = []
        self.partitions = [(t, p) for t in topics for p in range(_partitions(target, t))]
        # Its `ends` are only the partitions to ask about; done() compares with what was produced.
        self.watcher = CommitWatcher(target.bootstrap, self.group, dict.fromkeys(self.partitions, 0))

    def start(self) -> None:
        self.workers.append(
            WorkerProcess(self.env, self.target.workdir, f"{self.group}-{len(self.workers) + 1}")
        )

    def progress(self) -> int:
        """Messages committed so far (the topics are fresh: offsets start at 0)."""
        return sum(max(0, offset) for offset in self.watcher.committed().values())

    def alive(self) -> bool:
        return self.workers[-1].alive()

    def kill(self) -> None:
        self.workers[-1].kill()

    def done(self, ends: dict[TP, int]) -> bool:
        """Every produced offset committed (hence stored: the worker commits after the durable write)."""
        committed = self.watcher.committed()
        return all(committed.get(tp, -1) >= end for tp, end in ends.items())

    def close(self) -> None:
        self.watcher.close()

    def stop(self) -> None:
        code = self.workers[-1].stop()
        if code != 0:
            raise BenchError(f"the restarted worker exited with {code}:\n{self.workers[-1].log_tail()}")

    def redeliveries(self) -> int | None:
        totals = self.workers[-1].milestones().get("worker_totals") or {}
        value = totals.get("duplicates")
        return int(value) if value is not None else None

    def log(self) -> str:
        return str(self.workers[-1].log_path)


class _Connector:
    name = "connector"

    def coordinate(self, _id: Any) -> Coordinate:
        return connector_coordinate(_id)

    def __init__(
        self, target: Target, jars: Jars, topics: list[str], database: str, session_timeout_ms: int
    ) -> None:
        self.spec = Connector(target, jars, topics, database, session_timeout_ms)
        self.target, self.topics, self.database = target, topics, database
        self.processes: list[AckedProcess] = []
        self._next_count = 0.0
        self._stored = 0

    def start(self) -> None:
        self.processes.append(self.spec.start())

    def progress(self) -> int:
        return self.processes[-1].acks.acknowledged

    def alive(self) -> bool:
        return self.processes[-1].alive()

    def kill(self) -> None:
        self.processes[-1].kill()

    def done(self, ends: dict[TP, int]) -> bool:
        produced = sum(ends.values())
        if time.monotonic() >= self._next_count:  # a count is a scan: every 2 s, never while timing
            self._next_count = time.monotonic() + 2.0
            with self.target.mongo() as client:
                db = client[self.database]
                self._stored = sum(db[t].estimated_document_count() for t in self.topics)
        return self._stored >= produced

    def stop(self) -> None:
        self.processes[-1].stop()

    def close(self) -> None:
        return None

    def redeliveries(self) -> int | None:
        return self.processes[-1].acks.counts["failed_records"]

    def log(self) -> str:
        return str(self.processes[-1].acks.log_path)


def _merge(*producers: _Producer) -> dict[TP, list[int]]:
    """The delivered offsets of every producer, per partition."""
    produced: dict[TP, list[int]] = {}
    for producer in producers:
        assert producer.report is not None
        for tp, offsets in producer.report.offsets.items():
            produced.setdefault(tp, []).extend(offsets)
    return produced


def _partitions(target: Target, topic: str) -> int:
    from confluent_kafka.admin import AdminClient

    meta = AdminClient({"bootstrap.servers": target.bootstrap}).list_topics(topic, timeout=10)
    return len(meta.topics[topic].partitions)


def crash(
    kind: str,
    target: Target,
    options: CrashOptions,
    session_timeout_ms: int,
    jars: Jars | None = None,
    progress: Progress = lambda _n: None,
) -> Run:
    """One crash run of `kind` (tickpipe | connector) on `target`'s fresh server; see the module doc."""
    name = uid()
    topics = [f"c{name}.{ticker}" for ticker in options.tickers]
    database = f"bench_crash_{kind}_{name}"
    create_topics(target.kafka(topics), topics, options.partitions)
    prepare_database(target, database, topics)
    subject: _Subject
    if kind == "tickpipe":
        subject = _Tickpipe(target, topics, database, session_timeout_ms)
    elif kind == "connector":
        if jars is None:
            raise BenchError("the connector's crash run needs its jars")
        subject = _Connector(target, jars, topics, database, session_timeout_ms)
    else:
        raise BenchError(f"unknown crash subject {kind!r}")
    count = options.count
    # A burst first, so that the kill can wait for the process to be up and writing (a JVM start takes
    # 5-40 s here) and still fall in the middle of the paced production that follows.
    warm = _Producer(target, topics, max(10, count // 100), 0.0)
    warm.run()
    if warm.error is not None or warm.report is None or not warm.report.ok:
        raise BenchError(f"crash run: producing failed: {warm.error or warm.report}")
    producer = _Producer(target, topics, count - warm.count, options.rate, seed=14)
    started = time.monotonic()
    subject.start()
    killed_at = restarted_at = 0.0
    try:

        def writing() -> bool:
            if not subject.alive():
                raise BenchError(f"crash run: {subject.name} exited before the kill; see {subject.log()}")
            return subject.progress() > 0

        wait_until(writing, options.settle_s, f"{subject.name} to make progress")
        producer.start()

        def half_produced() -> bool:
            progress(warm.count + producer.sent)
            return producer.sent >= options.kill_at * producer.count or not producer.is_alive()

        wait_until(half_produced, options.seconds * 3 + 60, "half of the paced production")
        at_kill = {"produced": warm.count + producer.sent, "progress": subject.progress()}
        subject.kill()
        killed_at = time.monotonic()
        subject.start()
        restarted_at = time.monotonic()
        producer.join(options.seconds * 3 + 60)
        if producer.error is not None or producer.report is None or not producer.report.ok:
            why = producer.error or (producer.report.first_error if producer.report else "did not finish")
            raise BenchError(f"crash run: producing failed: {why}")
        produced_at = time.monotonic()
        produced = _merge(warm, producer)
        ends = {tp: max(offsets) + 1 for tp, offsets in produced.items()}
        settled = True
        try:
            wait_until(lambda: subject.done(ends), options.settle_s, "everything to be stored", 0.2)
        except BenchError:
            settled = False
        finished = time.monotonic()
        progress(count)
        subject.stop()
    except BaseException:
        producer.stop_event.set()
        subject.kill()
        if producer.is_alive():
            producer.join(30)
        raise
    finally:
        subject.close()
    with target.mongo() as client:
        db = client[database]
        stored = [subject.coordinate(doc["_id"]) for t in topics for doc in db[t].find({}, {"_id": 1})]
    result = tally(produced, stored)
    details: dict[str, Any] = {
        **result,
        "killed_after_s": round(killed_at - started, 3),
        "produced_at_kill": at_kill["produced"],
        "progress_at_kill": at_kill["progress"],
        "progress_means": "committed offsets" if kind == "tickpipe" else "acknowledged inserts",
        "restart_to_all_stored_s": round(finished - restarted_at, 3) if settled else None,
        "production_end_to_all_stored_s": round(finished - produced_at, 3) if settled else None,
        "settled": settled,
        "redeliveries_seen": subject.redeliveries(),
        "redeliveries_means": "worker's duplicates counter"
        if kind == "tickpipe"
        else "records logged as failed writes (E11000)",
        "rate": options.rate,
        "seconds": options.seconds,
        "log": subject.log(),
    }
    if kind == "connector":
        details["stores"] = STORES
    seconds = finished - started
    return Run(f"crash_{kind}", count, seconds, count / seconds, details=details)
