"""The benchmark harness (`pipeline bench`, package bench/) keeps working.

Every measurement runs in miniature on the session's broker, each on a MongoDB-compatible server the bench
starts for it (a new process on an empty data directory: SecantusDB and, where it is built, FerretDB), and
the results must be sane and internally consistent: counts match what was produced, rates are positive,
percentiles are ordered, every measurement had its own server, the crash comparison finds every produced
offset stored once by tickpipe. No performance thresholds here: numbers belong in docs/benchmarks.md, not in
assertions.

The MongoDB Kafka connector runs where Java 17+ is present (and Maven, until its jar is cached); the Quix
Streams peer runs in its own virtualenv (.venv-peer, created by `pipeline bench` or ./scripts/test from PyPI)
and is tested on its own when that virtualenv exists. Each skips saying why.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.connector import missing as connector_missing
from bench.peer import peer, peer_ready
from bench.profiling import render, summarise
from bench.runner import REPO, BenchOptions, run_bench
from bench.servers import fresh_mongo
from bench.workloads import Target, preload
from tests.conftest import selection
from tests.harness import Servers

COUNT = 2000
ON_EACH_SERVER = ["raw_insert", "ceiling_c", "naive", "connector", "tickpipe", "scale_out"]
# The JVM start (5-40 s here) and the two-worker group join dominate the test's time: on the first server.
FIRST_SERVER_ONLY = ("connector", "scale_out")


def _servers() -> tuple[str, ...]:
    kinds = tuple(k for k in selection().mongo_kinds if k in ("secantus", "ferretdb"))
    return kinds or ("secantus",)


@pytest.mark.servers
def test_bench_runs_every_measurement_and_reports_consistent_numbers(
    servers: Servers, tmp_path: Path
) -> None:
    with_connector = connector_missing() is None  # else test_bench_connector_can_run skips, saying why
    mongo = _servers()
    options = BenchOptions(
        count=COUNT,
        repeat=1,
        naive_count=200,
        latency_seconds=2.0,
        rss_backlog=1000,
        peer=False,
        crash_seconds=3.0,
        crash_rate=500.0,
        after_rounds_on_every_server=False,
        first_server_only=FIRST_SERVER_ONLY,
        connector=with_connector,
        session_timeout_ms=3000,
        mongo=mongo,
        # Batches of 100 make the worker commit 2,000 ticks in 20+ steps: with the default 1,000 a fast
        # server had them all committed before the bench's first look (every 0.1 s), leaving no steady
        # interval to measure (CI, 2026-12-01: FerretDB, 2,000 in 0.97 s, steady_rate None).
        worker_env={"PIPELINE_BATCH__MAX_MESSAGES": "100"},
    )
    target = Target(servers.bootstrap, "", tmp_path)
    results = run_bench(options, target=target)

    kinds = [(run.kind, run.server) for run in results.runs]
    expected = [("raw_consume", None)]
    each = [k for k in ON_EACH_SERVER if with_connector or k != "connector"]
    expected += [(k, s) for s in mongo for k in each if s == mongo[0] or k not in FIRST_SERVER_ONLY]
    expected += [("latency", mongo[0])]
    expected += [("crash_tickpipe", mongo[0])] + ([("crash_connector", mongo[0])] if with_connector else [])
    expected += [("rss_backlog", mongo[0])]
    assert sorted(kinds, key=str) == sorted(expected, key=str), kinds

    # Every measurement on a MongoDB-compatible server had a new server process on a new data directory.
    on_server = [run for run in results.runs if run.server is not None]
    pids = [run.details["mongo_server"]["pid"] for run in on_server]
    dirs = [run.details["mongo_server"]["fresh_data_directory"] for run in on_server]
    assert len(set(pids)) == len(pids) and len(set(dirs)) == len(dirs)
    assert not any(Path(d).exists() for d in dirs)  # deleted afterwards

    for run in results.runs:
        assert run.messages > 0 and run.seconds > 0 and run.rate > 0, run
        assert abs(run.rate - run.messages / run.seconds) < 1e-6 * run.rate, run
        if run.kind.startswith("crash_"):
            continue
        assert run.cpu["total"] >= 0 and "other" in run.cpu and "client" in run.cpu, run
        # None only where the interval held too little CPU to measure (bench.system.MIN_CPU_S).
        assert run.cpu_us_per_msg is None or run.cpu_us_per_msg > 0, run
        assert run.steady_cpu_us_per_msg is None or run.steady_cpu_us_per_msg > 0, run
        if run.kind in ("tickpipe", "scale_out", "connector"):  # a process: its start-up alone is measurable
            assert run.cpu_us_per_msg is not None, run
        if run.server is not None:
            assert "mongo_server" in run.cpu, run  # the bench started it: its pid is known
    assert results.backlog["messages"] == COUNT
    assert sum(results.backlog["end_offsets"].values()) == COUNT
    assert len(results.backlog["end_offsets"]) == 6  # 2 topics x 3 partitions, all used (spread)

    (raw_consume,) = results.of("raw_consume")
    assert raw_consume.messages == COUNT
    for server in mongo:
        (raw_insert,) = results.of("raw_insert", server)
        assert raw_insert.messages == raw_insert.details["verified_stored"] == COUNT
        assert raw_insert.details["calls"] == 2  # 1000 per insert_many, one per collection
        (ceiling_c,) = results.of("ceiling_c", server)
        assert ceiling_c.messages == ceiling_c.details["verified_stored"] == COUNT
        assert ceiling_c.details["duplicates"] == 0 and ceiling_c.details["batches"] >= 2
        (naive,) = results.of("naive", server)
        assert naive.messages == naive.details["verified_stored"] == 200

        (tickpipe,) = results.of("tickpipe", server)
        assert tickpipe.messages == tickpipe.details["verified_stored"] == COUNT
        assert tickpipe.details["worker_totals"] == {"consumed": COUNT, "stored": COUNT, "duplicates": 0}
        d = tickpipe.details
        assert 0 < d["committed_at_first_commit"] < COUNT, d  # == COUNT: no steady interval to measure
        assert tickpipe.steady_rate is not None and tickpipe.steady_rate > 0
        assert 0 < d["started_s"] <= d["assigned_s"] <= d["first_commit_s"] <= tickpipe.seconds
        assert d["peak_rss_mb"] >= d["rss_mb_samples"]["max"] > 0
        # The writes in flight its tuner kept (it starts at 1), and when it changed them.
        assert d["write_concurrency"] in range(1, 5)
        kept = d.get("write_concurrency_kept", [])
        assert all(0 < at <= tickpipe.seconds and n in range(1, 5) for at, n in kept)
        assert d["write_concurrency"] == (kept[-1][1] if kept else 1)

        if server != mongo[0]:
            continue  # FIRST_SERVER_ONLY
        (scale,) = results.of("scale_out", server)
        assert scale.messages == scale.details["verified_stored"] == COUNT
        workers = scale.details["per_worker"]
        assert len(workers) == 2
        assert sum(w["worker_totals"]["stored"] for w in workers) == COUNT

        if not with_connector:
            continue
        (connector,) = results.of("connector", server)
        assert connector.messages == connector.details["verified_stored"] == COUNT
        assert connector.details["acknowledged"] == COUNT
        assert connector.details["failed_records_logged"] == 0
        assert connector.details["group"].startswith("connect-bench-connector-")
        assert 0 < connector.details["first_write_s"] <= connector.seconds
        assert connector.steady_rate is not None and connector.steady_rate > 0

    (big,) = results.of("rss_backlog")
    assert big.messages == big.details["verified_stored"] == 1000
    assert big.details["peak_rss_mb"] > 0

    # Paced at latency_load x tickpipe's steady rate on that server; every paced message measured.
    for latency in results.of("latency"):
        (tickpipe,) = results.of("tickpipe", latency.server)
        assert tickpipe.steady_rate is not None
        expected_rate = options.latency_load * tickpipe.steady_rate
        assert latency.details["target_rate"] == pytest.approx(expected_rate, rel=0.01)
        assert latency.messages == max(1, round(expected_rate * options.latency_seconds))
        durable, decoded = latency.details["durable_ms"], latency.details["decode_ms"]
        for stats in (durable, decoded):
            assert 0 <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"], stats
        assert decoded["p50"] <= durable["p50"] and decoded["max"] <= durable["max"]  # decoded first
        assert all(n in range(1, 5) for _at, n in latency.details["write_concurrency_kept"])

    # The crash comparison: killed mid-stream, restarted; tickpipe keeps its guarantee.
    crashes = {run.kind: run.details for run in results.of("crash_tickpipe") + results.of("crash_connector")}
    for kind, d in crashes.items():
        assert d["produced"] == 1500, kind
        assert 0 < d["produced_at_kill"] < d["produced"], kind  # mid-stream
        assert d["progress_at_kill"] > 0, kind
        assert d["stored_documents"] == d["distinct_offsets_stored"] + d["duplicates"] + d["unexpected"], kind
        assert d["redeliveries_seen"] is not None and d["redeliveries_seen"] >= 0, kind
    tp = crashes["crash_tickpipe"]
    assert tp["settled"] and tp["missing"] == 0 and tp["duplicates"] == 0 and tp["unexpected"] == 0, tp
    assert tp["stored_documents"] == tp["produced"]

    summary = results.summary()["servers"][mongo[0]]
    assert summary["tickpipe_steady_pct_of_b"] > 0
    assert summary["tickpipe_steady_vs_c"] > 0
    assert (summary.get("tickpipe_steady_vs_connector", 0) > 0) == with_connector
    assert "tickpipe_steady_vs_peer" not in summary
    assert "Quix Streams peer not run (disabled)" in results.notes

    text = report.markdown(results, "pipeline bench --count 2000", smoke=True)
    for label in (
        "ceiling A",
        "ceiling B per round",
        "ceiling C",
        "naive",
        *(["MongoDB Kafka connector"] if with_connector else []),
        "tickpipe: pipeline run",
        "2 processes",
        "latency at",
        "crash comparison",
        "Smoke run",
    ):
        assert label in text, label
    out = tmp_path / "bench.json"
    report.write_json(results, out, "pipeline bench")
    data = json.loads(out.read_text())
    assert data["summary"] == json.loads(json.dumps(results.summary()))
    assert len(data["runs"]) == len(results.runs)


def test_bench_connector_can_run() -> None:
    """The connector's part of the test above runs only where it can: this says so when it cannot."""
    why = connector_missing()
    if why is not None:
        pytest.skip(f"the MongoDB Kafka connector's measurements were left out: {why}")


