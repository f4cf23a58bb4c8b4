"""Load on `pipeline serve`'s OHLC endpoint over 1,000,000 stored ticks: requests/s and latency percentiles.

    python -m bench.http_load                          # 1,000,000 ticks on a fresh SecantusDB, ~10 min
    python -m bench.http_load --ticks 20000 --duration 3 --concurrency 1,2   # a one-minute smoke run
    python -m bench.http_load --keep .data/http-bench  # keep (and next time reuse) the loaded server data

What it does: starts a MongoDB-compatible test server (SecantusDB, in a fresh data directory unless --keep
names one that already holds the ticks), stores `--ticks` ticks of two symbols (PETR4, VALE3; two ticks a
second each, so 1,000,000 ticks span about 69 hours) as documents of exactly the worker's shape, creates the
indexes with the worker's own code (`MongoSink.prepare`: `symbol_1_ts_1`), starts `pipeline serve` as a
separate process, and then, for each workload and each concurrency level, runs client threads with
keep-alive connections for `--duration` seconds each (after a warm-up), counting answered requests and
recording each latency. Every response must be 200 with the expected number of bars, else the run fails.

Workloads (GET /api/ohlc/PETR4): `page` is what the chart page asks (1m bars of the last 2 hours: 14,400
ticks aggregated), `recent` 1m bars of the last 30 minutes (3,600 ticks), `day` 1h bars of the last 24 hours
(172,800 ticks), `all` 1d bars of the whole history (every tick of the symbol); and `healthz` (GET /healthz,
no MongoDB), the control: what the HTTP stack itself answers on this machine. The default is
`healthz,recent,page`: on the SecantusDB test server, which aggregates a few thousand documents a second,
`day` takes ~30 s a request and `all` minutes. A run lasts `--duration` seconds and at least
`--min-requests` answered requests (at most ten times the duration).

The client runs on the same machine as the server and MongoDB: on 2 cores they compete, so the figures are
the whole machine's, and the load average at the start and the end is printed with them.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pymongo import MongoClient

from pipeline.clients.sink import MongoSink
from pipeline.core.codec import make_document
from pipeline.core.storage import CollectionPlan
from pipeline.dev.process import free_port
from pipeline.dev.servers import EmbeddedMongo
from pipeline.ops.config import MongoConfig

SYMBOLS = ("PETR4", "VALE3")
START = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
STEP = timedelta(milliseconds=500)  # per symbol: 2 ticks a second
BATCH = 10_000


@dataclass(frozen=True)
class Workload:
    name: str
    interval: str | None  # None: not an OHLC request (the control)
    span: timedelta | None  # the last `span` of the history; None: everything


WORKLOADS = {
    "healthz": Workload("healthz", None, None),
    "recent": Workload("recent", "1m", timedelta(minutes=30)),
    "page": Workload("page", "1m", timedelta(hours=2)),
    "day": Workload("day", "1h", timedelta(hours=24)),
    "all": Workload("all", "1d", None),
}


@dataclass
class Result:
    workload: str
    concurrency: int
    requests: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    bars: int
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        data = sorted(self.latencies_ms)
        if not data:
            return math.nan
        index = min(len(data) - 1, max(0, math.ceil(q / 100 * len(data)) - 1))
        return data[index]

    def row(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "concurrency": self.concurrency,
            "requests": self.requests,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(self.rps, 1),
            "p50_ms": round(self.percentile(50), 1),
            "p90_ms": round(self.percentile(90), 1),
            "p99_ms": round(self.percentile(99), 1),
            "max_ms": round(max(self.latencies_ms, default=math.nan), 1),
            "mean_ms": round(statistics.fmean(self.latencies_ms), 1) if self.latencies_ms else math.nan,
            "bars_per_response": self.bars,
            "errors": self.errors,
        }


def per_symbol(ticks: int) -> dict[str, int]:
    counts = {s: ticks // len(SYMBOLS) for s in SYMBOLS}
    counts[SYMBOLS[0]] += ticks - sum(counts.values())
    return counts


def tick_documents(symbol: str, topic: str, first: int, count: int) -> list[dict[str, Any]]:
    """Ticks `first`..`first + count` of a symbol, as the worker stores them (3 partitions, round robin)."""
    docs = []
    now = datetime.now(UTC)
    for i in range(first, first + count):
        ts = START + i * STEP
        price = round(40 + 3 * math.sin(i / 700) + 0.5 * math.sin(i / 37), 2)
        fields = {"symbol": symbol, "price": price, "volume": 100 * (1 + (i * 7) % 9), "ts": ts}
        millis = int(ts.timestamp() * 1000)
        docs.append(make_document(fields, topic, i % 3, i // 3, millis, symbol.encode(), now))
    return docs


def load(uri: str, database: str, ticks: int, log: Any) -> None:
    """Store the ticks (skipped when the database already holds exactly them) and the worker's indexes."""
    config = MongoConfig(uri=uri, database=database)
    sink = MongoSink(config)
    counts = per_symbol(ticks)
    topics = {s: s.lower() for s in SYMBOLS}
    sink.prepare([CollectionPlan(topic) for topic in topics.values()])
    db = sink.client[database]
    for symbol, count in counts.items():
        coll = db.get_collection(topics[symbol])
        have = coll.estimated_document_count()
        if have == count:
            log(f"{symbol}: {have:,} ticks already stored")
            continue
        if have:
            coll.delete_many({})
        started = time.monotonic()
        for first in range(0, count, BATCH):
            coll.insert_many(
                tick_documents(symbol, topics[symbol], first, min(BATCH, count - first)), ordered=False
            )
            if first and first % 100_000 == 0:
                rate = first / (time.monotonic() - started)
                log(f"{symbol}: {first:,} / {count:,} ticks stored ({rate:,.0f}/s)")
        log(f"{symbol}: {count:,} ticks stored in {time.monotonic() - started:.0f} s")
    sink.client.close()


