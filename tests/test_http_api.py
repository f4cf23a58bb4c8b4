"""`pipeline serve`'s read API (pipeline/read/http) against the real test servers: the market ticks written by
the worker, answered through the same query functions as the CLI; cursor paging; validation (one sentence,
400/422, never a MongoDB operator); 503 when MongoDB is down; the bearer token; metrics; the generated API
reference; and `pipeline serve` itself as a process (binding, the live event stream, SIGTERM, no token in
its logs)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from pymongo import MongoClient

from pipeline.dev.process import free_port
from pipeline.ops.config import Settings
from pipeline.read import query as q
from pipeline.read.http import create_app
from pipeline.read.http.reference import render_markdown
from tests.harness import REPO, Servers, unique, wait_for
from tests.query_data import BASE, Market, Sent, stored_doc

pytestmark = pytest.mark.servers

TOKEN = "tok-" + "9f3c1e77a2b84d05"


def market_settings(market: Market, **http: Any) -> Settings:
    return market.sc.settings(http=http) if http else market.sc.settings()


@pytest.fixture(scope="module")
def client(market: Market) -> Iterator[TestClient]:
    with TestClient(create_app(market_settings(market))) as c:
        yield c


@pytest.fixture(scope="module")
def db(market: Market) -> Iterator[Any]:
    with MongoClient(market.sc.servers.mongo_uri) as mongo:
        yield mongo[market.sc.database]


def key(t: Sent | dict[str, Any]) -> tuple[Any, ...]:
    if isinstance(t, dict):
        return (t["symbol"], t["ts"], t["price"], t["volume"], t["topic"], t["partition"], t["offset"])
    ts = t.ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return (t.symbol, ts, t.price, t.volume, t.topic, t.partition, t.offset)


def pages(client: TestClient, symbol: str, **params: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        response = client.get(
            f"/api/ticks/{symbol}", params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        got += body["ticks"]
        cursor = body["next_cursor"]
        if cursor is None:
            return got
        assert len(body["ticks"]) == params.get("limit", 100)
    raise AssertionError("paging did not end")


# ---- ticks and paging -------------------------------------------------------------------------------------


def test_ticks_are_the_produced_ticks_page_by_page_in_both_orders(client: TestClient, market: Market) -> None:
    sent = sorted(market.ticks["PETR4"], key=lambda t: (t.ts, t.partition, t.offset))
    oldest = pages(client, "petr4", limit=17, order="oldest_first")
    assert [key(t) for t in oldest] == [key(t) for t in sent]
    newest = pages(client, "PETR4", limit=23, order="newest_first")
    assert [key(t) for t in newest] == [key(t) for t in reversed(sent)]
    # A half-open range: from included, to excluded; oldest first by default when from is given (as the CLI).
    start, end = sent[10].ts.isoformat(), sent[50].ts.isoformat()
    body = client.get("/api/ticks/PETR4", params={"from": start, "to": end, "limit": 1000}).json()
    assert body["order"] == "oldest_first" and body["next_cursor"] is None
    assert [key(t) for t in body["ticks"]] == [key(t) for t in sent[10:50]]
    # Without from: newest first, page_size (100) ticks.
    body = client.get("/api/ticks/PETR4").json()
    assert body["order"] == "newest_first" and len(body["ticks"]) == 100 and body["next_cursor"]


def test_a_page_is_what_the_cli_prints(client: TestClient, cli: Any) -> None:
    code, out, _ = cli("query", "ticks", "VALE3", "--limit", "30", "--format", "json")
    assert code == 0
    printed = [json.loads(line) for line in out.splitlines()]
    body = client.get("/api/ticks/VALE3", params={"limit": 30}).json()
    assert len(printed) == len(body["ticks"]) == 30
    for line, tick in zip(printed, body["ticks"], strict=True):
        assert (line["price"], line["volume"], line["partition"], line["offset"]) == (
            tick["price"],
            tick["volume"],
            tick["partition"],
            tick["offset"],
        )
        assert line["ts"].replace("+00:00", "Z") == tick["ts"]


def test_cursors_belong_to_their_query(client: TestClient) -> None:
    first = client.get("/api/ticks/PETR4", params={"limit": 5, "order": "oldest_first"}).json()
    cursor = first["next_cursor"]
    for params, path in (
        ({"cursor": cursor, "order": "newest_first"}, "/api/ticks/PETR4"),
        ({"cursor": cursor, "order": "oldest_first"}, "/api/ticks/VALE3"),
    ):
        response = client.get(path, params=params)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_cursor"
        assert "continues the oldest first ticks of 'PETR4'" in response.json()["message"]
    for bad in (
        "x",
        "e30",
        cursor[:-3],
        cursor + "AAAA",
        "W1siJGd0IiwxXV0",
        "A" * 600,
        "WzEsIlBFVFI0IiwwLDEsMSwxLHt9XQ",
    ):
        response = client.get("/api/ticks/PETR4", params={"cursor": bad, "order": "oldest_first"})
        assert response.status_code == 400, (bad, response.text)
        assert response.json() == {
            "error": "invalid_cursor",
            "message": "invalid cursor: pass the next_cursor of a previous page unchanged",
        }


def test_pages_over_ties_continue_exactly(servers: Servers) -> None:
    """Ticks sharing one ts over partitions and two collections: pages cut inside the runs."""
    name = unique("hdb").replace("-", "_")
    with MongoClient(servers.mongo_uri) as mongo:
        db = mongo[name]
        try:
            t0 = BASE + timedelta(days=30)
            for coll in ("ita", "itb"):
                db[coll].create_index([("symbol", 1), ("ts", 1)], name=q.TICK_INDEX_NAME)
                db[coll].insert_many(
                    [
                        stored_doc(coll, i % 3, i, "ITUB4", t0 + timedelta(seconds=i // 9), 30.0 + i, 1)
                        for i in range(45)
                    ]
                )
            settings = Settings(
                mongo={"uri": servers.mongo_uri, "database": name}, kafka={"topics": ["ita", "itb"]}
            )
            with TestClient(create_app(settings)) as client:
                everything = q.ticks(db, "ITUB4")
                assert len(everything) == 90
                want = [(t.topic, t.partition, t.offset) for t in everything]
                for limit in (1, 4, 9, 10, 89):
                    got = pages(client, "ITUB4", limit=limit, order="oldest_first")
                    assert [(t["topic"], t["partition"], t["offset"]) for t in got] == want
                    got = pages(client, "ITUB4", limit=limit, order="newest_first")
                    assert [(t["topic"], t["partition"], t["offset"]) for t in got] == want[::-1]
        finally:
            mongo.drop_database(name)


# ---- bars, statistics, latest, symbols, status ------------------------------------------------------------


def test_ohlc_bars_are_the_cli_bars(client: TestClient, cli: Any, db: Any) -> None:
    code, out, _ = cli("query", "ohlc", "VALE3", "--interval", "5m", "--format", "json")
    assert code == 0
    printed = [json.loads(line) for line in out.splitlines()]
    body = client.get("/api/ohlc/vale3", params={"interval": "5m"}).json()
    assert body["symbol"] == "VALE3" and body["interval"] == "5m" and body["align_tz"] is None
    bars = body["bars"]
    assert len(bars) == len(printed) > 10
    for line, bar in zip(printed, bars, strict=True):
        for field in ("open", "high", "low", "close", "volume", "trades", "vwap"):
            assert line[field] == bar[field], field
        assert line["start"].replace("+00:00", "Z") == bar["start"]
    direct = q.ohlc(db, "VALE3", "5m", collections=q.CollectionResolver(db))
    assert sum(b.trades for b in direct) == sum(b["trades"] for b in bars) == 200
    # A range, and bars aligned to a zone.
    start = (BASE + timedelta(minutes=30)).isoformat()
    ranged = client.get(
        "/api/ohlc/VALE3", params={"interval": "15m", "from": start, "to": "2026-01-05T14:30:00Z"}
    )
    starts = [b["start"] for b in ranged.json()["bars"]]
    assert starts == [
        "2026-01-05T13:30:00.000Z",
        "2026-01-05T13:45:00.000Z",
        "2026-01-05T14:00:00.000Z",
        "2026-01-05T14:15:00.000Z",
    ]
    aligned = client.get("/api/ohlc/VALE3", params={"interval": "1d", "align_tz": "America/Sao_Paulo"}).json()
    assert aligned["align_tz"] == "America/Sao_Paulo"
    assert [b["start"] for b in aligned["bars"]] == ["2026-01-05T03:00:00.000Z"]


def test_too_many_bars_is_refused_with_a_hint(market: Market) -> None:
    with TestClient(create_app(market_settings(market, max_bars=3))) as client:
        response = client.get("/api/ohlc/PETR4", params={"interval": "1m"})
        assert response.status_code == 400
        assert response.json()["error"] == "too_many_bars"
        assert "narrow the range" in response.json()["message"]
        assert client.get("/api/ohlc/PETR4", params={"interval": "1h"}).status_code == 200


def test_stats_latest_and_symbols_are_the_query_functions(
    client: TestClient, db: Any, market: Market
) -> None:
    resolver = q.CollectionResolver(db, topics=market.sc.topics)
    stats = client.get("/api/stats").json()
    assert stats["database"] == market.sc.database
    expected = [vars(s) for s in q.stats(db, resolver)]
    assert [(s["symbol"], s["count"], s["last_price"], s["total_volume"]) for s in stats["stats"]] == [
        (s["symbol"], s["count"], s["last_price"], s["total_volume"]) for s in expected
    ]
    only = client.get("/api/stats", params={"symbol": ["vale3"]}).json()["stats"]
    assert [s["symbol"] for s in only] == ["VALE3"]
    latest = client.get("/api/latest").json()["ticks"]
    newest = {s: max(t, key=lambda t: (t.ts, t.partition, t.offset)) for s, t in market.ticks.items()}
    assert [key(t) for t in latest] == [key(newest["PETR4"]), key(newest["VALE3"])]
    assert client.get("/api/symbols").json() == {
        "database": market.sc.database,
        "symbols": ["PETR4", "VALE3"],
    }
    missing = client.get("/api/latest", params={"symbol": ["PETR4", "ITUB4"]})
    assert missing.status_code == 404 and missing.json()["error"] == "unknown_symbol"
    assert "'ITUB4'" in missing.json()["message"]


def test_status_is_the_status_command(client: TestClient, market: Market) -> None:
    body = client.get("/api/status").json()
    assert body["group"] == market.sc.group
    committed = {
        (t["topic"], p["partition"]): p["committed"] for t in body["topics"] for p in t["partitions"]
    }
    assert committed == market.ends
    stored = {t["topic"]: t["stored_documents"] for t in body["topics"]}
    assert stored == {market.sc.topics[0]: 240, market.sc.topics[1]: 200}


# ---- validation -----------------------------------------------------------------------------------------


BAD = [
    ("/api/ticks/PE$TR4", {}, 400, "invalid_symbol"),
    ("/api/ticks/" + "A" * 50, {}, 400, "invalid_symbol"),
    ("/api/ohlc/PETR4", {"interval": "7m"}, 400, "invalid_interval"),
    ("/api/ohlc/PETR4", {}, 422, "invalid_parameter"),
    ("/api/ohlc/PETR4", {"interval": "1h", "align_tz": "Mars/Olympus"}, 400, "invalid_timezone"),
    ("/api/ohlc/PETR4", {"interval": "1h", "align_tz": "$symbol"}, 400, "invalid_timezone"),
    ("/api/ticks/PETR4", {"from": "yesterday"}, 400, "invalid_time"),
    ("/api/ticks/PETR4", {"from": "-99999999999w"}, 400, "invalid_time"),
    ("/api/ticks/PETR4", {"to": "0001-01-01T00:00:00+01:00"}, 400, "invalid_time"),
    ("/api/ticks/PETR4", {"from": "2026-01-06", "to": "2026-01-05"}, 400, "invalid_range"),
    (
        "/api/ticks/PETR4",
        {"from": "2026-01-05T13:00:00Z", "to": "2026-01-05T10:00:00-03:00"},
        400,
        "invalid_range",
    ),
    ("/api/ohlc/PETR4", {"interval": "1m", "from": "now", "to": "-1h"}, 400, "invalid_range"),
    ("/api/ticks/PETR4", {"limit": "0"}, 422, "invalid_parameter"),
    ("/api/ticks/PETR4", {"limit": "1001"}, 422, "invalid_parameter"),
    ("/api/ticks/PETR4", {"limit": "ten"}, 422, "invalid_parameter"),
    ("/api/ticks/PETR4", {"order": "sideways"}, 422, "invalid_parameter"),
    ("/api/ticks/ITUB4", {}, 404, "unknown_symbol"),
    ("/api/ohlc/ITUB4", {"interval": "1m"}, 404, "unknown_symbol"),
    ("/api/stats", {"symbol": "no symbol"}, 400, "invalid_symbol"),
    ("/api/events/ITUB4", {}, 404, "unknown_symbol"),
    ("/api/nothing", {}, 404, "not_found"),
]


@pytest.mark.parametrize("path, params, status, code", BAD, ids=[f"{p}-{s}-{c}" for p, _, s, c in BAD])
def test_bad_input_is_one_sentence(
    client: TestClient, path: str, params: dict[str, str], status: int, code: str
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"} and body["error"] == code
    assert "\n" not in body["message"] and "Traceback" not in body["message"] and len(body["message"]) < 300


def test_the_messages_are_the_clis(client: TestClient, cli: Any) -> None:
    for argv, path, params in (
        (("query", "ohlc", "PETR4", "--interval", "7m"), "/api/ohlc/PETR4", {"interval": "7m"}),
        (("query", "ticks", "PE$TR4"), "/api/ticks/PE$TR4", {}),
        (("query", "ticks", "PETR4", "--from", "yesterday"), "/api/ticks/PETR4", {"from": "yesterday"}),
        (("query", "ticks", "ITUB4"), "/api/ticks/ITUB4", {}),
        (
            ("query", "ticks", "PETR4", "--from", "2026-01-06", "--to", "2026-01-05"),
            "/api/ticks/PETR4",
            {"from": "2026-01-06", "to": "2026-01-05"},
        ),
    ):
        code, _, err = cli(*argv)
        assert code == 2
        assert err.strip() == "error: " + client.get(path, params=params).json()["message"]


def test_an_empty_range_is_refused(client: TestClient) -> None:
    response = client.get(
        "/api/ticks/PETR4", params={"from": "2026-01-05T13:00:00Z", "to": "2026-01-05T13:00:00Z"}
    )
    assert response.status_code == 400
    assert response.json()["message"].startswith(
        "invalid range: from 2026-01-05T13:00:00.000+00:00 is not before to"
    )


@pytest.mark.parametrize(
    "path, params",
    [
        ("/api/ticks/%7B%22%24gt%22%3A%22%22%7D", {}),
        ("/api/ticks/$where", {}),
        ("/api/ticks/PETR4", {"symbol[$ne]": "x", "from[$gt]": "", "limit[$gt]": "1"}),
        ("/api/ticks/PETR4", {"from": '{"$gt": ""}'}),
        ("/api/ohlc/PETR4", {"interval": '{"$exists": true}'}),
        ("/api/ohlc/PETR4", {"interval": "1m", "align_tz": "$$NOW"}),
        ("/api/stats", {"symbol": ["PETR4", "{$ne: 1}"]}),
        ("/api/latest", {"symbol": "$gt"}),
    ],
)
def test_query_parameters_never_become_operators(
    client: TestClient, path: str, params: dict[str, Any]
) -> None:
    response = client.get(path, params=params)
    if response.status_code == 200:
        # The operator-looking names are simply not parameters: the answer is the plain query's.
        plain = client.get(path).json()
        assert response.json() == plain
    else:
        assert response.status_code in (400, 404, 422), response.text
        assert response.json()["error"].startswith("invalid_") or response.json()["error"] == "not_found"


# ---- MongoDB down, token, metrics -------------------------------------------------------------------------


def test_mongodb_unreachable_is_503_with_one_line() -> None:
    port = free_port()
    settings = Settings(
        mongo={"uri": f"mongodb://tickpipe:hunter2-secret@127.0.0.1:{port}/?directConnection=true"},
        http={"mongo_timeout_ms": 300},
    )
    with TestClient(create_app(settings)) as client:
        for path, params in (
            ("/api/ticks/PETR4", {}),
            ("/api/ohlc/PETR4", {"interval": "1m"}),
            ("/api/stats", {}),
            ("/api/latest", {}),
            ("/api/symbols", {}),
            ("/api/events/PETR4", {}),
        ):
            started = time.monotonic()
            response = client.get(path, params=params)
            assert response.status_code == 503, (path, response.text)
            body = response.json()
            assert body["error"] == "unavailable"
            assert body["message"].startswith(
                f"cannot query MongoDB at mongodb://tickpipe:***@127.0.0.1:{port}/"
            )
            assert "hunter2" not in response.text and "\n" not in body["message"]
            assert time.monotonic() - started < 5
        # Bad input is still reported as such, before MongoDB is asked.
        assert client.get("/api/ohlc/PETR4", params={"interval": "2m"}).status_code == 400
        assert client.get("/healthz").json() == {"status": "ok", "mongo": None}
        assert client.get("/readyz").status_code == 503


def test_status_with_kafka_unreachable_is_503(market: Market) -> None:
    settings = market.sc.settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"}, http={"status_timeout_s": 1}
    )
    with TestClient(create_app(settings)) as client:
        response = client.get("/api/status")
        assert response.status_code == 503
        assert response.json()["message"].startswith("cannot reach Kafka at 127.0.0.1:")


def test_a_token_guards_the_api_and_metrics_but_not_health_or_the_page(market: Market) -> None:
    with TestClient(create_app(market_settings(market, token=TOKEN))) as client:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": TOKEN},
            {"Authorization": "Basic " + TOKEN},
        ):
            for path in ("/api/symbols", "/api/ticks/PETR4", "/api/status", "/metrics", "/api/events/PETR4"):
                response = client.get(path, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Bearer"
                assert response.json()["error"] == "unauthorized" and TOKEN not in response.text
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert client.get("/api/symbols", headers=good).json()["symbols"] == ["PETR4", "VALE3"]
        assert client.get("/metrics", headers=good).status_code == 200
        for path in ("/healthz", "/readyz", "/", "/openapi.json", "/static/app.js"):
            assert client.get(path).status_code == 200, path


def test_the_token_comes_from_a_file(market: Market, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    settings = market_settings(market, token_file=str(secret))
    with TestClient(create_app(settings)) as client:
        assert client.get("/api/symbols").status_code == 401
        assert client.get("/api/symbols", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_metrics_count_requests_by_route_template(market: Market) -> None:
    with TestClient(create_app(market_settings(market))) as client:
        for symbol in ("PETR4", "VALE3", "ITUB4"):
            client.get(f"/api/ohlc/{symbol}", params={"interval": "1h"})
        client.get("/no/such/path")
        text = client.get("/metrics").text
    assert 'tickpipe_http_requests_total{method="GET",route="/api/ohlc/{symbol}",status="200"} 2.0' in text
    assert 'tickpipe_http_requests_total{method="GET",route="/api/ohlc/{symbol}",status="404"} 1.0' in text
    assert 'tickpipe_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0' in text
    assert 'tickpipe_http_request_seconds_count{method="GET",route="/api/ohlc/{symbol}"} 3.0' in text
    assert "PETR4" not in text  # raw paths never become labels


def test_the_page_and_its_chart_library(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    from pipeline.read.http.page import plotly_version

    version = plotly_version()
    assert version and f'src="/vendor/plotly-{version}.min.js"' in page.text
    js = client.get(f"/vendor/plotly-{version}.min.js", headers={"Accept-Encoding": "gzip"})
    assert js.status_code == 200 and js.headers["content-encoding"] == "gzip"
    assert "immutable" in js.headers["cache-control"]
    assert len(js.content) > 1_000_000  # decoded by the client: the whole library
    assert client.get("/static/app.js").status_code == 200


# ---- the API reference ------------------------------------------------------------------------------------


def test_the_api_reference_is_generated_from_the_openapi_document() -> None:
    path = REPO / "docs" / "http-api.md"
    assert path.read_text() == render_markdown(), (
        "docs/http-api.md is out of date: run `pipeline serve --reference markdown -o docs/http-api.md`"
    )
    text = path.read_text()
    for route in (
        "/api/ticks/{symbol}",
        "/api/ohlc/{symbol}",
        "/api/stats",
        "/api/latest",
        "/api/symbols",
        "/api/status",
        "/api/events/{symbol}",
    ):
        assert f"`GET {route}`" in text


def test_the_openapi_document_is_served_and_describes_every_error(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path, item in doc["paths"].items():
        if path.startswith("/api/"):
            responses = item["get"]["responses"]
            assert {"200", "401", "503"} <= set(responses), path
            assert responses["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


# ---- `pipeline serve` as a process ----------------------------------------------------------------------


class ServeProcess:
    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        self.handle = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "serve", *args],
            env=env,
            stdout=self.handle,
            stderr=subprocess.STDOUT,
            cwd=log.parent,
        )

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        self.handle.close()
        return code


def wait_healthy(url: str, proc: ServeProcess) -> None:
    def up() -> bool:
        assert proc.proc.poll() is None, proc.text()
        try:
            return httpx.get(url + "/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=30, interval=0.2, what="pipeline serve to answer")


def test_serve_binds_localhost_streams_live_events_and_stops_on_sigterm(
    market: Market, tmp_path: Path
) -> None:
    port = free_port()
    env = market.subprocess_env(
        PIPELINE_HTTP__PORT=str(port),
        PIPELINE_HTTP__TOKEN=TOKEN,
        PIPELINE_HTTP__ACCESS_LOG="true",
        PIPELINE_HTTP__LIVE_POLL_S="0.2",
        PIPELINE_LOG__FORMAT="json",
    )
    serve = ServeProcess(env, tmp_path / "serve.log")
    base = f"http://127.0.0.1:{port}"
    name = unique("live").replace("-", "_")
    try:
        wait_healthy(base, serve)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(base + "/api/symbols", headers=auth).json()["symbols"] == ["PETR4", "VALE3"]
        # Only on 127.0.0.1 by default.
        with socket.socket() as other:
            other.settimeout(1)
            address = socket.gethostbyname(socket.gethostname())
            if not address.startswith("127."):
                assert other.connect_ex((address, port)) != 0
        # A symbol in a collection of its own (the resolver finds it by its tick index), then a new tick.
        with MongoClient(market.sc.servers.mongo_uri) as mongo:
            coll = mongo[market.sc.database][name]
            coll.create_index([("symbol", 1), ("ts", 1)], name=q.TICK_INDEX_NAME)
            coll.insert_one(stored_doc(name, 0, 0, "LIVE3", BASE, 10.0, 100))
            events: list[dict[str, Any]] = []
            with httpx.stream("GET", base + "/api/events/live3", headers=auth, timeout=20) as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                lines = stream.iter_lines()
                for line in lines:
                    if line.startswith("data:"):
                        events.append(json.loads(line[5:]))
                        if len(events) == 1:
                            coll.insert_one(
                                stored_doc(name, 0, 1, "LIVE3", BASE + timedelta(seconds=1), 10.5, 200)
                            )
                        else:
                            break
            assert [e["latest"]["offset"] for e in events] == [0, 1]
            assert [e["latest"]["price"] for e in events] == [10.0, 10.5]
            assert events[0]["symbol"] == "LIVE3" and events[1]["stored"] == 2
            mongo[market.sc.database].drop_collection(name)
        metrics = httpx.get(base + "/metrics", headers=auth).text
        assert 'route="/api/events/{symbol}"' in metrics
    finally:
        code = serve.stop()
    log = serve.text()
    assert code == 0, log
    assert TOKEN not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    started = next(line for line in lines if line["msg"] == "serving the read API and the chart page")
    assert started["url"] == f"http://127.0.0.1:{port}" and started["token"] == "required"
    assert any("GET /api/symbols" in line.get("msg", "") for line in lines), log  # the access log is on
    assert "Traceback" not in log


def test_serve_on_a_busy_port_is_one_line_and_exit_1(market: Market, tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "serve", "--port", str(port)],
            env=market.subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


def test_serve_reference_and_bad_arguments(tmp_path: Path) -> None:
    out = tmp_path / "api.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--reference", "markdown", "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_text() == (REPO / "docs" / "http-api.md").read_text()
    bad = subprocess.run(
        [sys.executable, "-m", "pipeline", "serve", "--port", "99999"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "is not a port" in bad.stderr and "Traceback" not in bad.stderr


def test_the_listening_socket_is_tcp_so_responses_are_not_delayed() -> None:
    """asyncio sets TCP_NODELAY only on connections of a socket created as IPPROTO_TCP; with proto 0 every
    response waited ~40 ms for a delayed ACK (found by bench/http_load: /healthz took 44 ms)."""
    from pipeline.read.http.server import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname()[:2])
        accepted, _ = sock.accept()
        import asyncio.base_events

        asyncio.base_events._set_nodelay(accepted)  # what the event loop does for each connection
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        accepted.close()
        client.close()
    finally:
        sock.close()


def test_decimal128_prices_keep_every_digit(servers: Servers) -> None:
    """A Decimal128 price (and OHLC/VWAP computed from such prices) is a JSON number with exactly its
    digits, as `pipeline query --format json` writes it, never a rounded double or a string."""
    from bson.decimal128 import Decimal128

    name = unique("ddb").replace("-", "_")
    prices = ["38.123456789012345678", "38.10", "38.200000000000000001"]
    with MongoClient(servers.mongo_uri) as mongo:
        db = mongo[name]
        try:
            db["dec"].create_index([("symbol", 1), ("ts", 1)], name=q.TICK_INDEX_NAME)
            docs = [stored_doc("dec", 0, i, "DECI3", BASE + timedelta(seconds=i), 1.0, 100) for i in range(3)]
            for doc, price in zip(docs, prices, strict=True):
                doc["price"] = Decimal128(price)
            db["dec"].insert_many(docs)
            settings = Settings(mongo={"uri": servers.mongo_uri, "database": name}, kafka={"topics": ["dec"]})
            with TestClient(create_app(settings)) as client:
                text = client.get("/api/ticks/DECI3", params={"order": "oldest_first"}).text
                for price in prices:
                    assert f'"price":{price}' in text
                assert json.loads(text)["ticks"][0]["ts"] == "2026-01-05T13:00:00.000Z"
                bars = client.get("/api/ohlc/DECI3", params={"interval": "1h"})
                assert bars.status_code == 200, bars.text
                assert f'"open":{prices[0]}' in bars.text and f'"close":{prices[2]}' in bars.text
                assert f'"high":{prices[2]}' in bars.text and '"low":38.10' in bars.text
                latest = client.get("/api/latest").text
                assert f'"price":{prices[2]}' in latest
        finally:
            mongo.drop_database(name)
