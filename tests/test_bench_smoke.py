"""The benchmark harness (`pipeline bench`, package bench/) keeps working.

Every measurement runs in a tiny configuration on the session's test servers, and the results must be sane
and internally consistent: counts match what was produced, rates are positive, percentiles are ordered.
No performance thresholds here: numbers belong in docs/benchmarks.md, not in assertions.

The Quix Streams peer runs in its own virtualenv (.venv-peer, created by `pipeline bench` from PyPI); it is
an explicit option of the harness, off in the main smoke test and tested on its own when that virtualenv
exists (skipped with the reason otherwise).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import report
from bench.peer import peer, peer_ready
from bench.profiling import render, summarise
from bench.runner import REPO, BenchOptions, run_bench
from bench.workloads import Target, preload
from tests.harness import Servers

COUNT = 2000


@pytest.mark.servers
def test_bench_runs_every_measurement_and_reports_consistent_numbers(
    servers: Servers, tmp_path: Path
) -> None:
    options = BenchOptions(
        count=COUNT,
        repeat=1,
        naive_count=200,
        latency_seconds=2.0,
        rss_backlog=1000,
        peer=False,
        session_timeout_ms=3000,
    )
    target = Target(servers.bootstrap, servers.mongo_uri, tmp_path)
    results = run_bench(options, target=target)

    kinds = [run.kind for run in results.runs]
    assert kinds == ["raw_consume", "raw_insert", "naive", "tickpipe", "latency", "rss_backlog"], kinds
    for run in results.runs:
        assert run.messages > 0 and run.seconds > 0 and run.rate > 0, run
        assert abs(run.rate - run.messages / run.seconds) < 1e-6 * run.rate, run
        assert run.cpu["total"] >= 0 and "other" in run.cpu, run
    assert results.backlog["messages"] == COUNT
    assert sum(results.backlog["end_offsets"].values()) == COUNT
    assert len(results.backlog["end_offsets"]) == 6  # 2 topics x 3 partitions, all used (spread)

    raw_consume, raw_insert, naive, tickpipe, latency, big = results.runs
    assert raw_consume.messages == COUNT
    assert raw_insert.messages == raw_insert.details["verified_stored"] == COUNT
    assert raw_insert.details["calls"] == 2  # 1000 per insert_many, one per collection
    assert naive.messages == naive.details["verified_stored"] == 200

    assert tickpipe.messages == tickpipe.details["verified_stored"] == COUNT
    assert tickpipe.details["worker_totals"] == {"consumed": COUNT, "stored": COUNT, "duplicates": 0}
    assert tickpipe.steady_rate is not None and tickpipe.steady_rate > 0
    assert (
        0
        < tickpipe.details["started_s"]
        <= tickpipe.details["assigned_s"]
        <= tickpipe.details["first_commit_s"]
    )
    assert tickpipe.details["first_commit_s"] <= tickpipe.seconds
    assert 0 < tickpipe.details["committed_at_first_commit"] <= COUNT
    assert tickpipe.details["peak_rss_mb"] >= tickpipe.details["rss_mb_samples"]["max"] > 0

    assert big.messages == big.details["verified_stored"] == 1000
    assert big.details["peak_rss_mb"] > 0

    # Paced at latency_load x tickpipe's steady rate for latency_seconds; every paced message measured.
    expected_rate = options.latency_load * tickpipe.steady_rate
    assert latency.details["target_rate"] == pytest.approx(expected_rate, rel=0.01)
    assert latency.messages == max(1, round(expected_rate * options.latency_seconds))
    durable, decoded = latency.details["durable_ms"], latency.details["decode_ms"]
    for stats in (durable, decoded):
        assert 0 <= stats["p50"] <= stats["p90"] <= stats["p99"] <= stats["max"], stats
    assert decoded["p50"] <= durable["p50"] and decoded["max"] <= durable["max"]  # decoded before stored

    summary = results.summary()
    assert summary["ceiling"] == "B, raw insert" or summary["ceiling"] == "A, raw consume"
    assert summary["tickpipe_steady_pct_of_ceiling"] > 0
    assert summary["tickpipe_steady_vs_naive"] > 0
    assert "tickpipe_vs_peer" not in summary
    assert "Quix Streams peer not run (disabled)" in results.notes

    text = report.markdown(results, "pipeline bench --count 2000")
    for label in ("ceiling A", "ceiling B", "naive", "tickpipe: pipeline run", "peer not run", "latency at"):
        assert label in text, label
    out = tmp_path / "bench.json"
    report.write_json(results, out, "pipeline bench")
    data = json.loads(out.read_text())
    assert data["summary"] == json.loads(json.dumps(summary))
    assert len(data["runs"]) == len(results.runs)


@pytest.mark.servers
def test_bench_quix_peer_stores_the_whole_backlog(servers: Servers, tmp_path: Path) -> None:
    venv = REPO / ".venv-peer"
    if not peer_ready(venv):
        pytest.skip(f"no Quix Streams virtualenv at {venv} (`pipeline bench` creates it from PyPI)")
    target = Target(servers.bootstrap, servers.mongo_uri, tmp_path)
    backlog = preload(target, COUNT)
    run = peer(target, backlog, venv / "bin" / "python", session_timeout_ms=3000)
    assert run.kind == "peer"
    assert run.messages == run.details["verified_stored"] == COUNT
    assert run.details["sink_acknowledged"] == COUNT
    assert run.rate > 0 and run.steady_rate is not None and run.steady_rate > 0
    assert 0 < run.details["first_flush_s"] <= run.seconds


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
