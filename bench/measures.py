"""The in-process ceilings and the tickpipe measurements. Each one reads the same backlog (or writes the same
number of documents) into an empty database that already has the {symbol: 1, ts: 1} index, on a freshly
started MongoDB-compatible server (bench/servers.py), and returns a `Run`.

- `raw_consume`  ceiling A: confluent-kafka reading the backlog with assign(), no processing.
- `raw_insert`   ceiling B: pymongo insert_many of pre-built tickpipe documents, 1000 per call,
                 w=majority, j=true.
- `ceiling_c`    ceiling C, the simplest correct pipeline: consume(1000) → insert_many (the raw values, no
                 decoding) → synchronous commit, one thread.
- `naive`        the seed's loop: poll one message, insert_one, auto-commit (on a slice of the backlog).
- `tickpipe`     `python -m pipeline run` as one process (or several in one group: the scale-out check),
                 until every message is stored and committed.
- `latency`      produce→durable latency of `pipeline run` at a paced load.
The Quix Streams peer is in bench/peer.py, the MongoDB Kafka connector in bench/connector.py, the crash
comparison in bench/crash.py.
"""

from __future__ import annotations

import bisect
import os
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import orjson
from bson import Binary
from bson.datetime_ms import DatetimeMS
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from pymongo.errors import BulkWriteError

from bench.system import THREAD_GROUPS, CpuSample, cpu_usage, memory, meter_for, process_cpu, thread_cpu
from bench.workloads import (
    TP,
    WRITE_CONCERN,
    Backlog,
    BenchError,
    CommitWatcher,
    Progress,
    Run,
    Target,
    build_documents,
    check_stored,
    kill_process,
    percentile,
    prepare_database,
    stop_process,
    stored_count,
    timed_run,
    uid,
    wait_until,
)
from pipeline.clients.admin import create_topics
from pipeline.clients.kafka import consumer_config
from pipeline.core.codec import TickSchema, make_document, make_tick_decoder
from pipeline.dev.simulator import TickProducer
from pipeline.ingest.writer import CONCURRENCY_KEPT

DUPLICATE_KEY = 11000


def _no_progress(_done: int) -> None:
    return None


# ---- ceiling A: raw consume ------------------------------------------------------------------------------


def raw_consume(target: Target, backlog: Backlog, progress: Progress = _no_progress) -> Run:
    """Read the whole backlog with assign() (no group join) and tickpipe's consumer settings; count only."""
    kafka = target.kafka(backlog.topics, group=f"bench-raw-{uid()}")
    consumer = Consumer(consumer_config(kafka))
    meter = meter_for(target.server_pids(), bench_is_client=True)
    try:
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in backlog.partitions])
        ends = backlog.ends
        seen: dict[TP, int] = dict.fromkeys(ends, 0)
        n = 0
        before = meter.sample()
        deadline = time.monotonic() + 600
        while n < backlog.count:
            for message in consumer.consume(1000, 1.0):
                if message.error() is None:
                    tp = cast(TP, (message.topic(), message.partition()))
                    if cast(int, message.offset()) < ends[tp]:
                        seen[tp] += 1
                        n += 1
            progress(n)
            if time.monotonic() > deadline:
                raise BenchError(f"raw consume: only {n}/{backlog.count} messages in 600s")
        after = meter.sample()
    finally:
        consumer.close()
    if seen != ends:
        raise BenchError(f"raw consume read {seen}, expected {ends}")
    return timed_run("raw_consume", n, before.at, after.at, cpu_usage(before, after))


# ---- ceiling B: raw insert -------------------------------------------------------------------------------


