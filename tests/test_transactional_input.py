"""Input written by a transactional producer (`transactional.id`: Kafka Streams, Flink, Connect with
exactly-once source support), on Apache Kafka 4.4 (issue 18.2).

Every transaction leaves a control record (its commit or abort marker) at an offset of its own in each
partition it wrote to; a read_committed consumer never receives markers or aborted records. Before, tickpipe
committed `offset + 1` of the last message it stored, which stops one short of the final marker: an idle
group showed lag 1 forever. Now, when everything a partition delivered is durable, the worker commits the
consumer's position (past the markers).

- 10 transactions of 100 ticks into a 2-partition topic, some aborted, committed and aborted ones
  interleaved on both partitions (one of each writes to one partition only, the last one is aborted so both
  partitions end with an abort marker): exactly the committed ticks are stored, none of the aborted ones,
  and once idle the committed offset equals the end offset on every partition: the worker's lag gauge and
  `pipeline status` show lag 0.
- A worker killed with SIGKILL while its committed offset is inside a committed transaction's range, and
  restarted: every committed tick stored once, none of the aborted ones, lag 0 at the end; a commit monitor
  checks throughout that no committed offset is ever ahead of the stored data.
"""

from __future__ import annotations

import signal
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.harness import (
    TP,
    CommitMonitor,
    ProcessWorker,
    Scenario,
    dead_letter_count,
    stored_ids,
    wait_for,
)
from tests.kafka4_support import end_offsets_of, log_events, status_json, status_lags, tick

pytestmark = [
    pytest.mark.servers,
    pytest.mark.write_path,
    pytest.mark.apache_kafka("transactions (a transactional producer and read_committed)"),
]


@dataclass
class Transaction:
    partitions: tuple[int, ...]
    commit: bool
    offsets: dict[int, list[int]] = field(default_factory=dict)  # partition -> offsets of its messages


# (partitions written, committed?) for 10 transactions: committed and aborted ones interleaved on both
# partitions, one aborted and one committed transaction on a single partition, two aborts in a row, and an
# aborted one last (both partitions end with an abort marker).
LAYOUT = [
    ((0, 1), True),
    ((0, 1), False),
    ((0, 1), True),
    ((0,), False),
    ((0, 1), False),
    ((0, 1), True),
    ((1,), True),
    ((0, 1), True),
    ((0, 1), True),
    ((0, 1), False),
]


def produce_transactions(sc: Scenario, ticks_per_transaction: int) -> list[Transaction]:
    """Run LAYOUT through one transactional producer. Each transaction's messages are flushed (written to
    the log, with offsets) before it commits or aborts, so aborted records really are in the partitions."""
    topic = sc.topics[0]
    producer = Producer(
        {
            "bootstrap.servers": sc.servers.bootstrap,
            "transactional.id": f"{sc.group}-txn",
            "linger.ms": 5,
        }
    )
    producer.init_transactions(60)
    transactions: list[Transaction] = []
    n = 0
    for partitions, commit in LAYOUT:
        txn = Transaction(partitions, commit, {p: [] for p in partitions})
        errors: list[str] = []

        def delivered(err: object, msg: object, txn: Transaction = txn, errors: list[str] = errors) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                txn.offsets[msg.partition()].append(msg.offset())  # type: ignore[attr-defined]

        producer.begin_transaction()
        for i in range(ticks_per_transaction):
            partition = partitions[i % len(partitions)]
            producer.produce(topic, value=tick(n), key=b"PETR4", partition=partition, on_delivery=delivered)
            n += 1
            if i % 1000 == 999:
                producer.poll(0)
        assert producer.flush(60) == 0 and not errors, errors
        if commit:
            producer.commit_transaction(60)
        else:
            producer.abort_transaction(60)
        assert sum(len(o) for o in txn.offsets.values()) == ticks_per_transaction
        transactions.append(txn)
    return transactions


def committed_ids(sc: Scenario, transactions: list[Transaction]) -> set[tuple[str, int, int]]:
    topic = sc.topics[0]
    return {
        (topic, p, o) for t in transactions if t.commit for p, offsets in t.offsets.items() for o in offsets
    }


def assert_stored_exactly(sc: Scenario, transactions: list[Transaction]) -> None:
    with sc.mongo() as client:
        ids = stored_ids(client[sc.database], sc.topics)
    expected = committed_ids(sc, transactions)
    aborted = {
        (sc.topics[0], p, o) for t in transactions if not t.commit for p, os in t.offsets.items() for o in os
    }
    assert len(ids) == len(set(ids)), "duplicated documents"
    assert not set(ids) & aborted, f"{len(set(ids) & aborted)} ticks of aborted transactions stored"
    assert set(ids) == expected, f"missing {len(expected - set(ids))}, foreign {len(set(ids) - expected)}"


def markers_between(transactions: list[Transaction], ends: dict[TP, int]) -> None:
    """What the test relies on: each partition's end offset lies past its last message (the final markers)."""
    for (_topic, partition), end in ends.items():
        last = max(o for t in transactions for o in t.offsets.get(partition, []))
        assert end > last + 1, f"partition {partition}: end {end}, last message {last}: no marker after it"


