"""The worker as a real process: kill -9 at random moments, SIGTERM mid-stream, start-up failures."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.dev.process import free_port
from tests.harness import (
    REPO,
    CommitMonitor,
    ProcessWorker,
    Scenario,
    assert_exactly_once,
    committed_total,
    dead_letter_count,
    end_offsets,
    kill_loop,
    stored_ids,
    wait_for,
)

pytestmark = pytest.mark.servers


def _assert_clean_log(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.write_path
def test_kill_9_at_random_moments_loses_nothing_and_never_commits_ahead_of_the_data(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    total = 20_000
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    sc.add_verification_index(sc.topics)
    report = sc.produce(total)
    monitor = CommitMonitor(sc, {t: t for t in sc.topics}, report.offsets).start()
    try:
        result = kill_loop(sc, total, kills_wanted=5, log_path=tmp_path / "worker.log", seed=20261125)
    finally:
        monitor.stop()
    assert len(result.kills) == 5 and result.final_exit_code == 0
    assert not monitor.violations, monitor.violations
    assert monitor.ranges_checked >= 10, "the monitor barely observed any commit"
    assert_exactly_once(sc, report)
    assert dead_letter_count(sc) == 0, "every tick is valid: a re-delivery must never be dead-lettered"
    _assert_clean_log(result.log)


@pytest.mark.write_path
def test_sigterm_mid_stream_flushes_commits_and_exits_0(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    report = sc.produce(20_000)
    ends = end_offsets(report)
    worker = ProcessWorker(sc.env(), tmp_path / "worker.log").start()
    try:
        wait_for(lambda: committed_total(sc) > 2_000, timeout=60, interval=0.05, what="progress")
        started = time.monotonic()
        worker.terminate(signal.SIGTERM)
        code = worker.wait(20)
        stop_seconds = time.monotonic() - started
    finally:
        worker.stop()
    assert code == 0
    assert stop_seconds < 10
    committed = sc.committed(list(ends))
    assert sum(committed.values()) < 20_000, "stopped after the end of the stream: not a mid-stream stop"
    with sc.mongo() as client:
        ids = stored_ids(client[sc.database], sc.topics)
    # Flush-then-commit: what is stored is exactly what is committed, partition by partition.
    for tp in ends:
        stored = sorted(o for t, p, o in ids if (t, p) == tp)
        expected = sorted(o for o in report.offsets[tp] if o < max(committed[tp], 0))
        assert stored == expected, f"{tp}: stored offsets differ from the committed range"
    text = worker.log_text()
    assert "stopping: flushing and committing" in text
    _assert_clean_log(text)


def _run_cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}


@pytest.mark.parametrize(
    "server, expected",
    [
        ("mongo", "cannot reach MongoDB at mongodb://127.0.0.1:"),
        ("kafka", "cannot reach Kafka at 127.0.0.1:"),
    ],
)
def test_unreachable_server_at_start_is_one_clear_line_and_exit_1(
    server: str, expected: str, make_scenario: Callable[..., Scenario]
) -> None:
    sc = make_scenario(("petr4",), create=False)
    nowhere = {
        "mongo": {
            "PIPELINE_MONGO__URI": f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
            "PIPELINE_MONGO__SERVER_SELECTION_TIMEOUT_MS": "3000",
        },
        "kafka": {"PIPELINE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"},
    }[server]
    env = {**_base_env(), **sc.env(PIPELINE_WORKER__STARTUP_TIMEOUT_S="3", **nowhere)}
    started = time.monotonic()
    result = _run_cli(["run"], env)
    assert result.returncode == 1
    assert time.monotonic() - started < 20
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "kafka:\n  bootstrap_servers: 127.0.0.1:9092\n  topics: [petr4]\nbatch:\n  max_mesages: 10\n"
    )
    result = _run_cli(["run", "--config", str(config)], {**_base_env(), "PIPELINE_BATCH__MAX_WAIT_MS": "-5"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any("batch.max_mesages: unknown key" in line for line in lines), lines
    assert any("batch.max_wait_ms" in line and "PIPELINE_BATCH__MAX_WAIT_MS" in line for line in lines), lines
    assert "Traceback" not in result.stderr


def test_produce_command_reports_deliveries_and_fails_loudly_without_a_broker(
    make_scenario: Callable[..., Scenario],
) -> None:
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    env = {**_base_env(), **sc.env()}
    ok = _run_cli(["produce", "--topics", ",".join(sc.topics), "--count", "500", "--spread"], env)
    assert ok.returncode == 0, ok.stderr
    assert "produced 500/500 ticks" in ok.stdout
    bad_env = {
        **env,
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "PIPELINE_KAFKA__PRODUCER": '{"message.timeout.ms": 2000}',
    }
    bad = _run_cli(["produce", "--topics", "petr4", "--count", "5", "--timeout", "3"], bad_env)
    assert bad.returncode == 1
    # `produce` reaches the cluster first (within --timeout), so an absent broker is one line, not 5 timeouts.
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot reach Kafka at 127.0.0.1:" in errors[0], bad.stderr
    assert "Traceback" not in bad.stderr


def test_produce_count_0_runs_until_stopped_and_rate_paces_it(make_scenario: Callable[..., Scenario]) -> None:
    sc = make_scenario(("petr4",), partitions=1)
    env = {**_base_env(), **sc.env()}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "produce",
            "--topics",
            sc.topics[0],
            "--count",
            "0",
            "--rate",
            "100",
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(4)
    assert proc.poll() is None, "--count 0 must keep producing until stopped"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    produced = int(out.split("produced ")[1].split("/")[0])
    # ~4 s at 100/s (start-up included): paced, not as fast as possible, and not stuck.
    assert 100 <= produced <= 500, out
    assert _count_messages(sc.servers.bootstrap, sc.topics[0]) == produced, "delivered count must be exact"


def _count_messages(bootstrap: str, topic: str) -> int:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "counter", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        count, idle_since = 0, time.monotonic()
        while time.monotonic() - idle_since < 3:
            batch = [m for m in consumer.consume(500, 0.5) if m.error() is None]
            if batch:
                count, idle_since = count + len(batch), time.monotonic()
        return count
    finally:
        consumer.close()