def raw_insert(
    target: Target, topics: list[str], count: int, batch_size: int = 1000, progress: Progress = _no_progress
) -> Run:
    """insert_many(ordered=False) of `count` pre-built documents (tickpipe's shape), `batch_size` per call,
    at w=majority, j=true, batches alternating between the per-topic collections."""
    documents = build_documents(topics, count, batch_size)  # before timing
    database = f"bench_insert_{uid()}"
    prepare_database(target, database, documents.collections)
    with target.mongo() as client:
        db = client.get_database(database, write_concern=WRITE_CONCERN)
        collections = {name: db[name] for name in documents.collections}
        meter = meter_for(target.server_pids(), bench_is_client=True)
        n = 0
        before = meter.sample()
        for name, docs in documents.batches:
            result = collections[name].insert_many(docs, ordered=False)
            n += len(result.inserted_ids)
            progress(n)
        after = meter.sample()
    stored = stored_count(target, database, documents.collections)
    if stored != count or n != count:
        raise BenchError(f"raw insert: {n} acknowledged, {stored} stored, expected {count}")
    details = {"batch_size": batch_size, "calls": len(documents.batches), "verified_stored": stored}
    return timed_run("raw_insert", n, before.at, after.at, cpu_usage(before, after), details=details)


# ---- ceiling C: the simplest correct pipeline --------------------------------------------------------------


def raw_document(message: Message) -> dict[str, Any]:
    """Ceiling C's document: the Kafka coordinates as `_id` (re-deliveries collide), the value as stored
    bytes (not decoded), the key and the Kafka timestamp."""
    _ts_type, ts_ms = message.timestamp()
    return {
        "_id": {"topic": message.topic(), "partition": message.partition(), "offset": message.offset()},
        "key": message.key(),
        "value": Binary(cast(bytes, message.value())),
        "kafka_ts": DatetimeMS(ts_ms),
    }


def ceiling_c(
    target: Target, backlog: Backlog, batch_size: int = 1000, progress: Progress = _no_progress
) -> Run:
    """The simplest correct pipeline, in one thread: consume(1000) → one insert_many(ordered=False) per
    collection at w=majority, j=true (a duplicate-key error is a re-delivery, anything else fails) → a
    synchronous commit of the next offsets → the next consume. No decoding, no overlap: what tickpipe's
    concurrency must beat. Partitions are assigned (no group join in the timing) and committed under a group.
    """
    name = uid()
    database, group = f"bench_ceilingc_{name}", f"bench-ceilingc-{name}"
    prepare_database(target, database, backlog.topics)
    consumer = Consumer(
        {
            "bootstrap.servers": target.bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    watcher = CommitWatcher(target.bootstrap, group, backlog.ends)
    ends = backlog.ends
    with target.mongo() as client:
        db = client.get_database(database, write_concern=WRITE_CONCERN)
        meter = meter_for(target.server_pids(), bench_is_client=True)
        try:
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in backlog.partitions])
            n = duplicates = batches = 0
            before = meter.sample()
            deadline = time.monotonic() + 600
            while n < backlog.count:
                messages = [m for m in consumer.consume(batch_size, 1.0) if m.error() is None]
                if time.monotonic() > deadline:
                    raise BenchError(f"ceiling C: only {n}/{backlog.count} messages in 600s")
                per_topic: dict[str, list[dict[str, Any]]] = {}
                nexts: dict[TP, int] = {}
                for message in messages:
                    tp = cast(TP, (message.topic(), message.partition()))
                    offset = cast(int, message.offset())
                    if offset >= ends[tp]:
                        continue
                    per_topic.setdefault(tp[0], []).append(raw_document(message))
                    nexts[tp] = offset + 1
                for topic, docs in per_topic.items():
                    try:
                        db[topic].insert_many(docs, ordered=False)
                    except BulkWriteError as exc:
                        errors = exc.details.get("writeErrors", [])
                        if not errors or any(e.get("code") != DUPLICATE_KEY for e in errors):
                            raise
                        duplicates += len(errors)
                    n += len(docs)
                if nexts:
                    consumer.commit(
                        offsets=[TopicPartition(t, p, o) for (t, p), o in nexts.items()], asynchronous=False
                    )
                    batches += 1
                progress(n)
            after = meter.sample()
        finally:
            consumer.close()
    try:
        committed_all = watcher.done(watcher.committed())
    finally:
        watcher.close()
    stored = stored_count(target, database, backlog.topics)
    if stored != backlog.count or not committed_all:
        raise BenchError(
            f"ceiling C: {stored} stored (expected {backlog.count}), all committed: {committed_all}"
        )
    details = {"batches": batches, "duplicates": duplicates, "verified_stored": stored}
    return timed_run("ceiling_c", n, before.at, after.at, cpu_usage(before, after), details=details)