@pytest.mark.servers
def test_bench_quix_peer_stores_the_whole_backlog(servers: Servers, tmp_path: Path) -> None:
    venv = REPO / ".venv-peer"
    if not peer_ready(venv):
        pytest.skip(f"no Quix Streams virtualenv at {venv} (`pipeline bench` creates it from PyPI)")
    target = Target(servers.bootstrap, "", tmp_path)
    backlog = preload(target, COUNT)
    with fresh_mongo("secantus", tmp_path) as server:
        run = peer(target.on(server), backlog, venv / "bin" / "python", session_timeout_ms=3000)
    assert run.kind == "peer"
    assert run.messages == run.details["verified_stored"] == COUNT
    assert run.details["acknowledged"] == COUNT
    assert run.rate > 0 and run.steady_rate is not None and run.steady_rate > 0
    assert 0 < run.details["first_write_s"] <= run.seconds
    assert run.cpu_us_per_msg is not None and run.cpu_us_per_msg > 0 and "client" in run.cpu


def test_profile_summary_counts_self_and_total_time_per_thread(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "thread (0x1): MainThread;<module> (pipeline/__main__.py:7);Worker._put (pipeline/worker.py:230);"
        "decode (pipeline/codec.py:120) 6\n"
        "thread (0x1): MainThread;<module> (pipeline/__main__.py:7);Worker._put (pipeline/worker.py:231) 2\n"
        "thread (0x2): mongo-writer;Thread.run (threading.py:982);insert_many (pymongo/collection.py:950) 2\n"
    )
    summary = summarise(raw)
    assert summary.samples == 10
    assert dict(summary.by_thread) == {"MainThread": 8, "mongo-writer": 2}
    assert summary.self_time["decode (pipeline/codec.py)"] == 6
    assert summary.self_time["Worker._put (pipeline/worker.py)"] == 2  # lines merged per function
    assert summary.total_time["Worker._put (pipeline/worker.py)"] == 8
    assert summary.total_time["<module> (pipeline/__main__.py)"] == 8
    text = render(summary)
    assert "60.0%  decode (pipeline/codec.py)" in text and "thread mongo-writer" in text
