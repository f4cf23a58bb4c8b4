"""`pipeline produce --start T --tick-interval-ms N [--session HH:MM-HH:MM --session-tz ZONE]` on the real
test broker: ticks carry market time, the Kafka records keep wall-clock timestamps."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.harness import Scenario, run_cli_in_process

pytestmark = [pytest.mark.servers]
SP = ZoneInfo("America/Sao_Paulo")


def produce(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, sc: Scenario, tmp_path: Path, *argv: str
) -> tuple[int, str, str]:
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    env = {**sc.env(), "PIPELINE_CONFIG": str(config), "PIPELINE_LOG__LEVEL": "WARNING"}
    return run_cli_in_process(
        monkeypatch, capsys, env, "produce", "--topics", sc.topics[0], "--seed", "3", *argv
    )


def read_all(sc: Scenario) -> list[tuple[datetime, datetime]]:
    """(tick ts, Kafka record timestamp) of every record of the scenario's topic, partition 0, in order."""
    consumer = Consumer(
        {"bootstrap.servers": sc.servers.bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(sc.topics[0], 0, OFFSET_BEGINNING)])
    out = []
    try:
        while True:
            batch = consumer.consume(100, 3.0)
            if not batch:
                return out
            for message in batch:
                assert message.error() is None
                ts = datetime.fromisoformat(orjson.loads(message.value())["ts"])
                out.append((ts, datetime.fromtimestamp(message.timestamp()[1] / 1000, UTC)))
    finally:
        consumer.close()


def test_ticks_carry_market_time_and_records_the_wall_clock(
    make_scenario: Callable[..., Scenario], monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    sc = make_scenario(tickers=("petr4",), partitions=1)
    started = datetime.now(UTC)
    code, out, err = produce(
        monkeypatch,
        capsys,
        sc,
        tmp_path,
        "--count",
        "6",
        "--start",
        "2026-01-05T13:00:00Z",
        "--tick-interval-ms",
        "500",
    )
    assert code == 0, err
    assert "market time 2026-01-05T13:00:00.000Z to 2026-01-05T13:00:02.500Z" in out
    records = read_all(sc)
    assert [ts for ts, _ in records] == [
        datetime(2026, 1, 5, 13, tzinfo=UTC) + timedelta(milliseconds=500 * i) for i in range(6)
    ]
    assert all(
        started - timedelta(seconds=5) <= wall <= datetime.now(UTC) + timedelta(seconds=5)
        for _, wall in records
    )


def test_session_hours_skip_to_the_next_open(
    make_scenario: Callable[..., Scenario], monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    sc = make_scenario(tickers=("vale3",), partitions=1)
    code, _out, err = produce(
        monkeypatch,
        capsys,
        sc,
        tmp_path,
        "--count",
        "3",
        "--start",
        "2026-01-09T16:59:58-03:00",
        "--tick-interval-ms",
        "1000",
        "--session",
        "10:00-17:00",
        "--session-tz",
        "America/Sao_Paulo",
    )
    assert code == 0, err
    assert [ts.astimezone(SP) for ts, _ in read_all(sc)] == [
        datetime(2026, 1, 9, 16, 59, 58, tzinfo=SP),
        datetime(2026, 1, 9, 16, 59, 59, tzinfo=SP),
        datetime(2026, 1, 12, 10, 0, tzinfo=SP),  # Friday's close -> Monday's open
    ]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("--start", "yesterday"), "invalid time 'yesterday'"),
        (("--session", "10-17"), "--session: session '10-17' is not HH:MM-HH:MM"),
        (("--session", "10:00-11:00", "--session-tz", "Mars/Olympus"), "unknown time zone 'Mars/Olympus'"),
        (("--session-tz", "America/Sao_Paulo"), "--session-tz needs --session"),
        (("--tick-interval-ms", "0"), "must be >= 1"),
    ],
)
def test_bad_market_time_options_are_one_line_exit_2(
    make_scenario: Callable[..., Scenario],
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    tmp_path: Path,
    argv: tuple[str, ...],
    fragment: str,
) -> None:
    sc = make_scenario(tickers=("itub4",), partitions=1, create=False)
    try:
        code, _out, err = produce(monkeypatch, capsys, sc, tmp_path, "--count", "1", *argv)
    except SystemExit as exc:  # rejected by the argument parser itself
        code, err = int(exc.code or 0), capsys.readouterr().err
    assert code == 2 and fragment in err and "Traceback" not in err, (code, err)
    assert len([line for line in err.splitlines() if line.startswith(("error", "pipeline"))]) == 1, err
