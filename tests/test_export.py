"""`pipeline export`: JSON Lines, CSV and Parquet round trips of worker-written ticks, a large export in
bounded memory, and no truncated file when an export fails."""

from __future__ import annotations

import csv
import errno
import json
import os
import pty
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pymongo import ASCENDING, MongoClient

import pipeline.read.export as export_module
from pipeline.read import query as q
from pipeline.read.export import export_ticks, iso_utc
from tests.harness import REPO, Servers, unique
from tests.query_data import Market, stored_doc

pytestmark = pytest.mark.servers


def _read(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    if fmt == "csv":
        with path.open(newline="") as handle:
            rows: list[dict[str, Any]] = list(csv.DictReader(handle))
        for row in rows:
            row["price"] = float(row["price"])
            for key in ("volume", "partition", "offset"):
                row[key] = int(row[key])
        return rows
    table = pq.read_table(path)
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    return [{**row, "ts": iso_utc(row["ts"])} for row in table.to_pylist()]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_round_trips_worker_written_ticks(cli: Any, market: Market, tmp_path: Path, fmt: str) -> None:
    sent = market.ticks["PETR4"]
    out = tmp_path / f"petr4.{fmt}"
    span = ["--from", sent[5].ts.isoformat(), "--to", sent[205].ts.isoformat()]
    code, stdout, stderr = cli("export", "petr4", *span, "--out", str(out), "--progress-every", "0.001")
    assert code == 0, stderr
    assert stdout.startswith(f"exported 200 ticks of PETR4 to {out} ({fmt}, ")
    # stderr is not a terminal here: plain progress lines instead of a bar.
    assert stderr.splitlines()[0] == f"exporting 200 ticks of PETR4 to {out}"
    assert stderr.splitlines()[-1] == "exported 200/200 ticks (100%)"
    rows = _read(out, fmt)
    assert list(rows[0]) == ["symbol", "ts", "price", "volume", "topic", "partition", "offset"]
    expected = [
        {
            "symbol": "PETR4",
            "ts": s.ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{s.ts.microsecond // 1000:03d}Z",
            "price": s.price,
            "volume": s.volume,
            "topic": s.topic,
            "partition": s.partition,
            "offset": s.offset,
        }
        for s in sent[5:205]
    ]
    assert rows == expected
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind


def test_export_shows_a_progress_bar_when_stderr_is_a_terminal(market: Market, tmp_path: Path) -> None:
    out = tmp_path / "vale3.csv"
    controller, terminal = pty.openpty()
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the terminal side is closed
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "export", "VALE3", "--out", str(out)],
            env=market.subprocess_env(),
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
        )
    finally:
        os.close(terminal)
        reader.join(10)
        os.close(controller)
    shown = b"".join(chunks).decode(errors="replace")
    assert result.returncode == 0, shown
    assert result.stdout.startswith(f"exported {len(market.ticks['VALE3'])} ticks of VALE3")
    assert "exporting VALE3" in shown and "━" in shown  # the rich bar
    assert f"ticks of VALE3 to {out}" not in shown  # not the plain progress line of a pipe
    assert len(_read(out, "csv")) == len(market.ticks["VALE3"])


@pytest.fixture(scope="module")
def big(servers: Servers) -> Iterator[tuple[Any, str, int]]:
    """30,000 ticks of the stored shape, inserted directly (the worker would take minutes on this server).
    The database is left for the session's server to discard: dropping it is slow on this test server."""
    client: MongoClient[dict[str, Any]] = MongoClient(servers.mongo_uri)
    db = client[unique("bigdb").replace("-", "_")]
    db["ticks"].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
    t0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
    total = 30_000

    def doc(i: int) -> dict[str, Any]:
        return stored_doc(
            "ticks", i % 3, i // 3, "PETR4", t0 + timedelta(milliseconds=250 * i), 38 + i % 97 / 100, 100
        )

    for first in range(0, total, 5_000):
        db["ticks"].insert_many([doc(i) for i in range(first, first + 5_000)], ordered=False)
    try:
        yield db, "ticks", total
    finally:
        client.close()


