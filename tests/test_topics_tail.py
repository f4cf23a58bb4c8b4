"""`pipeline topics create|list` and `pipeline tail` (the console consumer), run as real processes against
the test broker: every produced tick printed, bad messages escaped, several tails at once, commits only for
the tail's own group, Ctrl-C exits 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from pipeline.dev.process import free_port
from tests.harness import REPO, committed_offsets, unique, wait_for
from tests.query_data import Market

pytestmark = pytest.mark.servers
UNSET = -1001  # librdkafka's OFFSET_INVALID: the group has no committed offset


class Tail:
    """`python -m pipeline tail ...` as a subprocess; stdout and stderr collected line by line."""

    def __init__(self, market: Market, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "tail", *args],
            env=market.subprocess_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait(self, timeout: float = 60) -> int:
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def json_rows(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out]


@pytest.fixture
def tails() -> Iterator[list[Tail]]:
    started: list[Tail] = []
    yield started
    for tail in started:
        tail.kill()


def produce(bootstrap: str, topic: str, values: list[bytes | None], partition: int | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures: list[str] = []

    def report(error: Any, _message: Any) -> None:
        if error is not None:
            failures.append(str(error))

    for value in values:
        kwargs: dict[str, Any] = {} if partition is None else {"partition": partition}
        producer.produce(topic, value=value, key=b"PETR4", on_delivery=report, **kwargs)
    assert producer.flush(30) == 0 and not failures, failures


def tick(price: float, second: int, volume: int = 100) -> bytes:
    return orjson.dumps(
        {"symbol": "PETR4", "price": price, "volume": volume, "ts": f"2026-01-05T13:00:{second:02d}Z"}
    )


# ---- topics -----------------------------------------------------------------------------------------------


def test_topics_create_and_list(cli: Any, market: Market) -> None:
    a, b = unique("topic-a"), unique("topic-b")
    code, out, err = cli("topics", "create", a, b, "--partitions", "2")
    assert code == 0, err
    assert out.splitlines() == [
        f"created  {a} (2 partitions, replication 1)",
        f"created  {b} (2 partitions, replication 1)",
    ]
    code, out, _ = cli("topics", "create", a, "--partitions", "5")
    assert code == 0 and out.strip() == f"exists   {a} (unchanged)"

    code, out, _ = cli("topics", "list")
    assert code == 0
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip() for line in out.splitlines() if "│" in line
    }
    assert rows[a] == rows[b] == "2"
    assert rows[market.topic_of["PETR4"]] == "3"
    assert not any(name.startswith("__") for name in rows)

    code, out, err = cli("topics", "create", "bad$topic")
    assert code == 2 and out == "" and len(err.splitlines()) == 1 and "not a valid Kafka topic name" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "list", "--timeout", "2"],
        ["topics", "create", "t-unreachable", "--timeout", "2"],
        ["tail", "petr4", "--timeout", "2", "--max", "1"],
        ["tail", "--timeout", "2"],
    ],
    ids=["topics list", "topics create", "tail", "tail configured topics"],
)
def test_kafka_unreachable_is_one_line_naming_the_server_within_the_timeout(
    cli: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("PIPELINE_KAFKA__BOOTSTRAP_SERVERS", dead)
    started = time.monotonic()
    code, out, err = cli(*argv)
    elapsed = time.monotonic() - started
    assert code == 1 and out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: cannot reach Kafka at {dead}"), err
    assert "TimeoutError: \n" not in err
    assert elapsed < 2 + 4, elapsed


@pytest.mark.parametrize(
    "argv",
    [
        ["topics", "create", "t-unreachable", "--timeout", "2"],
        ["topics", "list", "--timeout", "2"],
        ["tail", "petr4", "--timeout", "2"],
    ],
    ids=["topics create", "topics list", "tail"],
)
def test_kafka_unreachable_is_one_line_from_the_console_script_too(market: Market, argv: list[str]) -> None:
    """As a process (no test logging handlers): no client library log line reaches stderr."""
    dead = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        env=market.subprocess_env(PIPELINE_KAFKA__BOOTSTRAP_SERVERS=dead),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(f"error: cannot reach Kafka at {dead}"), result.stderr


def test_topics_create_says_1_partition(cli: Any) -> None:
    name = unique("one")
    code, out, err = cli("topics", "create", name, "--partitions", "1")
    assert code == 0, err
    assert out == f"created  {name} (1 partition, replication 1)\n"


# ---- tail -------------------------------------------------------------------------------------------------


def test_tail_prints_every_tick_the_worker_stored(market: Market, tails: list[Tail]) -> None:
    sent = market.ticks["PETR4"]
    tail = Tail(
        market, market.topic_of["PETR4"], "--from-beginning", "--max", str(len(sent)), "--format", "json"
    )
    tails.append(tail)
    assert tail.wait() == 0, tail.err
    rows = tail.json_rows()
    assert len(rows) == len(sent)
    by_coordinates = {(r["partition"], r["offset"]): r for r in rows}
    for s in sent:
        row = by_coordinates[(s.partition, s.offset)]
        assert row["topic"] == s.topic and row["key"] == "PETR4"
        value = row["value"]
        assert (value["symbol"], value["price"], value["volume"]) == (s.symbol, s.price, s.volume)
        assert value["ts"] == s.ts.isoformat(timespec="milliseconds")
    assert tail.err[-1] == f"tail: {len(sent)} message(s)"
    # Without --group nothing was committed: the worker's group still has exactly its own offsets.
    assert committed_offsets(market.sc.servers.bootstrap, market.sc.group, list(market.ends)) == market.ends


@pytest.fixture
def fresh_topic(market: Market) -> str:
    topic = unique("tail")
    market.sc.create_topics([topic], partitions=2)
    return topic


def test_tail_marks_and_escapes_bad_messages_and_keeps_going(
    market: Market, tails: list[Tail], fresh_topic: str
) -> None:
    values: list[bytes | None] = [
        tick(38.10, 1),
        b"\xff\xfe not json",
        b'{"symbol": "PETR4"}',
        b"\x1b[2J\x1b[31mred alert\n",  # terminal escape sequences must not reach the terminal
        None,
        tick(38.20, 2),
        tick(38.05, 3),
    ]
    produce(market.sc.servers.bootstrap, fresh_topic, values, partition=0)
    tail = Tail(market, fresh_topic, "--from-beginning", "--max", str(len(values)))
    tails.append(tail)
    assert tail.wait() == 0, tail.err
    lines = tail.out
    assert len(lines) == len(values)
    good = [line for line in lines if not line.startswith("!! ")]
    bad = [line for line in lines if line.startswith("!! ")]
    assert len(good) == 3 and len(bad) == 4
    assert "PETR4" in good[0] and "38.10" in good[0] and f"{fresh_topic}[0]@0" in good[0]
    assert "38.20 ▲" in good[1] and "38.05 ▼" in good[2]
    assert good[0].startswith("2026-01-05T13:00:01.000+00:00")
    assert "invalid_json" in bad[0] and "\\xff\\xfe not json" in bad[0]
    assert "missing_field" in bad[1]
    assert "\\x1b[2J\\x1b[31mred alert\\n" in bad[2]
    assert "null_value" in bad[3]
    assert not any("\x1b" in line for line in lines)


def test_two_tails_in_different_groups_both_see_everything_and_commit_only_their_group(
    market: Market, tails: list[Tail], fresh_topic: str
) -> None:
    bootstrap = market.sc.servers.bootstrap
    for partition in (0, 1):
        produce(bootstrap, fresh_topic, [tick(30 + partition + i / 100, i) for i in range(10)], partition)
    groups = [unique("tail-g1"), unique("tail-g2")]
    for group in groups:
        args = ["--from-beginning", "--group", group, "--max", "20", "--format", "json"]
        tails.append(Tail(market, fresh_topic, *args))
    everything = {(p, o) for p in (0, 1) for o in range(10)}
    for tail in tails:
        assert tail.wait(90) == 0, tail.err
        assert {(r["partition"], r["offset"]) for r in tail.json_rows()} == everything
        assert len(tail.out) == 20
    tps = [(fresh_topic, 0), (fresh_topic, 1)]
    for group in groups:
        assert committed_offsets(bootstrap, group, tps) == {tp: 10 for tp in tps}
    # No other group (the worker's) got anything committed on this topic.
    assert committed_offsets(bootstrap, market.sc.group, tps) == {tp: UNSET for tp in tps}


def test_two_tails_in_the_same_group_share_the_partitions(
    market: Market, tails: list[Tail], fresh_topic: str
) -> None:
    group = unique("tail-shared")
    # --from-beginning: a partition that changes hands starts at its oldest message (the test broker's
    # "latest" offset is wrong, see TESTING.md). Nothing is committed before the messages exist.
    args = [fresh_topic, "--group", group, "--from-beginning", "--max", "5", "--format", "json"]
    first = Tail(market, *args)
    tails.append(first)
    wait_for(lambda: any(line.startswith("tail: partitions") for line in first.err), 60, what="first join")
    second = Tail(market, *args)
    tails.append(second)

    def split() -> bool:
        # Each process's latest assignment: one partition each, once the group has rebalanced.
        latest = [next((x for x in reversed(t.err) if x.startswith("tail: partitions")), "") for t in tails]
        return sorted(latest) == [f"tail: partitions {fresh_topic}[0]", f"tail: partitions {fresh_topic}[1]"]

    wait_for(split, 90, interval=0.2, what="the two tails to split the partitions")
    time.sleep(0.5)  # let both fetchers start from the end of their partition
    bootstrap = market.sc.servers.bootstrap
    for partition in (0, 1):
        produce(bootstrap, fresh_topic, [tick(30 + i / 100, i) for i in range(5)], partition)
    seen = []
    for tail in (first, second):
        assert tail.wait(60) == 0, tail.err
        partitions = {r["partition"] for r in tail.json_rows()}
        assert len(partitions) == 1 and len(tail.out) == 5
        seen.extend((r["partition"], r["offset"]) for r in tail.json_rows())
    assert sorted(seen) == [(p, o) for p in (0, 1) for o in range(5)]


def test_ctrl_c_stops_tail_cleanly_with_exit_0(market: Market, tails: list[Tail], fresh_topic: str) -> None:
    tail = Tail(market, fresh_topic)
    tails.append(tail)
    wait_for(lambda: any(line.startswith("tail: partitions") for line in tail.err), 30, what="tail started")
    tail.proc.send_signal(signal.SIGINT)
    assert tail.wait(30) == 0
    assert tail.err[-1] == "tail: 0 message(s)"
    assert not any("Traceback" in line for line in tail.err)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-topic-xyz"], "topic 'no-such-topic-xyz' does not exist"),
        (["--group", "WORKER"], "is the worker's group"),
        (["--tz", "Nowhere/Land"], "unknown time zone"),
        (["^zzz-no-such-topic.*"], "topic pattern '^zzz-no-such-topic.*' matches no topic on 127.0.0.1:"),
        (["^zzz-no-such-topic.*", "--group", "g-none"], "matches no topic"),
        (["^("], "topic pattern '^(' is not a valid regular expression"),
    ],
)
def test_tail_bad_input_exit_2(cli: Any, market: Market, args: list[str], message: str) -> None:
    args = [market.sc.group if a == "WORKER" else a for a in args]
    code, out, err = cli("tail", *args, "--max", "1")
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