# ---- naive: the seed's loop -------------------------------------------------------------------------------


def naive(target: Target, backlog: Backlog, count: int, progress: Progress = _no_progress) -> Run:
    """One message at a time: poll, decode (tickpipe's codec, same document), insert_one at w=majority
    j=true, offsets auto-committed by librdkafka every 5 s. Partitions assigned (no join in the timing)."""
    count = min(count, backlog.count)
    database = f"bench_naive_{uid()}"
    prepare_database(target, database, backlog.topics)
    consumer = Consumer(
        {
            "bootstrap.servers": target.bootstrap,
            "group.id": f"bench-naive-{uid()}",
            "enable.auto.commit": True,
            "auto.offset.reset": "earliest",
        }
    )
    decode = make_tick_decoder(TickSchema())
    with target.mongo() as client:
        db = client.get_database(database, write_concern=WRITE_CONCERN)
        meter = meter_for(target.server_pids(), bench_is_client=True)
        try:
            consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in backlog.partitions])
            n = 0
            before = meter.sample()
            deadline = time.monotonic() + 600
            while n < count:
                message = consumer.poll(1.0)
                if time.monotonic() > deadline:
                    raise BenchError(f"naive: only {n}/{count} messages in 600s")
                if message is None or message.error() is not None:
                    continue
                topic = cast(str, message.topic())
                ts_type, ts_ms = message.timestamp()
                document = make_document(
                    decode(message.value()),
                    topic,
                    cast(int, message.partition()),
                    cast(int, message.offset()),
                    ts_ms if ts_type else None,
                    message.key(),
                    datetime.now(UTC),
                )
                db[topic].insert_one(document)
                n += 1
                if n % 100 == 0:
                    progress(n)
            after = meter.sample()
        finally:
            consumer.close()
    stored = check_stored(target, database, backlog.topics, count, "naive")
    usage = cpu_usage(before, after)
    return timed_run("naive", n, before.at, after.at, usage, details={"verified_stored": stored})


# ---- tickpipe: `pipeline run` as a process -----------------------------------------------------------------


def worker_env(
    target: Target,
    topics: list[str],
    group: str,
    database: str,
    session_timeout_ms: int,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The worker's configuration: defaults (no config file: it runs in the bench's work directory) plus
    these PIPELINE_* variables, plus `extra` (e.g. PIPELINE_BATCH__MAX_MESSAGES to try a setting)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return {
        **clean,
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": target.bootstrap,
        "PIPELINE_KAFKA__TOPICS": ",".join(topics),
        "PIPELINE_KAFKA__GROUP_ID": group,
        "PIPELINE_KAFKA__SESSION_TIMEOUT_MS": str(session_timeout_ms),
        "PIPELINE_MONGO__URI": target.mongo_uri,
        "PIPELINE_MONGO__DATABASE": database,
        "PIPELINE_METRICS__ENABLED": "false",
        "PIPELINE_LOG__FORMAT": "json",
        "PIPELINE_LOG__LEVEL": "INFO",
        **(extra or {}),
    }


