"""`pipeline query ticks|ohlc|stats|latest` on ticks written by the real worker: formats, time zones, the
chart, and one-line errors with exit code 2 (bad input) or 1 (MongoDB unreachable)."""

from __future__ import annotations

import csv
import io
import json
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pymongo import MongoClient

from pipeline.dev.process import free_port
from pipeline.read import query as q
from tests.harness import REPO
from tests.query_data import Market

pytestmark = pytest.mark.servers
SAO_PAULO = ZoneInfo("America/Sao_Paulo")


def _iso(ts: datetime, zone: Any = UTC) -> str:
    return ts.astimezone(zone).isoformat(timespec="milliseconds")


def test_query_ticks_in_json_csv_and_table(cli: Any, market: Market) -> None:
    sent = market.ticks["PETR4"]
    span = ["--from", _iso(sent[10].ts), "--to", _iso(sent[20].ts)]
    code, out, err = cli("query", "ticks", "petr4", *span, "--format", "json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    # --from given: oldest first by default; the half-open range holds exactly ticks 10..19.
    assert [(r["ts"], r["price"], r["volume"]) for r in rows] == [
        (_iso(s.ts), s.price, s.volume) for s in sent[10:20]
    ]
    assert [(r["topic"], r["partition"], r["offset"]) for r in rows] == [
        (s.topic, s.partition, s.offset) for s in sent[10:20]
    ]

    # A naive --from is UTC; --tz changes only how times are shown, with the offset in every value.
    naive = sent[10].ts.replace(tzinfo=None).isoformat()
    shown_in = ["--tz", "America/Sao_Paulo"]
    code, out, _ = cli(
        "query", "ticks", "PETR4", "--from", naive, "--limit", "3", "--format", "csv", *shown_in
    )
    assert code == 0
    table = list(csv.DictReader(io.StringIO(out)))
    assert [r["ts"] for r in table] == [_iso(s.ts, SAO_PAULO) for s in sent[10:13]]
    assert all(r["ts"].endswith("-03:00") for r in table)
    assert [float(r["price"]) for r in table] == [s.price for s in sent[10:13]]

    # No --from: the newest ticks first. The table names the zone in the header.
    code, out, _ = cli("query", "ticks", "PETR4", "--limit", "3", "--tz", "America/Sao_Paulo")
    assert code == 0
    assert "time (America/Sao_Paulo, UTC-03:00)" in out and "newest first" in out
    lines = [line for line in out.splitlines() if "PETR4" in line and "│" in line]
    expected = [s.ts.astimezone(SAO_PAULO).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] for s in sent[-1:-4:-1]]
    assert [line.split("│")[1].strip() for line in lines] == expected
    code, out, _ = cli("query", "ticks", "PETR4", "--limit", "2", "--oldest-first", "--format", "json")
    assert [json.loads(line)["ts"] for line in out.splitlines()] == [_iso(s.ts) for s in sent[:2]]


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_query_ohlc_json_matches_the_library_and_plots_a_candlestick_chart(
    cli: Any, market: Market, tmp_path: Path
) -> None:
    code, out, err = cli("query", "ohlc", "VALE3", "--interval", "15m", "--format", "json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    with MongoClient(market.sc.servers.mongo_uri) as client:
        bars = q.ohlc(client[market.sc.database], "VALE3", "15m")
    assert len(rows) == len(bars) > 5
    for row, bar in zip(rows, bars, strict=True):
        assert row["start"] == _iso(bar.start)
        assert (row["open"], row["high"], row["low"], row["close"]) == (
            bar.open,
            bar.high,
            bar.low,
            bar.close,
        )
        assert (row["volume"], row["trades"], row["vwap"]) == (bar.volume, bar.trades, bar.vwap)

    chart = tmp_path / "vale3.png"
    plot = ["--plot", str(chart), "--tz", "America/Sao_Paulo"]
    code, out, err = cli("query", "ohlc", "vale3", "--interval", "5m", *plot)
    assert code == 0, err
    assert f"chart written to {chart}" in err
    assert "VALE3 5m bars" in out and "bar start (America/Sao_Paulo, UTC-03:00)" in out
    assert _png_size(chart) == (1200, 700)
    assert 20_000 < chart.stat().st_size < 2_000_000
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_query_stats_and_latest(cli: Any, market: Market) -> None:
    code, out, err = cli("query", "stats", "--format", "json")
    assert code == 0, err
    stats = {r["symbol"]: r for r in map(json.loads, out.splitlines())}
    assert set(stats) == {"PETR4", "VALE3"}
    for symbol, sent in market.ticks.items():
        row = stats[symbol]
        assert (row["collection"], row["count"]) == (market.topic_of[symbol], len(sent))
        assert (row["first_ts"], row["last_ts"]) == (_iso(sent[0].ts), _iso(sent[-1].ts))
        assert row["total_volume"] == sum(s.volume for s in sent)

    code, out, _ = cli("query", "stats", "vale3")
    assert code == 0 and "VALE3" in out and "PETR4" not in out and f"{len(market.ticks['VALE3'])}" in out

    code, out, err = cli("query", "latest", "--format", "csv")
    assert code == 0, err
    latest = {r["symbol"]: r for r in csv.DictReader(io.StringIO(out))}
    for symbol, sent in market.ticks.items():
        assert latest[symbol]["ts"] == _iso(sent[-1].ts)
        assert float(latest[symbol]["price"]) == sent[-1].price
        assert int(latest[symbol]["offset"]) == sent[-1].offset

    code, out, _ = cli("query", "latest")
    assert code == 0 and "latest tick of each symbol" in out and "time (UTC)" in out


BAD_INPUT = {
    "unknown symbol": (["query", "ticks", "XPTO3"], "unknown symbol 'XPTO3'"),
    "unknown symbol, csv": (["query", "ticks", "XPTO3", "--format", "csv"], "unknown symbol 'XPTO3'"),
    "unknown symbol, json": (["query", "ohlc", "xpto3", "--interval", "1h", "--format", "json"], "XPTO3"),
    "operator as symbol": (["query", "ticks", "$gt"], "invalid symbol '$gt'"),
    "document as symbol": (["query", "ohlc", '{"$ne": 1}', "--interval", "1m"], "invalid symbol"),
    "from after to": (
        ["query", "ticks", "PETR4", "--from", "2026-02-01", "--to", "2026-01-01"],
        "is after",
    ),
    "empty range": (  # half-open: from = to selects nothing, refused as the HTTP API refuses it
        [
            "query",
            "ohlc",
            "PETR4",
            "--interval",
            "1h",
            "--from",
            "2026-01-05T13:00",
            "--to",
            "2026-01-05T13:00",
        ],
        "invalid range: from 2026-01-05T13:00:00.000+00:00 is not before to",
    ),
    "bad interval": (["query", "ohlc", "PETR4", "--interval", "2m"], "invalid interval '2m'"),
    "bad tz": (["query", "ticks", "PETR4", "--tz", "Mars/Olympus_Mons"], "unknown time zone"),
    "bad time": (["query", "ticks", "PETR4", "--from", "yesterday"], "invalid time 'yesterday'"),
    "bad relative time": (["query", "ohlc", "PETR4", "--interval", "1h", "--to=-3y"], "invalid time '-3y'"),
    "plot not png": (["query", "ohlc", "PETR4", "--interval", "1h", "--plot", "chart.jpg"], "PNG"),
    "unknown stats symbol": (["query", "stats", "PETR4", "ITUB4"], "unknown symbol 'ITUB4'"),
    "unknown latest symbol": (["query", "latest", "ITUB4"], "unknown symbol 'ITUB4'"),
    "bad align zone": (
        ["query", "ohlc", "PETR4", "--interval", "1d", "--align-tz", "Mars/Base"],
        "time zone",
    ),
    "operator as align zone": (
        ["query", "ohlc", "PETR4", "--interval", "1d", "--align-tz", "$tz"],
        "time zone",
    ),
    "nothing to plot": (
        [
            "query",
            "ohlc",
            "PETR4",
            "--interval",
            "1h",
            "--from",
            "2020-01-01",
            "--to=2020-01-02",
            "--plot",
            "x.png",
        ],
        "no bars in the range: nothing to plot",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_on_stderr_and_exit_code_2(cli: Any, case: str) -> None:
    argv, message = BAD_INPUT[case]
    code, out, err = cli(*argv)
    assert code == 2
    assert out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and message in err, err


def test_mongodb_unreachable_is_one_line_and_exit_code_1(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_MONGO__URI", f"mongodb://127.0.0.1:{free_port()}/?directConnection=true")
    monkeypatch.setenv("PIPELINE_MONGO__SERVER_SELECTION_TIMEOUT_MS", "300")
    for argv in (
        ["query", "stats"],
        ["query", "ticks", "PETR4"],
        ["query", "ohlc", "PETR4", "--interval", "1m"],
    ):
        code, out, err = cli(*argv)
        assert code == 1 and out == ""
        assert len(err.splitlines()) == 1, err
        assert err.startswith("error: cannot query MongoDB at mongodb://127.0.0.1:"), err


def test_console_script_exit_codes_and_no_traceback(market: Market) -> None:
    """The real process: output flushed, exit codes, and no traceback on bad input."""

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline", *argv],
            env=market.subprocess_env(),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = run("query", "latest", "--format", "json")
    assert ok.returncode == 0, ok.stderr
    assert {json.loads(line)["symbol"] for line in ok.stdout.splitlines()} == {"PETR4", "VALE3"}
    bad = run("query", "ticks", '{"$ne": 1}')
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("error: invalid symbol")


def test_relative_times_work_without_equals_sign(cli: Any, market: Market) -> None:
    # The data is in January 2026: the last hour holds none of it; the last 400 weeks all of it.
    code, out, err = cli("query", "ticks", "PETR4", "--from", "-1h", "--format", "json")
    assert code == 0 and out == "", err
    code, out, err = cli(
        "query", "ticks", "PETR4", "--from", "-400w", "--to", "-1s", "--limit", "0", "--format", "csv"
    )
    assert code == 0, err
    assert len(out.splitlines()) == 1 + len(market.ticks["PETR4"])
    code, out, err = cli("query", "ohlc", "PETR4", "--interval", "1d", "--to", "-1.5d", "--format", "json")
    assert code == 0 and len(out.splitlines()) == 1, err


def test_ohlc_aligned_to_a_market_zone(cli: Any, market: Market) -> None:
    # The ticks are 13:00-15:00 UTC on 2026-01-05: one daily bar, at UTC midnight or at Sao Paulo midnight.
    code, out, err = cli("query", "ohlc", "PETR4", "--interval", "1d", "--format", "json")
    assert code == 0, err
    assert [json.loads(line)["start"] for line in out.splitlines()] == ["2026-01-05T00:00:00.000+00:00"]
    aligned = ["query", "ohlc", "PETR4", "--interval", "1d", "--align-tz", "America/Sao_Paulo"]
    code, out, err = cli(*aligned, "--format", "json")
    assert code == 0, err
    (row,) = [json.loads(line) for line in out.splitlines()]
    assert row["start"] == "2026-01-05T00:00:00.000-03:00"  # shown in the alignment zone by default
    assert row["trades"] == len(market.ticks["PETR4"])
    code, out, _ = cli(*aligned, "--format", "json", "--tz", "UTC")
    assert json.loads(out)["start"] == "2026-01-05T03:00:00.000+00:00"
    code, out, _ = cli(*aligned)
    assert code == 0 and "bars aligned to America/Sao_Paulo" in out
    assert "bar start (America/Sao_Paulo, UTC-03:00)" in out and "2026-01-05 00:00:00.000" in out


def test_a_large_table_is_cut_with_a_notice_while_json_and_csv_stream_everything(
    cli: Any, market: Market, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import reading

    monkeypatch.setattr(reading, "TABLE_MAX_ROWS", 50)
    sent = market.ticks["PETR4"]
    code, out, err = cli("query", "ticks", "PETR4", "--limit", "0", "--oldest-first")
    assert code == 0, err
    rows = [line for line in out.splitlines() if "│" in line and "PETR4" in line]
    assert len(rows) == 50
    assert "table cut at 50 rows (more rows match): use --format csv or --format json" in out
    code, out, _ = cli("query", "ticks", "PETR4", "--limit", "50")
    assert code == 0 and "table cut" not in out
    assert len([line for line in out.splitlines() if "│" in line and "PETR4" in line]) == 50
    code, out, _ = cli("query", "ticks", "PETR4", "--limit", "0", "--format", "json")
    assert len(out.splitlines()) == len(sent)
    code, out, _ = cli("query", "ohlc", "PETR4", "--interval", "1m")
    assert "table cut at 50 rows" in out
    code, out, _ = cli("query", "ohlc", "PETR4", "--interval", "1m", "--format", "csv")
    assert len(out.splitlines()) - 1 == len({s.ts.replace(second=0, microsecond=0) for s in sent}) > 50


def test_help_of_every_query_command_exits_0(cli: Any) -> None:
    for argv in (["query", "--help"], ["query", "stats", "--help"], ["query", "latest", "--help"]):
        with pytest.raises(SystemExit) as info:
            cli(*argv)
        assert info.value.code == 0