def test_large_export_streams_in_bounded_memory(big: tuple[Any, str, int], tmp_path: Path) -> None:
    db, collection, total = big
    # What holding the data in memory would take, measured on a sample of 1,000 documents.
    tracemalloc.start()
    sample = list(db[collection].find({"symbol": "PETR4"}).limit(1000))
    held = tracemalloc.get_traced_memory()[0] * total / len(sample)
    tracemalloc.stop()
    del sample

    # Warm-up: one-time costs are not per-tick memory (pyarrow imports pandas on its first conversion,
    # about 30 MB of modules when pandas is installed).
    t0 = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
    warm = export_ticks(
        db, "PETR4", tmp_path / "warm.parquet", "parquet", start=t0, end=t0 + timedelta(seconds=60)
    )
    assert warm.rows == 240

    out = tmp_path / "big.parquet"
    arrow_peak = 0
    progress: list[int] = []

    def report(rows: int) -> None:
        nonlocal arrow_peak
        progress.append(rows)
        arrow_peak = max(arrow_peak, pa.total_allocated_bytes())

    tracemalloc.start()
    try:
        result = export_ticks(
            db, "petr4", out, "parquet", collections=[collection], row_group_rows=10_000, progress=report
        )
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.rows == total and progress[-1] == total and len(progress) == total // 1000
    # Python-side memory stays at a few cursor batches, far below the data; Arrow holds one row group.
    assert python_peak < held / 8, (python_peak, held)
    assert python_peak < 12_000_000, python_peak
    assert arrow_peak < 8_000_000, arrow_peak

    metadata = pq.ParquetFile(out).metadata
    assert metadata.num_rows == total and metadata.num_row_groups == total // 10_000
    table = pq.read_table(out, columns=["ts", "offset", "partition"])
    ts = table.column("ts").to_pylist()
    assert ts == sorted(ts) and ts[0] == t0 and ts[-1] == t0 + timedelta(milliseconds=250 * (total - 1))
    coordinates = zip(table.column("partition").to_pylist(), table.column("offset").to_pylist(), strict=True)
    assert sorted(coordinates) == sorted((i % 3, i // 3) for i in range(total))


def test_a_failed_export_leaves_no_truncated_file(
    cli: Any, market: Market, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "petr4.jsonl"
    out.write_text("previous export\n")
    calls = 0
    original = export_module._JsonLines.write

    def write_then_fail(self: Any, ticks: list[q.Tick]) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        original(self, ticks)

    monkeypatch.setattr(export_module._JsonLines, "write", write_then_fail)
    with MongoClient(market.sc.servers.mongo_uri) as client:
        db = client[market.sc.database]
        with pytest.raises(OSError, match="No space left"):
            export_ticks(db, "PETR4", out, "jsonl", batch_size=50)
        assert calls == 2
        # Interrupted (Ctrl-C) after the first batch: same.
        with pytest.raises(KeyboardInterrupt):
            export_ticks(db, "PETR4", out, "csv", batch_size=50, progress=_interrupt)
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]

    # The command line (one batch here, so the first write fails): one line, exit 1, the old file untouched.
    calls = 1
    code, stdout, stderr = cli("export", "PETR4", "--out", str(out))
    assert code == 1 and stdout == ""
    assert stderr.splitlines()[-1] == f"error: cannot write {out}: No space left on device"
    assert out.read_text() == "previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


def _interrupt(rows: int) -> None:
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["XPTO3", "--format", "csv"], "unknown symbol 'XPTO3'"),
        (["$where", "--format", "csv"], "invalid symbol '$where'"),
        (["PETR4", "--from", "2026-02-01", "--to", "2026-01-01", "--format", "csv"], "is after"),
        (["PETR4", "--from", "last tuesday", "--format", "csv"], "invalid time"),
        (["PETR4"], "cannot tell the format from"),
    ],
)
def test_export_bad_input_exit_2_and_no_file(cli: Any, tmp_path: Path, argv: list[str], message: str) -> None:
    out = tmp_path / "out.data"
    code, stdout, stderr = cli("export", *argv, "--out", str(out))
    assert code == 2 and stdout == ""
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ") and message in stderr, stderr
    assert list(tmp_path.iterdir()) == []
    code, _, stderr = cli("export", "PETR4", "--format", "csv", "--out", str(tmp_path / "missing" / "x.csv"))
    assert code == 2 and "does not exist" in stderr


# ---- stdout, format and file name, exact prices, large tables ---------------------------------------------