# Attached to the running worker once it has committed its first batch (start-up and group join excluded):
# 100 samples/s, each thread on its own, only samples of the thread holding the GIL (--gil): Python CPU time.
# (py-spy's idle detection counts pymongo's sleeping monitor threads as busy; the GIL view does not.)
PY_SPY_ARGS = ["record", "--format", "raw", "--threads", "--gil", "--rate", "100"]
PY_SPY_COMMAND = f"py-spy {' '.join(PY_SPY_ARGS)} -o FILE --pid WORKER_PID"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise BenchError("profiling needs py-spy: pip install py-spy")
    return found


class WorkerProcess:
    """`python -m pipeline run` as a process: its log, memory, CPU, and optionally a py-spy profile."""

    def __init__(self, env: dict[str, str], workdir: Path, name: str) -> None:
        self.log_path = workdir / f"{name}.log"
        self.started_wall = time.time()
        self.started = time.monotonic()
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "run"],
                env=env,
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.pid = self.proc.pid
        self.peak_rss_mb = 0.0
        self.rss_samples: list[float] = []
        self.cpu_s = 0.0
        self.profiler: subprocess.Popen[bytes] | None = None
        self._log_offset = 0
        self._assigned = False

    def attach_profiler(self, path: Path) -> None:
        """py-spy records until the worker exits, then writes `path`."""
        with (path.parent / f"{path.name}.log").open("wb") as log:
            self.profiler = subprocess.Popen(
                [py_spy(), *PY_SPY_ARGS, "-o", str(path), "--pid", str(self.pid)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def sample(self) -> None:
        mem = memory(self.pid)
        cpu = process_cpu(self.pid)
        if mem is not None and cpu is not None:
            self.rss_samples.append(mem.rss_mb)
            self.peak_rss_mb = max(self.peak_rss_mb, mem.hwm_mb)
            self.cpu_s = cpu

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM the worker (it flushes, commits, exits 0) and wait (and for the profiler to write)."""
        self.sample()
        code = stop_process(self.proc, timeout_s)
        if code is None:
            self.kill()
            raise BenchError(f"the worker did not stop within {timeout_s:g}s; see {self.log_path}")
        if self.profiler is not None:
            try:
                self.profiler.wait(60)
            except subprocess.TimeoutExpired:
                kill_process(self.profiler)
        return code

    def kill(self) -> None:
        kill_process(self.proc)
        if self.profiler is not None:
            kill_process(self.profiler)

    def log_tail(self, lines: int = 20) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def assigned(self) -> bool:
        """Whether the worker has logged an assignment of partitions yet (reads its log incrementally)."""
        if not self._assigned and self.log_path.exists():
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                chunk = log.read()
            complete = chunk.rfind(b"\n") + 1  # only whole lines; the rest is read next time
            self._log_offset += complete
            self._assigned = b'"msg":"partitions assigned","partitions":"' in chunk[:complete]
        return self._assigned

    def milestones(self) -> dict[str, Any]:
        """Seconds from process start to 'worker started' and to the first 'partitions assigned', when its
        write concurrency tuner kept a new limit (seconds, limit), and the worker's own totals from its last
        line, read from its JSON log."""
        out: dict[str, Any] = {}
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_bytes().splitlines():
            if not line.startswith(b"{"):
                continue
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            msg = entry.get("msg")
            at = _log_time(entry.get("ts", "")) - self.started_wall
            if msg == "worker started" and "started_s" not in out:
                out["started_s"] = round(at, 3)
            elif msg == "partitions assigned" and "assigned_s" not in out:
                out["assigned_s"] = round(at, 3)
            elif msg == CONCURRENCY_KEPT:  # a trial's outcome (pipeline/ingest/concurrency.py)
                out.setdefault("write_concurrency_kept", []).append([round(at, 3), entry.get("concurrency")])
            elif msg == "worker stopping":
                out["worker_totals"] = {k: entry.get(k) for k in ("consumed", "stored", "duplicates")}
        return out


def _log_time(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("nan")


def tickpipe(
    target: Target,
    backlog: Backlog,
    session_timeout_ms: int,
    progress: Progress = _no_progress,
    profile_to: Path | None = None,
    timeout_s: float = 1800,
    verify: bool = True,
    kind: str = "tickpipe",
    extra_env: dict[str, str] | None = None,
    workers: int = 1,
) -> Run:
    """`pipeline run` (`workers` processes in one group) from process start until every backlog offset is
    committed (hence durably stored).

    rate = backlog / (start → all committed). steady_rate excludes start-up and the group join: messages
    committed after the first commit was seen / time from that first commit to the last one. CPU of the
    worker processes (all threads) over both intervals. Committed offsets are polled every 0.1 s from
    Kafka (same group.id, committed()); the end is what the producer's delivery reports said, not the
    broker's high watermark.
    """
    name = uid()
    database, group = f"bench_{kind}_{name}", f"bench-{kind}-{name}"
    prepare_database(target, database, backlog.topics)
    watcher = CommitWatcher(target.bootstrap, group, backlog.ends)
    env = worker_env(target, backlog.topics, group, database, session_timeout_ms, extra_env)
    meter = meter_for(target.server_pids())
    before = meter.sample()
    started = time.monotonic()
    procs: list[WorkerProcess] = []
    first: tuple[float, int] | None = None
    first_commit: tuple[float, int] | None = None
    steady_sample: CpuSample | None = None
    threads_before: dict[str, float] = {}
    try:
        for i in range(workers):
            label = f"worker-{name}" if workers == 1 else f"worker-{name}-{i + 1}"
            worker = WorkerProcess(env, target.workdir, label)
            meter.add("client", worker.pid)
            procs.append(worker)
        next_sample = 0.0
        while True:
            committed = watcher.committed()
            now = time.monotonic()
            done = watcher.progress(committed)
            # Steady from the first commit once every worker holds partitions (with several workers the
            # first to join may start alone: the group is complete only when the last one is assigned).
            if first is None and done > 0 and all(w.assigned() for w in procs):
                first, steady_sample = (now, done), meter.sample()
                threads_before = thread_cpu(procs[0].pid)
                if profile_to is not None:
                    procs[0].attach_profiler(profile_to)
            if first_commit is None and done > 0:
                first_commit = (now, done)
            if now >= next_sample:
                for worker in procs:
                    worker.sample()
                next_sample = now + 0.5
            progress(done)
            if watcher.done(committed):
                break
            for worker in procs:
                if not worker.alive():
                    raise BenchError(f"the worker exited with {worker.proc.returncode}:\n{worker.log_tail()}")
            if now - started > timeout_s:
                raise BenchError(f"{kind}: {done}/{backlog.count} committed after {timeout_s:g}s")
            time.sleep(0.1)
        finished = time.monotonic()
        after = meter.sample()
        threads_after = thread_cpu(procs[0].pid)
        codes = [worker.stop() for worker in procs]
    except BaseException:
        for worker in procs:
            worker.kill()
        raise
    finally:
        watcher.close()
    for worker, code in zip(procs, codes, strict=True):
        if code != 0:
            raise BenchError(f"the worker exited with {code} after SIGTERM:\n{worker.log_tail()}")
    assert first_commit is not None
    details: dict[str, Any] = {
        "workers": workers,
        "first_commit_s": round(first_commit[0] - started, 3),
        "committed_at_first_commit": first_commit[1],
        "peak_rss_mb": round(max(w.peak_rss_mb for w in procs), 1),
    }
    if workers > 1:
        # None: the backlog was drained before the last worker got partitions (no steady rate with all).
        details["all_workers_assigned_s"] = round(first[0] - started, 3) if first else None
        details["committed_when_all_assigned"] = first[1] if first else None
    per_worker = [
        {**w.milestones(), "peak_rss_mb": round(w.peak_rss_mb, 1), "cpu_s": round(w.cpu_s, 3)} for w in procs
    ]
    if workers == 1:
        details.update(per_worker[0])
        del details["cpu_s"]
        # The writes in flight at the end: a fixed setting, or what the tuner kept last (it starts at 1).
        fixed = env.get("PIPELINE_BATCH__WRITE_CONCURRENCY", "auto")
        kept = details.get("write_concurrency_kept") or [[0.0, 1]]
        details["write_concurrency"] = kept[-1][1] if fixed == "auto" else f"{fixed} (fixed)"
    else:
        details["per_worker"] = per_worker
    samples = [s for w in procs for s in w.rss_samples]
    if samples:
        details["rss_mb_samples"] = {
            "count": len(samples),
            "median": round(percentile(samples, 50), 1),
            "max": round(max(samples), 1),
        }
    if workers == 1 and first is not None and threads_before and threads_after:
        # The worker's steady CPU per message by thread group (see bench.system.thread_cpu).
        steady_messages = backlog.count - first[1]
        if steady_messages > 0:
            details["steady_us_per_message_by_thread"] = {
                group: round(1e6 * (threads_after[group] - threads_before[group]) / steady_messages, 2)
                for group in THREAD_GROUPS
            }
    if verify:
        details["verified_stored"] = check_stored(target, database, backlog.topics, backlog.count, kind)
    return timed_run(
        kind,
        backlog.count,
        started,
        finished,
        cpu_usage(before, after),
        first,
        cpu_usage(steady_sample, after) if steady_sample is not None else None,
        details,
    )


# ---- produce → durable latency at a paced load ------------------------------------------------------------


class _CommitTimeline(threading.Thread):
    """Polls committed offsets every `interval_s`; records when each partition's offset was first seen."""

    def __init__(self, watcher: CommitWatcher, interval_s: float) -> None:
        super().__init__(name="commit-timeline", daemon=True)
        self.watcher = watcher
        self.interval_s = interval_s
        self.times: dict[TP, list[float]] = {tp: [] for tp in watcher.ends}
        self.offsets: dict[TP, list[int]] = {tp: [] for tp in watcher.ends}
        self.latest: dict[TP, int] = {}
        self.polls = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                committed = self.watcher.committed()
                seen = time.time()  # after the answer: an upper bound of when the commit happened
                self.polls += 1
                for tp, offset in committed.items():
                    if offset > self.latest.get(tp, -1):
                        self.latest[tp] = offset
                        self.times[tp].append(seen)
                        self.offsets[tp].append(offset)
                self._stop_event.wait(self.interval_s)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join(15)

    def committed_at(self, tp: TP, offset: int) -> float | None:
        """When offset `offset` was first seen committed (committed offset > offset)."""
        i = bisect.bisect_right(self.offsets[tp], offset)
        return self.times[tp][i] if i < len(self.times[tp]) else None


def latency(
    target: Target,
    rate: float,
    seconds: float,
    session_timeout_ms: int,
    tickers: tuple[str, ...] = ("petr4", "vale3"),
    partitions: int = 3,
    poll_interval_s: float = 0.05,
    progress: Progress = _no_progress,
    extra_env: dict[str, str] | None = None,
) -> Run:
    """Produce at `rate` ticks/s for `seconds` into fresh topics while `pipeline run` is running (already
    joined and warmed up), then compute per message:
      durable latency = when its offset was first seen committed - its Kafka CreateTime (set by the
                        producer's produce() call); an upper bound of produce -> stored (the commit follows
                        the durable write), with a resolution of `poll_interval_s` + one committed() call;
      decode latency  = its `ingested_at` (set when the worker decoded its batch) - CreateTime.
    """
    name = uid()
    topics = [f"l{name}.{ticker}" for ticker in tickers]
    database, group = f"bench_latency_{name}", f"bench-latency-{name}"
    kafka = target.kafka(topics, group)
    create_topics(kafka, topics, partitions)
    prepare_database(target, database, topics)
    env = worker_env(target, topics, group, database, session_timeout_ms, extra_env)
    meter = meter_for(target.server_pids())
    before: CpuSample | None = None
    after: CpuSample | None = None
    worker = WorkerProcess(env, target.workdir, f"worker-latency-{name}")
    try:
        # Warm-up: the worker has joined, been assigned every partition and written once.
        warm = TickProducer(kafka, topics, seed=3, record_offsets=True, spread=True)
        warm_report = warm.run(10 * partitions * len(topics))
        del warm
        warm_ends = {tp: max(offsets) + 1 for tp, offsets in warm_report.offsets.items()}
        warm_watch = CommitWatcher(target.bootstrap, group, warm_ends)
        try:
            wait_until(lambda: warm_watch.done(warm_watch.committed()), 120, "the warm-up to be committed")
        finally:
            warm_watch.close()
        count = max(1, round(rate * seconds))
        every = dict.fromkeys(((t, p) for t in topics for p in range(partitions)), 0)
        timeline = _CommitTimeline(CommitWatcher(target.bootstrap, group, every), poll_interval_s)
        timeline.start()
        meter.add("client", worker.pid)
        before = meter.sample()
        producer = TickProducer(kafka, topics, seed=5, record_offsets=True, spread=True)
        produce_started = time.monotonic()
        report = producer.run(count, rate, progress=progress)
        produce_seconds = time.monotonic() - produce_started
        del producer
        if not report.ok:
            raise BenchError(f"latency: producing failed: {report.first_error}")
        ends = {tp: max(offsets) + 1 for tp, offsets in report.offsets.items()}

        def all_committed() -> bool:
            if timeline.error is not None:
                raise BenchError(f"latency: polling committed offsets failed: {timeline.error!r}")
            return all(timeline.latest.get(tp, -1) >= end for tp, end in ends.items())

        wait_until(all_committed, 120, "the paced messages to be committed", 0.05)
        after = meter.sample()
        timeline.stop()
        timeline.watcher.close()
        worker.sample()
        code = worker.stop()
    except BaseException:
        worker.kill()
        raise
    if code != 0:
        raise BenchError(f"the worker exited with {code} after SIGTERM:\n{worker.log_tail()}")
    durable: list[float] = []
    decoded: list[float] = []
    with target.mongo(tz_aware=True) as client:
        db = client[database]
        for topic in topics:
            for doc in db[topic].find({}, {"_id": 1, "kafka.timestamp": 1, "ingested_at": 1}):
                _id = doc["_id"]
                tp = (_id["topic"], _id["partition"])
                if _id["offset"] < warm_ends.get(tp, 0):
                    continue
                produced = doc["kafka"]["timestamp"].timestamp()
                at = timeline.committed_at(tp, _id["offset"])
                if at is None:
                    raise BenchError(f"latency: no commit seen for {tp}@{_id['offset']}")
                durable.append((at - produced) * 1000)
                decoded.append((doc["ingested_at"].timestamp() - produced) * 1000)
    if len(durable) != count:
        raise BenchError(f"latency: {len(durable)} paced documents stored, expected {count}")

    def stats(values: list[float]) -> dict[str, float]:
        return {f"p{q}": round(percentile(values, q), 1) for q in (50, 90, 99)} | {
            "max": round(max(values), 1)
        }

    assert before is not None and after is not None
    usage = cpu_usage(before, after)  # produce start → all committed: the paced messages only
    return Run(
        "latency",
        count,
        produce_seconds,
        count / produce_seconds,
        cpu=usage.cores(),
        cpu_us_per_msg=usage.us_per_message("client", count),
        details={
            "target_rate": round(rate, 1),
            "durable_ms": stats(durable),
            "decode_ms": stats(decoded),
            "commit_polls": timeline.polls,
            "poll_interval_ms": poll_interval_s * 1000,
            "peak_rss_mb": round(worker.peak_rss_mb, 1),
            # When the tuner kept a new number of writes in flight ([seconds from start, limit]; none: 1).
            "write_concurrency_kept": worker.milestones().get("write_concurrency_kept", []),
        },
    )