def path_for(workload: Workload, ticks: int) -> str:
    if workload.interval is None:
        return "/healthz"
    return "/api/ohlc/PETR4?" + urlencode(query_for(workload, ticks))


def query_for(workload: Workload, ticks: int) -> dict[str, str]:
    last = START + (per_symbol(ticks)[SYMBOLS[0]] - 1) * STEP
    params = {"interval": str(workload.interval)}
    if workload.span is not None:
        params["from"] = (last - workload.span).isoformat().replace("+00:00", "Z")
    return params


def run_load(
    port: int, path: str, concurrency: int, duration: float, warmup: float, min_requests: int
) -> tuple[int, list[float], float, int, set[int]]:
    """`concurrency` threads, each with its own keep-alive connection: a warm-up, then requests until both
    `duration` seconds and `min_requests` measured requests have passed (at most 10 x duration). Returns the
    measured count, their latencies, the measured seconds, the errors and the bar counts seen."""
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors = [0] * concurrency
    bar_counts: set[int] = set()
    begin = time.perf_counter()
    measure_from = begin + warmup
    stop_at = measure_from + duration
    hard_stop = measure_from + 10 * duration
    finished: list[float] = []
    interrupted = threading.Event()

    def done(now: float) -> bool:
        measured = sum(len(part) for part in latencies)
        return interrupted.is_set() or now >= hard_stop or (now >= stop_at and measured >= min_requests)

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = latencies[index]
        while True:
            started = time.perf_counter()
            if done(started):
                break
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                errors[index] += 1
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                continue
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != 200:
                errors[index] += 1
                continue
            if started >= measure_from:
                mine.append(elapsed)
                if len(mine) % 50 == 1:
                    bar_counts.add(len(json.loads(body).get("bars", [])))
        conn.close()
        finished.append(time.perf_counter())

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.2)
    except KeyboardInterrupt:
        interrupted.set()  # each client stops after its request in flight; the servers are stopped after
        raise
    flat = [v for part in latencies for v in part]
    # Measured time: from the end of the warm-up until the last client finished its last request.
    return len(flat), flat, max(finished) - measure_from, sum(errors), bar_counts


def direct_ohlc(uri: str, database: str, workload: Workload, ticks: int, calls: int) -> list[float]:
    """The same query through the query library in this process, no HTTP: what MongoDB itself costs."""
    from pipeline.read.query import CollectionResolver, ohlc, parse_time

    if workload.interval is None:
        return []
    params = query_for(workload, ticks)
    start = parse_time(params["from"]) if "from" in params else None
    latencies = []
    with MongoClient(uri) as client:
        db = client[database]
        resolver = CollectionResolver(db, topics=[s.lower() for s in SYMBOLS])
        for _ in range(calls):
            started = time.perf_counter()
            ohlc(db, "PETR4", str(workload.interval), start=start, collections=resolver)
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def loadavg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"load average: {loadavg()}"


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"pipeline serve exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/readyz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("pipeline serve did not become ready")


