"""`pipeline offsets show|reset` on the real test broker: after a full run, a reset to earliest re-reads
everything as duplicates (no new document); a reset to a time re-reads only the later offsets; a reset is
refused while the group has members; bad input is one line, exit 2."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.harness import Scenario, run_cli_in_process, stored_count, thread_worker, wait_for, wait_members

pytestmark = [pytest.mark.servers]


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, sc: Scenario, config: Path, *argv: str, **env: str
) -> tuple[int, str, str]:
    return run_cli_in_process(monkeypatch, capsys, {**sc.env(), "PIPELINE_CONFIG": str(config), **env}, *argv)


def run_until_committed(sc: Scenario) -> Any:
    with thread_worker(sc.settings()) as runner:
        wait_for(lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=180, interval=0.3, what="committed")
        assert runner.stop() == 0
    return runner.worker.totals


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "empty.yaml"
    path.write_text("{}\n")
    return path


def test_reset_to_earliest_after_a_full_run_re_reads_everything_as_duplicates(
    make_scenario: Callable[..., Scenario], config: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sc = make_scenario()
    sc.produce(600)
    first = run_until_committed(sc)
    assert first.stored == 600
    code, out, err = cli(monkeypatch, capsys, sc, config, "offsets", "show", "--format", "json")
    assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert {(r["topic"], r["partition"]): (r["committed"], r["lag"]) for r in rows} == {
        tp: (end, 0) for tp, end in sc.ends.items()
    }
    # Dry run: the plan, nothing changed.
    code, out, err = cli(monkeypatch, capsys, sc, config, "offsets", "reset", "--to-earliest", "--dry-run")
    assert code == 0, err
    assert "dry run, nothing changed" in out and "re-reads" in out
    assert sc.committed(list(sc.ends)) == sc.ends
    code, out, err = cli(
        monkeypatch, capsys, sc, config, "offsets", "reset", "--to-earliest", "--format", "json"
    )
    assert code == 0, err
    plan = [orjson.loads(line) for line in out.splitlines()]
    assert {(p["topic"], p["partition"]): (p["current"], p["new"]) for p in plan} == {
        tp: (end, 0) for tp, end in sc.ends.items()
    }
    assert f"committed {len(sc.ends)} offset(s)" in err
    assert sc.committed(list(sc.ends)) == dict.fromkeys(sc.ends, 0)
    again = run_until_committed(sc)
    assert again.stored == 0 and again.duplicates == 600  # re-read, recognised, not stored twice
    assert stored_count(sc) == 600


def test_reset_to_a_time_re_reads_only_the_later_offsets(
    make_scenario: Callable[..., Scenario], config: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sc = make_scenario()
    sc.produce(300, seed=1)
    before = dict(sc.ends)
    time.sleep(1.5)
    boundary = datetime.now(UTC)
    time.sleep(1.5)
    sc.produce(240, seed=2)
    assert run_until_committed(sc).stored == 540
    code, out, err = cli(
        monkeypatch,
        capsys,
        sc,
        config,
        "offsets",
        "reset",
        "--to-time",
        boundary.isoformat(),
        "--format",
        "json",
    )
    assert code == 0, err
    plan = {(p["topic"], p["partition"]): p["new"] for p in map(orjson.loads, out.splitlines())}
    assert plan == {tp: before.get(tp, 0) for tp in sc.ends}  # the first offset of the second batch
    again = run_until_committed(sc)
    assert again.stored == 0 and again.duplicates == 240
    # A time after the last message: the end (nothing re-read); a relative time works too.
    code, out, err = cli(
        monkeypatch, capsys, sc, config, "offsets", "reset", "--to-time", "now", "--format", "json"
    )
    assert {p["new"] for p in map(orjson.loads, out.splitlines())} == set(sc.ends.values())
    code, out, err = cli(monkeypatch, capsys, sc, config, "offsets", "reset", "--to-time", "-1h", "--dry-run")
    assert code == 0 and "re-reads" in out, err


def test_a_reset_is_refused_while_the_group_has_members_and_explicit_offsets_must_be_in_range(
    make_scenario: Callable[..., Scenario], config: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sc = make_scenario(partitions=2)
    sc.produce(100)
    topic = sc.topics[0]
    with thread_worker(sc.settings()) as runner:
        wait_members(sc.servers.bootstrap, sc.group, 1)
        wait_for(lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=120, interval=0.3, what="committed")
        code, out, err = cli(monkeypatch, capsys, sc, config, "offsets", "reset", "--to-earliest")
        assert code == 1 and len(err.strip().splitlines()) == 1, (code, out, err)
        assert "not resetting" in err and "1 active member(s)" in err and "nothing was changed" in err
        assert sc.committed(list(sc.ends)) == sc.ends
        # A dry run still shows the plan, and says it would be refused.
        code, out, err = cli(
            monkeypatch, capsys, sc, config, "offsets", "reset", "--to-earliest", "--dry-run"
        )
        assert code == 0 and "the reset itself would be refused" in out, (out, err)
        runner.stop()
    end = sc.ends[(topic, 0)]
    code, out, err = cli(
        monkeypatch,
        capsys,
        sc,
        config,
        "offsets",
        "reset",
        "--to-offset",
        str(end + 5),
        "--topic",
        f"{topic}:0",
    )
    assert code == 2 and f"offset {end + 5} is outside {topic}[0]'s retained range 0..{end}" in err, err
    code, out, err = cli(
        monkeypatch,
        capsys,
        sc,
        config,
        "offsets",
        "reset",
        "--to-offset",
        "3",
        "--topic",
        f"{topic}:0",
        "--format",
        "json",
    )
    assert code == 0, err
    assert [orjson.loads(line)["new"] for line in out.splitlines()] == [3]
    assert sc.committed([(topic, 0), (topic, 1)]) == {(topic, 0): 3, (topic, 1): sc.ends[(topic, 1)]}


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        (("offsets", "show", "--topic", "no-such-topic"), 2, "topic 'no-such-topic' does not exist"),
        (("offsets", "show", "--topic", "{t}:7"), 2, "has no partition 7"),
        (("offsets", "show", "--topic", "bad/name"), 2, "is not a valid Kafka topic name"),
        (("offsets", "reset", "--to-time", "whenever"), 2, "invalid time 'whenever'"),
    ],
)
def test_bad_input_is_one_line(
    make_scenario: Callable[..., Scenario],
    config: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    argv: tuple[str, ...],
    code: int,
    fragment: str,
) -> None:
    sc = make_scenario(partitions=1)
    argv = tuple(a.replace("{t}", sc.topics[0]) for a in argv)
    got, out, err = cli(monkeypatch, capsys, sc, config, *argv)
    assert got == code and len(err.strip().splitlines()) == 1 and fragment in err, (got, out, err)


def test_kafka_unreachable_is_one_line_within_the_timeout(
    make_scenario: Callable[..., Scenario], config: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    sc = make_scenario(partitions=1, create=False)
    started = time.monotonic()
    code, _out, err = cli(
        monkeypatch,
        capsys,
        sc,
        config,
        "offsets",
        "show",
        "--timeout",
        "2",
        PIPELINE_KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:9",
    )
    assert code == 1 and len(err.strip().splitlines()) == 1 and "127.0.0.1:9" in err, (code, err)
    assert time.monotonic() - started < 10
