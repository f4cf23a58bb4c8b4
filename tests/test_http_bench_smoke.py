"""bench/http_load.py in miniature (a few thousand ticks, a second per run): it stores the ticks with the
worker's indexes, serves them with `pipeline serve`, loads the OHLC endpoint and reports requests/s and
percentiles. Not a timed test: it checks that the benchmark runs and that what it reports adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from pymongo import MongoClient

from bench import http_load
from pipeline.dev.servers import EmbeddedMongo
from tests.harness import REPO


def test_the_ticks_are_stored_as_the_worker_stores_them(tmp_path: Path) -> None:
    mongo = EmbeddedMongo(tmp_path).start()
    try:
        http_load.load(mongo.uri, "market", 1_001, log=lambda _: None)
        with MongoClient(mongo.uri) as client:
            db = client["market"]
            assert db["petr4"].count_documents({}) == 501 and db["vale3"].count_documents({}) == 500
            assert "symbol_1_ts_1" in db["petr4"].index_information()
            doc = db["petr4"].find_one({"_id": {"topic": "petr4", "partition": 1, "offset": 0}})
            assert doc is not None and set(doc) >= {"symbol", "price", "volume", "ts", "kafka", "ingested_at"}
        http_load.load(mongo.uri, "market", 1_001, log=lambda _: None)  # already there: kept
    finally:
        mongo.stop()


def test_the_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "http.json"
    table = tmp_path / "http.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.http_load",
            "--ticks",
            "4000",
            "--workloads",
            "healthz,recent,page",
            "--concurrency",
            "1,2",
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--min-requests",
            "3",
            "--json",
            str(out),
            "--markdown",
            str(table),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ticks"] == 4000 and report["uptime_before"] and report["uptime_after"]
    assert set(report["direct_ms"]) == {"recent", "page"}
    rows = report["results"]
    assert [(r["workload"], r["concurrency"]) for r in rows] == [
        ("healthz", 1),
        ("healthz", 2),
        ("recent", 1),
        ("recent", 2),
        ("page", 1),
        ("page", 2),
    ]
    for row in rows:
        assert row["errors"] == 0 and row["requests"] >= 3
        assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert row["requests_per_s"] > 0
    # 4,000 ticks, two a second per symbol: 1,000 s of PETR4, 17 one-minute bars, all in the last 2 hours.
    assert rows[0]["bars_per_response"] == 0  # the control: GET /healthz
    assert rows[4]["bars_per_response"] == 17
    assert "| page | 17 | 2 |" in table.read_text()