def markdown(results: list[Result], header: dict[str, Any]) -> str:
    lines = [
        f"{header['ticks']:,} ticks ({header['mongo']}), `pipeline serve` (one uvicorn process), client "
        f"threads on the same machine; per row at least {header['duration']:g} s and "
        f"{header['min_requests']} requests after {header['warmup']:g} s of warm-up.",
        "",
        "| workload | bars | concurrency | requests/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        row = r.row()
        lines.append(
            f"| {r.workload} | {row['bars_per_response']} | {r.concurrency} | {row['requests_per_s']:,} | "
            f"{row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} | {r.errors} |"
        )
    baseline = header.get("direct_ms") or {}
    if baseline:
        lines += [
            "",
            "The same queries through the query library in one process, no HTTP (what MongoDB costs), "
            "p50 ms: " + ", ".join(f"{name} {value}" for name, value in baseline.items()) + ".",
        ]
    lines += ["", f"Before: `{header['uptime_before']}`", f"After: `{header['uptime_after']}`"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_load", description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=1_000_000, help="ticks stored (default 1,000,000)")
    parser.add_argument(
        "--workloads",
        default="healthz,recent,page",
        help="comma-separated: healthz, recent, page, day, all (default healthz,recent,page)",
    )
    parser.add_argument("--concurrency", default="1,4", help="client threads per run (default 1,4)")
    parser.add_argument("--duration", type=float, default=30.0, help="measured seconds per run (default 30)")
    parser.add_argument(
        "--min-requests", type=int, default=50, help="measured requests per run, at least (default 50)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first (default 3)")
    parser.add_argument("--mongo", help="use this MongoDB URI instead of starting SecantusDB")
    parser.add_argument("--keep", metavar="DIR", help="SecantusDB data directory to keep and reuse")
    parser.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    args = parser.parse_args(argv)
    workloads = [WORKLOADS[name.strip()] for name in args.workloads.split(",") if name.strip()]
    levels = [int(c) for c in args.concurrency.split(",") if c.strip()]

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tickpipe-http-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    mongo: EmbeddedMongo | None = None
    serve: subprocess.Popen[bytes] | None = None
    database = "market"
    try:
        if args.mongo:
            uri, mongo_name = args.mongo, "the MongoDB server at --mongo"
        else:
            mongo = EmbeddedMongo(workdir, storage=workdir / "mongo").start()
            uri, mongo_name = mongo.uri, "SecantusDB 0.7.0b3, the test server"
        log(f"MongoDB at {uri}; storing {args.ticks:,} ticks")
        load(uri, database, args.ticks, log)
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        env.update(
            PIPELINE_MONGO__URI=uri,
            PIPELINE_MONGO__DATABASE=database,
            PIPELINE_KAFKA__TOPICS=",".join(s.lower() for s in SYMBOLS),
            PIPELINE_HTTP__PORT=str(port),
            PIPELINE_HTTP__MONGO_TIMEOUT_MS="30000",
            PIPELINE_LOG__LEVEL="WARNING",
        )
        serve = subprocess.Popen([sys.executable, "-m", "pipeline", "serve"], env=env)
        wait_ready(port, serve)
        header: dict[str, Any] = {
            "ticks": args.ticks,
            "mongo": mongo_name,
            "duration": args.duration,
            "warmup": args.warmup,
            "min_requests": args.min_requests,
            "uptime_before": uptime(),
            "cpus": os.cpu_count(),
        }
        log(f"pipeline serve on port {port}; {header['uptime_before']}")
        results: list[Result] = []
        header["direct_ms"] = {}
        for workload in workloads:
            path = path_for(workload, args.ticks)
            for level in levels:
                count, latencies, seconds, errors, bars = run_load(
                    port, path, level, args.duration, args.warmup, args.min_requests
                )
                if errors or len(bars) != 1:
                    raise SystemExit(f"{workload.name} x{level}: {errors} failed requests, bar counts {bars}")
                result = Result(workload.name, level, count, seconds, latencies, bars.pop(), errors)
                results.append(result)
                row = result.row()
                log(
                    f"{workload.name} {path} x{level}: {row['requests_per_s']} req/s, "
                    f"p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms "
                    f"({count} requests, {row['bars_per_response']} bars each)"
                )
            # After the HTTP runs (MongoDB warm): the same query without HTTP, one call at a time.
            direct = direct_ohlc(uri, database, workload, args.ticks, max(3, min(10, args.min_requests)))
            if direct:
                header["direct_ms"][workload.name] = round(statistics.median(direct), 1)
                log(f"{workload.name}: query library directly, p50 {header['direct_ms'][workload.name]} ms")
        header["uptime_after"] = uptime()
        text = markdown(results, header)
        print(text)
        if args.markdown:
            Path(args.markdown).write_text(text)
        if args.json:
            Path(args.json).write_text(
                json.dumps({**header, "results": [r.row() for r in results]}, indent=2)
            )
        return 0
    finally:
        if serve is not None and serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(20)
            except subprocess.TimeoutExpired:
                serve.kill()
        if mongo is not None:
            mongo.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
