"""The servers under test, the backlog of ticks every measurement reads, and small shared helpers."""

from __future__ import annotations

import math
import random
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from pymongo import MongoClient, WriteConcern
from pymongo.database import Database
from pymongo.uri_parser import parse_uri

from bench.system import CpuUsage
from pipeline.clients.admin import create_topics
from pipeline.core.codec import TICK_INDEX, TICK_INDEX_NAME, TickSchema, make_document, make_tick_decoder
from pipeline.core.errors import PipelineError
from pipeline.core.timefmt import iso_utc
from pipeline.dev.simulator import RandomWalk, TickProducer, encode_tick, symbol_for_topic
from pipeline.ops.config import KafkaConfig

TP = tuple[str, int]
Progress = Callable[[int], None]  # messages done so far
Say = Callable[[str], None]  # one line for the operator
WRITE_CONCERN = WriteConcern(w="majority", j=True)


class BenchError(PipelineError):
    """A measurement could not be made (a server or a measured process failed, a timeout)."""


class BenchUnavailable(BenchError):
    """What the chosen options need cannot run here (a server, Java, Maven): one line each, exit 2."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.lines = [f"error: {problem}" for problem in problems]


def uid() -> str:
    return uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class Target:
    """The Kafka broker and the MongoDB-compatible server of one measurement (pids known when the bench
    started them). The broker serves the whole run; `on()` gives the target on a freshly started server."""

    bootstrap: str
    mongo_uri: str
    workdir: Path
    kafka_pid: int | None = None
    mongo_pid: int | None = None
    broker: str = "external"  # apache | tansu | external (a broker the caller started)
    mongo_kind: str = ""  # secantus | ferretdb ("" before a server is chosen)

    def on(self, server: Any) -> Target:
        """This broker with `server` (a bench.servers.FreshMongo) as the MongoDB-compatible server."""
        return replace(self, mongo_uri=server.uri, mongo_pid=server.pid, mongo_kind=server.kind)

    @property
    def mongo_address(self) -> tuple[str, int]:
        host, port = parse_uri(self.mongo_uri)["nodelist"][0]
        return str(host), int(port)

    def server_pids(self) -> dict[str, int]:
        pids = {"mongo_server": self.mongo_pid, "kafka_server": self.kafka_pid}
        return {name: pid for name, pid in pids.items() if pid is not None}

    def mongo(self, **options: Any) -> MongoClient[dict[str, Any]]:
        if not self.mongo_uri:
            raise BenchError("no MongoDB-compatible server chosen for this measurement")
        return MongoClient(self.mongo_uri, serverSelectionTimeoutMS=20_000, **options)

    def kafka(self, topics: list[str], group: str = "bench") -> KafkaConfig:
        return KafkaConfig(bootstrap_servers=self.bootstrap, topics=topics, group_id=group)


@dataclass
class Run:
    """One measurement. `rate` = messages / seconds over the timed interval (see each measurement);
    `steady_rate` leaves out start-up (process start, group join) where a measurement has one.

    `cpu`: average cores used during the timed interval by role (bench.system: client, mongo_server,
    kafka_server, bench, other, total). `cpu_us_per_msg`: CPU-microseconds of the client process(es), all
    threads, per message over the whole interval (start-up included); `steady_cpu_us_per_msg` the same
    over the steady interval only.
    """

    kind: str
    messages: int
    seconds: float
    rate: float
    steady_rate: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    server: str | None = None  # the MongoDB-compatible server (secantus | ferretdb); None: Kafka only
    round: int | None = None
    cpu_us_per_msg: float | None = None
    steady_cpu_us_per_msg: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def timed_run(
    kind: str,
    messages: int,
    started: float,
    finished: float,
    whole: CpuUsage,
    steady_from: tuple[float, int] | None = None,
    steady_cpu: CpuUsage | None = None,
    details: dict[str, Any] | None = None,
) -> Run:
    """A Run from its interval: `steady_from` = (time, messages done) when the steady interval began."""
    seconds = finished - started
    steady_rate = steady_us = None
    if steady_from is not None and finished > steady_from[0] and messages > steady_from[1]:
        steady_rate = (messages - steady_from[1]) / (finished - steady_from[0])
        if steady_cpu is not None:
            steady_us = steady_cpu.us_per_message("client", messages - steady_from[1])
    return Run(
        kind,
        messages,
        seconds,
        messages / seconds,
        steady_rate,
        whole.cores(),
        dict(details or {}),
        cpu_us_per_msg=whole.us_per_message("client", messages),
        steady_cpu_us_per_msg=steady_us,
    )


@dataclass
class Backlog:
    """Ticks already in Kafka: `ends` are the end offsets (next offset) from the delivery reports."""

    topics: list[str]
    ends: dict[TP, int]
    count: int
    produce_seconds: float

    @property
    def partitions(self) -> list[TP]:
        return sorted(self.ends)


def preload(
    target: Target,
    count: int,
    tickers: tuple[str, ...] = ("petr4", "vale3"),
    partitions: int = 3,
    progress: Callable[[int], None] | None = None,
    seed: int = 7,
) -> Backlog:
    """Create fresh topics (`b<id>.petr4`, ...) and produce `count` ticks spread over all partitions."""
    prefix = f"b{uid()}"
    topics = [f"{prefix}.{ticker}" for ticker in tickers]
    kafka = target.kafka(topics)
    create_topics(kafka, topics, partitions)
    producer = TickProducer(kafka, topics, seed=seed, record_offsets=True, spread=True)
    report = producer.run(count, progress=progress)
    if not report.ok:
        raise BenchError(f"preloading the backlog failed: {report.first_error}")
    ends = {tp: max(offsets) + 1 for tp, offsets in report.offsets.items()}
    if sum(len(offsets) for offsets in report.offsets.values()) != count:
        raise BenchError("the delivery reports do not account for every produced tick")
    return Backlog(topics, ends, count, report.seconds)


def prepare_database(target: Target, database: str, collections: list[str]) -> None:
    """The same starting point for every measurement: an empty database with the {symbol, ts} index."""
    with target.mongo() as client:
        db = client[database]
        for name in collections:
            if db[name].estimated_document_count():
                raise BenchError(f"{database}.{name} is not empty")
            db[name].create_index(TICK_INDEX, name=TICK_INDEX_NAME)  # as the worker does


def check_stored(target: Target, database: str, collections: list[str], expected: int, what: str) -> int:
    """The stored count after a measurement, which must be exactly what it was given (else BenchError)."""
    stored = stored_count(target, database, collections)
    if stored != expected:
        raise BenchError(f"{what}: {stored} documents stored, expected {expected}")
    return stored


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    """SIGTERM, then SIGKILL after timeout_s: its exit code, or None if it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        kill_process(proc)
        return None