def lag_gauges(port: int, topic: str) -> dict[int, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {}
    for line in text.splitlines():
        if line.startswith("tickpipe_consumer_lag{") and f'topic="{topic}"' in line:
            partition = int(line.split('partition="', 1)[1].split('"', 1)[0])
            found[partition] = float(line.rsplit(" ", 1)[1])
    return found


def test_only_committed_transactions_are_stored_and_an_idle_group_reaches_lag_0(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("petr4",), partitions=2)
    topic = sc.topics[0]
    transactions = produce_transactions(sc, 100)
    tps = [(topic, 0), (topic, 1)]
    ends = end_offsets_of(sc.servers.bootstrap, tps)
    markers_between(transactions, ends)
    assert len(committed_ids(sc, transactions)) == 600
    sc.ends = dict(ends)

    env = sc.env(
        PIPELINE_METRICS__ENABLED="true", PIPELINE_METRICS__HOST="127.0.0.1", PIPELINE_METRICS__PORT="0"
    )
    worker = ProcessWorker(env, tmp_path / "worker.log").start()
    try:
        wait_for(
            lambda: sc.committed(tps) == ends or not worker.alive(),
            timeout=120,
            interval=0.3,
            what="committed offsets equal to the end offsets",
        )
        assert worker.alive(), worker.log_text()[-3000:]
        started = next(e for e in log_events(worker.log_text()) if e.get("msg") == "worker started")
        port = int(started["metrics_port"])
        wait_for(
            lambda: lag_gauges(port, topic) == {0: 0.0, 1: 0.0},
            timeout=30,
            interval=0.5,
            what="the worker's lag gauges at 0",
        )
        # Idle, and it stays there.
        time.sleep(2)
        assert sc.committed(tps) == ends == end_offsets_of(sc.servers.bootstrap, tps)
        during = status_json(sc.env())
        worker.terminate(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.stop()
    assert "Traceback" not in worker.log_text()
    assert_stored_exactly(sc, transactions)
    assert dead_letter_count(sc) == 0
    after = status_json(sc.env())
    for data in (during, after):
        assert status_lags(data) == {tps[0]: 0, tps[1]: 0}, data
        (only,) = data["topics"]
        assert only["lag_total"] == 0 and only["stored_documents"] == 600, only
        assert {p["partition"]: p["committed"] for p in only["partitions"]} == {
            0: ends[tps[0]],
            1: ends[tps[1]],
        }


def _inside_a_committed_transaction(
    committed: dict[TP, int], transactions: list[Transaction]
) -> list[tuple[TP, int]]:
    """(partition, transaction index) where the committed offset splits a committed transaction's messages:
    some of them are below it, some at or above."""
    found = []
    for tp, offset in committed.items():
        for index, txn in enumerate(transactions):
            messages = txn.offsets.get(tp[1], [])
            if txn.commit and messages and messages[0] < offset <= messages[-1]:
                found.append((tp, index))
    return found


def test_a_worker_killed_inside_a_transactions_range_stores_every_committed_tick_once(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("petr4",), partitions=2)
    sc.add_verification_index(sc.topics)
    topic = sc.topics[0]
    tps = [(topic, 0), (topic, 1)]
    transactions = produce_transactions(sc, 1_000)  # 10,000 ticks: enough that the kill falls mid-stream
    ends = end_offsets_of(sc.servers.bootstrap, tps)
    markers_between(transactions, ends)
    sc.ends = dict(ends)
    expected = committed_ids(sc, transactions)
    produced: dict[TP, list[int]] = {tp: sorted(o for _t, p, o in expected if p == tp[1]) for tp in tps}
    # The kill comes once partition 0 is committed into the 6th transaction (a committed one).
    target = transactions[5].offsets[0][len(transactions[5].offsets[0]) // 2]
    assert transactions[5].commit

    env = sc.env(PIPELINE_BATCH__MAX_MESSAGES="50")
    log = tmp_path / "worker.log"
    monitor = CommitMonitor(sc, {topic: topic}, produced).start()
    try:
        worker = ProcessWorker(env, log).start()
        try:
            wait_for(
                lambda: sc.committed([tps[0]])[tps[0]] >= target or not worker.alive(),
                timeout=120,
                interval=0.02,
                what=f"partition 0 committed up to {target}",
            )
            # Freeze it (no further commit can start) and kill it once its committed offset splits a
            # committed transaction; if it stands on a boundary, let it run a little and look again.
            at_kill: dict[TP, int] = {}
            for _attempt in range(200):
                assert worker.alive(), worker.log_text()[-3000:]
                worker.terminate(signal.SIGSTOP)
                time.sleep(0.05)
                at_kill = sc.committed(tps)
                if _inside_a_committed_transaction(at_kill, transactions):
                    break
                worker.terminate(signal.SIGCONT)
                time.sleep(0.01)
            worker.kill9()
        finally:
            worker.stop()
        after_kill = sc.committed(tps)
        assert after_kill != ends, "ingestion finished before the kill; the test needs more data"
        inside = _inside_a_committed_transaction(after_kill, transactions)
        assert inside, f"committed at the kill {after_kill}: not inside a committed transaction"

        final = ProcessWorker(env, log).start()
        try:
            wait_for(
                lambda: sc.committed(tps) == ends or not final.alive(),
                timeout=300,
                interval=0.3,
                what="all committed after the restart",
            )
            assert final.alive(), final.log_text()[-3000:]
            final.terminate(signal.SIGTERM)
            assert final.wait(30) == 0
        finally:
            final.stop()
    finally:
        monitor.stop()
    assert not monitor.violations, monitor.violations[:5]
    assert monitor.ranges_checked >= 3, "the monitor barely observed any commit"
    assert "Traceback" not in log.read_text()
    assert_stored_exactly(sc, transactions)
    assert dead_letter_count(sc) == 0
    assert sc.committed(tps) == ends == end_offsets_of(sc.servers.bootstrap, tps)
    data = status_json(sc.env())
    assert status_lags(data) == {tps[0]: 0, tps[1]: 0}, data
