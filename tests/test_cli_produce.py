"""`pipeline produce` against the real test broker: it never creates a topic (like the worker), and an
unreachable Kafka is one line naming the server within --timeout, not a minute of client log lines."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pipeline.clients.admin import list_topics
from pipeline.dev.process import free_port
from tests.harness import REPO, unique
from tests.query_data import Market

pytestmark = pytest.mark.servers


def produce(market: Market, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "produce", *argv],
        env=market.subprocess_env(**env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_produce_to_a_missing_topic_is_refused_and_creates_nothing(market: Market) -> None:
    missing = unique("nosuch")
    result = produce(market, "--topics", f"{market.topic_of['PETR4']},{missing}", "--count", "4")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: topic {missing!r} does not exist on {market.sc.servers.bootstrap}: create it first "
        f"(pipeline topics create {missing}); produce never creates topics"
    ]
    assert missing not in {t.name for t in list_topics(market.sc.kafka, 10)}


def test_produce_to_existing_topics(market: Market) -> None:
    topic = unique("produce")
    market.sc.create_topics([topic], partitions=1)
    result = produce(market, "--topics", topic, "--count", "5", "--seed", "1", PIPELINE_LOG__LEVEL="WARNING")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"produced 5/5 ticks to {topic} in ")


def test_produce_with_kafka_unreachable_is_one_line_within_the_timeout(market: Market) -> None:
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = produce(market, "--count", "3", "--timeout", "2", PIPELINE_KAFKA__BOOTSTRAP_SERVERS=dead)
    assert time.monotonic() - started < 15
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach Kafka at {dead}"), result.stderr
