"""The benchmark harness's pure parts: CPU accounting from /proc samples, medians, rates, the crash tally,
and the report's rendering (bench/ is repository-only: see tests/unit/test_bench_layering.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.crash import connector_coordinate, tally, tickpipe_coordinate
from bench.measures import WorkerProcess
from bench.report import cores_used, markdown, sections
from bench.runner import BenchResults
from bench.system import (
    CpuMeter,
    CpuSample,
    CpuUsage,
    cpu_usage,
    parse_machine_stat,
    parse_pid_stat,
    process_cpu,
)
from bench.workloads import Run, median, percentile, timed_run
from pipeline.ingest.writer import CONCURRENCY_KEPT
from pipeline.ops.logs import JsonFormatter, StructuredLogger

# /proc/<pid>/stat of a process whose name holds spaces and parentheses: utime 250, stime 75 ticks (fields
# 14, 15), cutime 3, cstime 4 (its children: not its own CPU).
STAT = (
    "4242 (py (x) y) S 1 4242 4242 0 -1 4194304 1 0 0 0 250 75 3 4 20 0 3 0 100 1000 10 18446744073709551615"
)


def test_pid_stat_is_utime_plus_stime_of_all_threads_without_children() -> None:
    assert parse_pid_stat(STAT, ticks_per_s=100) == pytest.approx(3.25)


def test_pid_stat_of_this_process_matches_os_times() -> None:
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn some CPU so that the comparison means something
        pass
    times = os.times()
    value = process_cpu(os.getpid())
    assert value is not None
    assert value == pytest.approx(times.user + times.system, abs=0.05)


def test_machine_stat_counts_busy_time_only() -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice
    line = "cpu  1000 50 300 9000 200 10 20 5 0 0"
    assert parse_machine_stat(line, ticks_per_s=100) == pytest.approx((1000 + 50 + 300 + 10 + 20 + 5) / 100)
    with pytest.raises(ValueError):
        parse_machine_stat("cpu0 1 2 3 4 5 6 7 8", ticks_per_s=100)


def test_cpu_usage_splits_cores_by_role_and_counts_a_new_process_from_zero() -> None:
    before = CpuSample(at=100.0, machine_busy=500.0, roles={"mongo_server": 10.0, "bench": 1.0})
    after = CpuSample(at=102.0, machine_busy=507.0, roles={"mongo_server": 12.0, "bench": 1.5, "client": 3.0})
    usage = cpu_usage(before, after)
    assert usage.roles == {"mongo_server": 2.0, "bench": 0.5, "client": 3.0}
    assert usage.other_s == pytest.approx(1.5)  # 7 CPU-seconds busy, 5.5 of them ours
    assert usage.cores() == {"mongo_server": 1.0, "bench": 0.25, "client": 1.5, "other": 0.75, "total": 3.5}
    assert usage.us_per_message("client", 1000) == 3000.0
    assert usage.us_per_message("client", 0) is None
    assert usage.us_per_message("absent", 10) is None
    # Under 10 clock ticks of CPU the figure would be mostly rounding: none rather than a wrong one.
    tiny = CpuUsage(1.0, {"client": 0.02}, machine_s=1.0)
    assert tiny.us_per_message("client", 1000) is None


def test_cpu_usage_other_never_negative() -> None:
    # /proc/stat and /proc/<pid>/stat tick separately: a process may seem busier than the machine.
    usage = CpuUsage(1.0, {"client": 1.2}, machine_s=1.0)
    assert usage.other_s == 0.0


def test_cpu_meter_keeps_the_last_value_of_a_process_that_exited() -> None:
    burn = (
        "import sys, time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('burnt', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    meter = CpuMeter()
    before = meter.sample()
    meter.add("client", proc.pid)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "burnt"
        alive = meter.sample()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(30)
    gone = meter.sample()
    used = cpu_usage(before, alive).roles["client"]
    assert used >= 0.25  # its whole CPU counts: it started after the first sample
    assert cpu_usage(before, gone).roles["client"] == used  # exited: the last value read stays


def test_median_and_percentile() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    assert percentile([5.0, 1.0, 4.0, 2.0, 3.0], 50) == 3.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0


def test_timed_run_rates_and_cpu_per_message() -> None:
    whole = CpuUsage(10.0, {"client": 2.0, "mongo_server": 9.0}, machine_s=11.5)
    steady = CpuUsage(8.0, {"client": 1.2, "mongo_server": 7.5}, machine_s=9.0)
    run = timed_run("tickpipe", 100_000, 100.0, 110.0, whole, (102.0, 20_000), steady, {"x": 1})
    assert run.rate == 10_000.0 and run.seconds == 10.0
    assert run.steady_rate == 10_000.0  # 80,000 messages in 8 s
    assert run.cpu_us_per_msg == 20.0  # 2 s / 100,000
    assert run.steady_cpu_us_per_msg == 15.0  # 1.2 s / 80,000
    assert run.cpu["mongo_server"] == 0.9 and run.cpu["client"] == 0.2
    assert run.details == {"x": 1}
    assert timed_run("raw_insert", 10, 0.0, 1.0, whole).steady_rate is None


def test_crash_tally_finds_missing_duplicate_and_unexpected_offsets() -> None:
    produced = {("t", 0): [0, 1, 2], ("t", 1): [0, 1]}
    stored = [("t", 0, 0), ("t", 0, 1), ("t", 0, 1), ("t", 1, 1), ("u", 0, 9)]
    result = tally(produced, stored)
    assert result["produced"] == 5
    assert result["stored_documents"] == 5
    assert result["distinct_offsets_stored"] == 3
    assert result["missing"] == 2 and result["missing_examples"] == [["t", 0, 2], ["t", 1, 0]]
    assert result["duplicates"] == 1
    assert result["unexpected"] == 1


def test_crash_coordinates_of_both_id_shapes() -> None:
    assert tickpipe_coordinate({"topic": "a.b", "partition": 2, "offset": 7}) == ("a.b", 2, 7)
    # KafkaMetaDataStrategy: "topic#partition#offset"; a topic may itself hold '#'.
    assert connector_coordinate("c1.petr4#0#15") == ("c1.petr4", 0, 15)
    assert connector_coordinate("we#ird#3#4") == ("we#ird", 3, 4)


def _run(kind: str, server: str | None, rate: float, steady: float | None = None, **extra: object) -> Run:
    cpu = {"client": 0.5, "mongo_server": 0.97, "kafka_server": 0.05, "other": 0.02, "total": 1.54}
    return Run(
        kind,
        1000,
        1000 / rate,
        rate,
        steady,
        cpu,
        dict(extra.pop("details", {})),  # type: ignore[call-overload]
        server=server,
        cpu_us_per_msg=15.0,
        steady_cpu_us_per_msg=12.0 if steady else None,
        **extra,  # type: ignore[arg-type]
    )


def _results() -> BenchResults:
    results = BenchResults(
        options={"repeat": 3, "mongo": ["secantus", "ferretdb"]},
        machine={"cpus": 2},
        started_at="2026-12-01T00:00:00+00:00",
        finished_at="2026-12-01T00:30:00+00:00",
        servers={"broker": "Apache Kafka 4.4.0"},
        backlog={
            "messages": 1000,
            "topics": ["a", "b"],
            "partitions": 3,
            "end_offsets": dict.fromkeys("abcdef", 1),
        },
        wall_seconds=1800.0,
    )
    for round_, (b, tp) in enumerate([(10_000, 8_000), (9_000, 8_500), (11_000, 9_000)], start=1):
        results.runs += [
            _run("raw_consume", None, 150_000, round=round_),
            _run("raw_insert", "secantus", b, round=round_),
            _run("ceiling_c", "secantus", 5_000, round=round_),
            _run("connector", "secantus", 6_000, 7_000, round=round_),
            _run(
                "tickpipe",
                "secantus",
                tp * 0.9,
                tp,
                round=round_,
                details={"write_concurrency": [1, 2, "2 (fixed)"][round_ - 1]},
            ),
            _run("raw_insert", "ferretdb", 25_000, round=round_),
        ]
    crash = {
        "produced": 40_000,
        "stored_documents": 40_000,
        "missing": 0,
        "duplicates": 0,
        "redeliveries_seen": 1_234,
        "redeliveries_means": "worker's duplicates counter",
        "restart_to_all_stored_s": 7.5,
        "rate": 2000.0,
        "seconds": 20.0,
    }
    results.runs.append(_run("crash_tickpipe", "secantus", 1000, details=crash))
    results.notes.append("a note")
    return results


def test_report_sections_per_server_with_medians_drift_and_ratios() -> None:
    results = _results()
    found = {s.title: s for s in sections(results)}
    assert list(found) == [
        "Kafka only (no MongoDB server)",
        "on SecantusDB (a fresh server per measurement)",
        "on FerretDB 1.24.2 (a fresh server per measurement)",
        "crash comparison: kill -9 mid-stream, restart at once",
    ]
    secantus = found["on SecantusDB (a fresh server per measurement)"]
    rows = {row[0]: row for row in secantus.rows}
    b = rows["ceiling B: raw insert_many (pymongo, 1000/call)"]
    assert b[1:4] == ["10,000", "-", "10,000 / 9,000 / 11,000"]
    tickpipe = rows["tickpipe: pipeline run"]
    assert tickpipe[1] == "7,650" and tickpipe[2] == "8,500"
    assert tickpipe[4] == "12.0 (whole 15.0)"
    assert tickpipe[5] == "client 0.50, mongod 0.97, kafka 0.05, other 0.02"
    assert "ceiling B per round: 10,000 / 9,000 / 11,000 (spread 20.0% of the median)" in secantus.lines
    assert "tickpipe vs ceiling B: 85.0% steady, 76.5% end to end" in secantus.lines
    assert "tickpipe writes in flight at the end of each round: 1 / 2 / 2 (fixed)" in secantus.lines
    assert any(
        line.startswith("tickpipe steady rate = 1.7x ceiling C, 1.21x the connector")
        for line in secantus.lines
    )
    crash = found["crash comparison: kill -9 mid-stream, restart at once"]
    assert crash.rows == [
        [
            "SecantusDB",
            "tickpipe",
            "40,000",
            "40,000",
            "0",
            "0",
            "1,234 (worker's duplicates counter)",
            "7.5 s",
        ]
    ]
    assert any('"topic#partition#offset"' in line for line in crash.lines)


def test_markdown_has_every_table_and_the_smoke_banner() -> None:
    text = markdown(_results(), "pipeline bench --quick", smoke=True)
    assert text.startswith("**Smoke run (`--quick`)")
    assert "| ceiling B: raw insert_many (pymongo, 1000/call) | 10,000 | - |" in text
    assert "**crash comparison: kill -9 mid-stream, restart at once**" in text
    assert "- note: a note" in text
    assert "(1800 s)" in text
    assert "**Smoke run" not in markdown(_results())


def test_cores_used_without_cpu_numbers() -> None:
    assert cores_used([]) == "-"
    assert cores_used([Run("x", 1, 1.0, 1.0)]) == "-"


def test_options_that_cannot_run_here_are_refused_one_line_each_before_anything_starts() -> None:
    from bench.runner import BenchOptions, run_bench
    from bench.workloads import BenchUnavailable

    options = BenchOptions(broker="nosuch", mongo=("secantus", "mongod"), peer=False, connector=False)
    with pytest.raises(BenchUnavailable) as caught:
        run_bench(options)
    assert caught.value.exit_code == 2
    assert caught.value.lines == [
        "error: --broker nosuch: use one of apache, tansu",
        "error: --mongo mongod: use secantus, ferretdb",
    ]


def test_the_bench_reads_the_tuner_s_outcome_from_the_worker_s_own_json_log(tmp_path: Path) -> None:
    """The worker's log line (its logger, its JSON format) is what the bench parses: renaming the message on
    one side only would silently empty the bench's record of the writes in flight."""
    log_path = tmp_path / "worker.log"
    handler = logging.FileHandler(log_path)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.bench.worker_log")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        StructuredLogger(logger).info(CONCURRENCY_KEPT, concurrency=2, docs_per_s_at={"1": 900, "2": 1100})
    finally:
        logger.removeHandler(handler)
        handler.close()
    worker = object.__new__(WorkerProcess)  # no process: only its log is read
    worker.log_path, worker.started_wall = log_path, time.time() - 5.0
    (kept,) = worker.milestones()["write_concurrency_kept"]
    assert kept[1] == 2 and 4.0 < kept[0] <= 5.0  # logged just before the start was set 5 s back