def _pipeline(market: Market, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *argv],
        env=market.subprocess_env(),
        cwd=REPO,
        capture_output=True,
        timeout=60,
    )


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_export_to_stdout_writes_the_same_ticks_as_a_file(market: Market, tmp_path: Path, fmt: str) -> None:
    file = tmp_path / f"vale3.{fmt}"
    assert _pipeline(market, "export", "VALE3", "--out", str(file)).returncode == 0
    result = _pipeline(market, "export", "VALE3", "--format", fmt, "--out", "-")
    assert result.returncode == 0, result.stderr
    assert result.stdout == file.read_bytes() if fmt != "parquet" else result.stdout[:4] == b"PAR1"
    piped = tmp_path / f"piped.{fmt}"
    piped.write_bytes(result.stdout)
    assert _read(piped, fmt) == _read(file, fmt)
    count = len(market.ticks["VALE3"])
    assert (
        result.stderr.decode()
        .splitlines()[-1]
        .startswith(f"exported {count} ticks of VALE3 to stdout ({fmt}, ")
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([file.name, piped.name])  # no file named '-'


def test_export_to_a_closed_pipe_stops_quietly(market: Market) -> None:
    export = subprocess.Popen(
        [sys.executable, "-m", "pipeline", "export", "PETR4", "--format", "csv", "--out", "-"],
        env=market.subprocess_env(),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert export.stdout is not None and export.stderr is not None
    header = export.stdout.readline()
    export.stdout.close()  # like `| head -1`
    assert export.wait(60) == 0
    assert header == b"symbol,ts,price,volume,topic,partition,offset\n"
    assert b"Traceback" not in export.stderr.read()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--format", "csv", "--out", "X.parquet"],
            "--format csv contradicts the file name 'X.parquet' (parquet)",
        ),
        (["--format", "jsonl", "--out", "X.CSV"], "--format jsonl contradicts the file name 'X.CSV' (csv)"),
        (["--format", "parquet", "--out", "X.ndjson"], "contradicts the file name 'X.ndjson' (jsonl)"),
        (["--out", "-"], "--out - (stdout) needs --format jsonl, csv or parquet"),
    ],
)
def test_a_format_that_contradicts_the_file_name_is_refused(
    cli: Any, tmp_path: Path, argv: list[str], message: str
) -> None:
    argv = [str(tmp_path / a) if a.startswith("X.") else a for a in argv]
    code, stdout, stderr = cli("export", "PETR4", *argv)
    assert code == 2 and stdout == ""
    assert len(stderr.splitlines()) == 1 and stderr.startswith("error: ") and message in stderr, stderr
    assert list(tmp_path.iterdir()) == []


def test_a_format_with_an_unknown_extension_is_the_format_given(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "petr4.txt"
    code, _, stderr = cli("export", "PETR4", "--format", "csv", "--out", str(out))
    assert code == 0, stderr
    assert out.read_text().startswith("symbol,ts,price,volume,topic,partition,offset\n")


# Doubles as a producer may have computed them (62.2 - 0.01 is not the double nearest to 62.19).
PRICES = [62.19, 62.2 - 0.01, 0.1 + 0.2, 38.12, 1e-7, 123456789.123, 5e-324, 1.7976931348623157e308]


def test_prices_are_written_exactly_as_stored_in_their_shortest_form(
    cli: Any, scratch_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CSV and JSON carry the stored double: the shortest text that reads back as exactly that double.
    62.19 stays '62.19'; 62.2 - 0.01 = 62.190000000000005 is another double and is written as such (rounding
    it would change the stored value)."""
    assert 62.2 - 0.01 != 62.19 and repr(62.2 - 0.01) == "62.190000000000005"
    db, t0 = scratch_db
    db["ticks"].insert_many(
        [stored_doc("ticks", 0, i, "PETR4", t0 + timedelta(seconds=i), p, 1) for i, p in enumerate(PRICES)]
    )
    monkeypatch.setenv("PIPELINE_MONGO__DATABASE", db.name)
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"prices.{fmt}"
        code, _, stderr = cli("export", "PETR4", "--out", str(out))
        assert code == 0, stderr
        if fmt == "csv":
            texts = [row["price"] for row in csv.DictReader(out.open(newline=""))]
            assert texts == [repr(p) for p in PRICES]
            assert texts[:2] == ["62.19", "62.190000000000005"]
            values = [float(t) for t in texts]
        else:
            values = [json.loads(line)["price"] for line in out.read_text().splitlines()]
        assert values == PRICES  # exactly, bit for bit
    code, out_csv, _ = cli("query", "ticks", "PETR4", "--oldest-first", "--format", "csv")
    assert [float(row["price"]) for row in csv.DictReader(out_csv.splitlines())] == PRICES
    assert "62.19," in out_csv and "62.190000000000005," in out_csv
    code, out_json, _ = cli("query", "ticks", "PETR4", "--oldest-first", "--format", "json")
    assert [json.loads(line)["price"] for line in out_json.splitlines()] == PRICES


@pytest.fixture
def scratch_db(servers: Servers) -> Iterator[tuple[Any, datetime]]:
    client: MongoClient[dict[str, Any]] = MongoClient(servers.mongo_uri)
    db = client[unique("xdb").replace("-", "_")]
    db["ticks"].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
    try:
        yield db, datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
    finally:
        client.drop_database(db.name)
        client.close()


def test_a_large_table_is_cut_at_1000_rows_quickly(
    cli: Any, big: tuple[Any, str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _, total = big
    monkeypatch.setenv("PIPELINE_MONGO__DATABASE", db.name)
    started = time.monotonic()
    code, out, err = cli("query", "ticks", "PETR4", "--limit", "0")
    elapsed = time.monotonic() - started
    assert code == 0, err
    assert len([line for line in out.splitlines() if "│" in line and "PETR4" in line]) == 1000 < total
    assert "table cut at 1,000 rows (more rows match)" in out.splitlines()[-1]
    assert elapsed < 20, elapsed
