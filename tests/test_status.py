"""`pipeline status` against the real test servers: committed offsets equal what was produced (delivery
reports), stored documents equal the collections' contents, it never joins the group, and unreachable servers
give one line and exit 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from pipeline.dev.process import free_port
from tests.harness import REPO, Scenario, end_offsets, thread_worker, wait_for

pytestmark = pytest.mark.servers


def status(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIPELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "status", *args],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def status_json(sc: Scenario, **env: str) -> dict[str, Any]:
    result = status(sc.env(**env), "--format", "json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def partitions(data: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(t["topic"], p["partition"]): p for t in data["topics"] for p in t["partitions"]}


def test_status_shows_committed_offsets_end_offsets_lag_and_stored_documents(
    make_scenario: Callable[..., Scenario],
) -> None:
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    report = sc.produce(3_000)
    ends = end_offsets(report)
    assert len(ends) == 6
    produced = {topic: sum(end for (t, _), end in ends.items() if t == topic) for topic in sc.topics}

    before = status_json(sc)
    assert before["group"] == sc.group and before["database"] == sc.database
    assert "reported by the broker" in before["end_offset_source"]
    assert set(partitions(before)) == set(ends)
    assert all(p["committed"] is None and p["lag"] is None for p in partitions(before).values())
    assert [t["stored_documents"] for t in before["topics"]] == [0, 0]

    with thread_worker(sc.settings()) as runner:
        wait_for(lambda: sc.committed(list(ends)) == ends, timeout=180, interval=0.5, what="all committed")
        during = status_json(sc)
        # Reading the group's offsets must not join it: the worker saw no rebalance.
        assert runner.worker.metrics.rebalances.labels("revoke")._value.get() == 0
        assert runner.worker.metrics.rebalances.labels("assign")._value.get() == 1
        assert runner.stop() == 0
    assert {tp: p["committed"] for tp, p in partitions(during).items()} == ends

    after = status_json(sc)
    for tp, p in partitions(after).items():
        assert p["committed"] == ends[tp]
        # What the broker says is reported. A correct broker's end offset is never below a committed offset;
        # the Tansu test broker's can be (TESTING.md): then it is flagged and no lag is made up.
        assert p["end_offset"] >= 0
        if p["end_offset"] >= p["committed"]:
            assert p["end_offset_reliable"] is True and p["lag"] == p["end_offset"] - p["committed"]
        else:
            assert p["end_offset_reliable"] is False and p["lag"] is None
    reliable = all(p["end_offset_reliable"] for p in partitions(after).values())
    assert after["end_offsets_reliable"] is reliable
    for topic in after["topics"]:
        assert topic["exists"] and topic["collection"] == topic["topic"]
        assert topic["stored_documents"] == produced[topic["topic"]]
        assert topic["committed_total"] == produced[topic["topic"]]
    with sc.mongo() as client:
        assert {t: client[sc.database][t].count_documents({}) for t in sc.topics} == produced

    table = status(sc.env(), "--format", "table")
    assert table.returncode == 0, table.stderr
    out = table.stdout
    for header in ("committed offset", "end offset (broker)", "lag", "stored documents"):
        assert header in out
    assert "reported by the broker" in out and sc.group in out
    for (topic, partition), end in ends.items():
        row = re.compile(rf"│ {re.escape(topic)} +│ +{partition} │ +{end:,} │")
        assert row.search(out), f"no row for {topic}[{partition}] committed {end}:\n{out}"
    for topic, count in produced.items():
        assert re.search(rf"{re.escape(topic)}.*total.*{count:,}.*{count:,}", out), out
    assert ("end offset below the committed offset" in " ".join(out.split())) is not reliable


def test_status_resolves_patterns_and_flags_missing_topics(make_scenario: Callable[..., Scenario]) -> None:
    sc = make_scenario(("petr4", "vale3"), partitions=2)
    suffix = sc.topics[0].rsplit("-", 1)[1]
    data = status_json(sc, PIPELINE_KAFKA__TOPICS=f"^vale3-{suffix}$,missing-{suffix}")
    topics = {t["topic"]: t for t in data["topics"]}
    assert set(topics) == {sc.topics[1], f"missing-{suffix}"}
    assert [p["partition"] for p in topics[sc.topics[1]]["partitions"]] == [0, 1]
    assert topics[f"missing-{suffix}"]["exists"] is False and topics[f"missing-{suffix}"]["partitions"] == []
    table = status(sc.env(PIPELINE_KAFKA__TOPICS=f"missing-{suffix}"))
    assert table.returncode == 0 and "no such topic" in table.stdout


@pytest.mark.parametrize("down", ["kafka", "mongo"])
def test_status_with_a_server_unreachable_prints_one_line_and_exits_1(
    down: str, make_scenario: Callable[..., Scenario]
) -> None:
    sc = make_scenario(("petr4",), create=False)
    dead = f"127.0.0.1:{free_port()}"
    env = (
        sc.env(PIPELINE_KAFKA__BOOTSTRAP_SERVERS=dead)
        if down == "kafka"
        else sc.env(PIPELINE_MONGO__URI=f"mongodb://tickpipe:Pa55w0rd-x@{dead}/?directConnection=true")
    )
    started = time.monotonic()
    result = status(env, "--timeout", "2")
    assert time.monotonic() - started < 60
    assert result.returncode == 1 and result.stdout == ""
    lines = result.stderr.splitlines()
    expected = "error: cannot reach Kafka at" if down == "kafka" else "error: cannot reach MongoDB at"
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "Pa55w0rd-x" not in result.stderr


@pytest.mark.apache_kafka("the KIP-848 consumer group protocol (Kafka 4.0+)")
@pytest.mark.parametrize("protocol", ["classic", "consumer"])
def test_status_shows_the_group_protocol_the_broker_describes(
    protocol: str, make_scenario: Callable[..., Scenario]
) -> None:
    sc = make_scenario(("petr4",), partitions=2)
    ends = end_offsets(sc.produce(200))
    env = {"PIPELINE_KAFKA__GROUP_PROTOCOL": protocol}

    before = status_json(sc, **env)  # no member, nothing committed: the broker knows no such group
    assert (before["group_protocol"], before["group_state"], before["group_members"]) == (None, "dead", 0)
    assert before["group_protocol_configured"] == protocol and before["group_description_error"] is None

    with thread_worker(sc.settings(kafka={"group_protocol": protocol})) as runner:
        wait_for(lambda: sc.committed(list(ends)) == ends, timeout=120, interval=0.5, what="all committed")
        during = status_json(sc, **env)
        table = status(sc.env(**env), "--format", "table")
        assert runner.stop() == 0
    assert (during["group_protocol"], during["group_state"], during["group_members"]) == (
        protocol,
        "stable",
        1,
    )
    assert table.returncode == 0, table.stderr
    assert f"(protocol {protocol}, stable, 1 member)" in " ".join(table.stdout.split()), table.stdout

    after = status_json(sc, **env)  # the member left; the group keeps its offsets and its protocol
    assert (after["group_protocol"], after["group_state"], after["group_members"]) == (protocol, "empty", 0)
    assert {(t["topic"], p["partition"]): p["lag"] for t in after["topics"] for p in t["partitions"]} == {
        tp: 0 for tp in ends
    }