def kill_process(proc: subprocess.Popen[bytes]) -> None:
    """kill -9 (if it still runs) and reap it."""
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


def stored_count(target: Target, database: str, collections: list[str]) -> int:
    """Documents stored. A scan on both test servers (SecantusDB ~0.5 s, FerretDB ~2 s per 50,000
    documents, even for estimated_document_count): after a measurement, never while timing one."""
    with target.mongo() as client:
        db: Database[dict[str, Any]] = client[database]
        return sum(db[name].estimated_document_count() for name in collections)


class CommitWatcher:
    """Reads a consumer group's committed offsets (from Kafka, not MongoDB: cheap for the servers)."""

    def __init__(self, bootstrap: str, group: str, ends: dict[TP, int]) -> None:
        self.ends = ends
        self._parts = [TopicPartition(t, p) for t, p in sorted(ends)]
        self._consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )

    def committed(self) -> dict[TP, int]:
        parts = self._consumer.committed(self._parts, timeout=10)
        return {(p.topic, p.partition): p.offset for p in parts}

    def progress(self, committed: dict[TP, int]) -> int:
        """How many of the backlog's messages are committed (offsets start at 0 on fresh topics)."""
        return sum(min(max(committed.get(tp, 0), 0), end) for tp, end in self.ends.items())

    def done(self, committed: dict[TP, int]) -> bool:
        return all(committed.get(tp, -1) >= end for tp, end in self.ends.items())

    def close(self) -> None:
        self._consumer.close()


@dataclass
class DocumentSet:
    """Documents shaped exactly like tickpipe's, grouped in insert batches (built before any timing)."""

    batches: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(docs) for _, docs in self.batches)

    @property
    def collections(self) -> list[str]:
        return sorted({name for name, _ in self.batches})


def build_documents(topics: list[str], count: int, batch_size: int, partitions: int = 3) -> DocumentSet:
    """`count` ticks over `topics` (round-robin over partitions, like the backlog), decoded and turned into
    documents by tickpipe's own codec. Batches alternate between the collections (one per topic)."""
    rng = random.Random(11)
    decode = make_tick_decoder(TickSchema())
    per_topic: dict[str, list[dict[str, Any]]] = {topic: [] for topic in topics}
    walks = {topic: RandomWalk(symbol_for_topic(topic), rng) for topic in topics}
    next_offset: dict[TP, int] = {}
    ingested_at = datetime.now(UTC)
    for i in range(count):
        topic = topics[i % len(topics)]
        partition = (i // len(topics)) % partitions
        offset = next_offset.get((topic, partition), 0)
        next_offset[(topic, partition)] = offset + 1
        walk = walks[topic]
        price, volume = walk.next()
        now = datetime.now(UTC)
        value = encode_tick(walk.symbol, price, volume, iso_utc(now))
        fields = decode(value)
        document = make_document(
            fields, topic, partition, offset, int(now.timestamp() * 1000), walk.symbol.encode(), ingested_at
        )
        per_topic[topic].append(document)
    chunks = {
        topic: [docs[i : i + batch_size] for i in range(0, len(docs), batch_size)]
        for topic, docs in per_topic.items()
    }
    out = DocumentSet()
    for round_ in range(max((len(c) for c in chunks.values()), default=0)):
        for topic in topics:
            if round_ < len(chunks[topic]):
                out.batches.append((topic, chunks[topic][round_]))
    return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    n = len(ordered)
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
