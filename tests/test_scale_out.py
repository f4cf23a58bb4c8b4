"""Scale-out: two `pipeline run` processes in one consumer group share the partitions and, together, store
every message exactly once (docs/benchmarks.md, "Scaling past one process")."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ProcessWorker, Scenario, assert_exactly_once, wait_for, wait_members

pytestmark = [pytest.mark.servers, pytest.mark.write_path]


def _events(worker: ProcessWorker, message: str) -> list[dict[str, Any]]:
    events = []
    for line in worker.log_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("msg") == message:
                events.append(entry)
    return events


def test_two_worker_processes_split_the_partitions_and_store_everything_once(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    total = 20_000
    sc = make_scenario(("petr4", "vale3"), partitions=3)
    sc.add_verification_index(sc.topics)
    everything = {f"{t}[{p}]" for t in sc.topics for p in range(3)}
    env = sc.env()
    workers = [ProcessWorker(env, tmp_path / f"w{i}.log").start() for i in (1, 2)]
    try:

        def both_own_partitions() -> bool:
            return all(_events(w, "partitions assigned") for w in workers)

        # The ticks are produced once both workers share the partitions: neither can drain the stream alone
        # before the other has joined, however fast the servers are.
        wait_for(both_own_partitions, timeout=60, interval=0.2, what="both workers to be assigned partitions")
        wait_members(sc.servers.bootstrap, sc.group, 2)
        report = sc.produce(total)
        assert {f"{t}[{p}]" for t, p in sc.ends} == everything
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=300, interval=0.5, what="all committed"
        )
        for w in workers:
            assert w.alive(), w.log_text()[-3000:]
            w.terminate(signal.SIGTERM)
        codes = [w.wait(30) for w in workers]
    finally:
        for w in workers:
            w.stop()
    assert codes == [0, 0], [w.log_text()[-3000:] for w in workers]

    # The group's final assignment: disjoint, non-empty, covering every partition.
    final = [set(_events(w, "partitions assigned")[-1]["partitions"].split(",")) for w in workers]
    assert all(final), final
    assert not final[0] & final[1], final
    assert final[0] | final[1] == everything, final

    # Each stored some; together exactly the total (a re-delivered message is a duplicate, not stored twice).
    stopping = [_events(w, "worker stopping")[-1] for w in workers]
    assert all(s["stored"] > 0 for s in stopping), stopping
    assert sum(s["stored"] for s in stopping) == total, stopping
    assert_exactly_once(sc, report)
