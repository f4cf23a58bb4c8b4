"""`tick.price_type: decimal128` end to end: ticks produced to Kafka with prices written as JSON literals,
stored by the real worker as Decimal128 (exactly the literal's digits), read back exactly by every query,
OHLC bar, VWAP, statistic, latest tick, export format and the chart; mixed double/decimal collections; and,
on every MongoDB test server, what the read side says when the server lacks an aggregation operator."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from bson.decimal128 import Decimal128
from pymongo import ASCENDING, MongoClient

from pipeline.read import query as q
from pipeline.read.chart import plot_ohlc
from pipeline.read.export import InexactPrice, export_ticks
from pipeline.read.query.aggregations import UnsupportedOperation
from tests.harness import Scenario, Servers, run_cli_in_process, thread_worker, unique, wait_for
from tests.query_data import stored_doc

pytestmark = pytest.mark.servers

T0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
# (seconds after T0, price literal as sent, volume): two 5-minute bars.
SENT = [
    (0, "38.10", 100),
    (40, "38.125", 300),
    (80, "38.000000000000000000000000000001", 200),  # 34 significant digits: no double holds it
    (120, "38.2", 100),
    (299, "38.15", 400),
    (300, "39.00", 100),
    (330, "38.90", 500),
    (360, "62.190000000000005", 200),
    (420, "39.10", 0),
]
PRICES = [Decimal(p) for _, p, _ in SENT]
DEC34 = Context(prec=34)
EXACT = Context(prec=100)  # wide enough for every sum here: exact


@dataclass
class DecimalMarket:
    sc: Scenario
    topic: str
    config: Path

    def env(self) -> dict[str, str]:
        return {
            "PIPELINE_CONFIG": str(self.config),
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": self.sc.servers.bootstrap,
            "PIPELINE_KAFKA__TOPICS": self.topic,
            "PIPELINE_MONGO__URI": self.sc.servers.mongo_uri,
            "PIPELINE_MONGO__DATABASE": self.sc.database,
            "PIPELINE_MONGO__SERVER_SELECTION_TIMEOUT_MS": "5000",
            "PIPELINE_TICK__PRICE_TYPE": "decimal128",
        }


@pytest.fixture(scope="module")
def market(servers: Servers) -> Iterator[DecimalMarket]:
    suffix = unique("dec").split("-")[1]
    sc = Scenario(
        servers=servers,
        topics=[f"petr4-{suffix}"],
        group=f"group-{suffix}",
        database=f"db_{suffix}",
        partitions=1,
    )
    sc.create_topics()
    values = [
        (
            '{"symbol": "PETR4", "price": ' + price + f', "volume": {volume}, "ts": '
            f'"{(T0 + timedelta(seconds=at)).isoformat()}"' + "}"
        ).encode()
        for at, price, volume in SENT
    ]
    offsets = sc.produce_values(sc.topics[0], values)
    sc.ends = {(sc.topics[0], 0): offsets[-1] + 1}
    with thread_worker(sc.settings(tick={"price_type": "decimal128"})) as runner:
        wait_for(lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=120, interval=0.3, what="committed")
        assert runner.stop() == 0
    assert runner.worker.totals.stored == len(SENT)
    config = servers.workdir / f"decimal-{suffix}.yaml"
    config.write_text("# defaults + PIPELINE_* environment variables\n")
    yield DecimalMarket(sc, sc.topics[0], config)
    with sc.mongo() as client:
        client.drop_database(sc.database)


@pytest.fixture
def db(market: DecimalMarket) -> Iterator[Any]:
    with market.sc.mongo() as client:
        yield client[market.sc.database]


def test_the_worker_stores_the_literal_digits_as_decimal128(db: Any, market: DecimalMarket) -> None:
    stored = sorted(db[market.topic].find({}), key=lambda d: d["_id"]["offset"])
    assert [type(d["price"]) for d in stored] == [Decimal128] * len(SENT)
    assert [str(d["price"]) for d in stored] == [p for _, p, _ in SENT]  # 38.10 stays 38.10


def test_ticks_and_latest_are_exact_decimals(db: Any, market: DecimalMarket) -> None:
    ticks = q.ticks(db, "PETR4", collections=[market.topic])
    assert [t.price for t in ticks] == PRICES
    assert [str(t.price) for t in ticks] == [p for _, p, _ in SENT]
    (latest,) = q.latest(db, [market.topic])
    assert str(latest.price) == "39.10" and isinstance(latest.price, Decimal)


def _expected_bar(rows: list[tuple[int, str, int]]) -> tuple[Decimal, ...]:
    prices = [Decimal(p) for _, p, _ in rows]
    volume = sum(v for _, _, v in rows)
    pv = EXACT.create_decimal(0)
    for _, p, v in rows:
        pv = EXACT.add(pv, EXACT.multiply(Decimal(p), v))
    return (
        prices[0],
        max(prices),
        min(prices),
        prices[-1],
        Decimal(volume),
        DEC34.divide(pv, Decimal(volume)),
    )


def test_ohlc_and_vwap_are_computed_exactly_in_decimal(db: Any, market: DecimalMarket) -> None:
    bars = q.ohlc(db, "PETR4", "5m", collections=[market.topic])
    assert [b.start for b in bars] == [T0, T0 + timedelta(minutes=5)]
    for bar, rows in zip(bars, (SENT[:5], SENT[5:]), strict=True):
        got = (bar.open, bar.high, bar.low, bar.close, Decimal(bar.volume), bar.vwap)
        expected = _expected_bar(rows)
        assert got[:5] == expected[:5]
        assert all(isinstance(v, Decimal) for v in got)
    # The second bar's sum(price * volume) fits in 34 digits: its VWAP is the exact quotient, rounded once
    # to Decimal128's 34 digits. The first bar's products need 36 digits (the 34-digit price times 200), so
    # MongoDB rounds them to 34 on the way: equal to 32 significant digits.
    assert bars[1].vwap == _expected_bar(SENT[5:])[5]
    assert abs(bars[0].vwap - _expected_bar(SENT[:5])[5]) < Decimal("1e-30")  # type: ignore[operator]
    # 38.000000000000000000000000000001 is the low: a double would have made it 38.0.
    assert str(bars[0].low) == "38.000000000000000000000000000001"


def test_stats_are_decimals(db: Any, market: DecimalMarket) -> None:
    (row,) = q.stats(db, [market.topic])
    assert row.count == len(SENT) and str(row.last_price) == "39.10"
    total = EXACT.create_decimal(0)
    for price in PRICES:
        total = EXACT.add(total, price)
    exact_average = DEC34.divide(total, Decimal(len(SENT)))
    # The server sums in Decimal128 (34 digits) before dividing: equal within Decimal128's rounding.
    assert isinstance(row.avg_price, Decimal)
    assert abs(row.avg_price - exact_average) < Decimal("1e-30")


def test_exports_write_the_exact_digits(db: Any, market: DecimalMarket, tmp_path: Path) -> None:
    out = io.BytesIO()
    export_ticks(db, "PETR4", out, "jsonl", collections=[market.topic])
    lines = out.getvalue().decode().splitlines()
    assert [line.split('"price":')[1].split(",")[0] for line in lines] == [p for _, p, _ in SENT]
    assert [orjson.loads(line)["volume"] for line in lines] == [v for _, _, v in SENT]

    out = io.BytesIO()
    export_ticks(db, "PETR4", out, "csv", collections=[market.topic])
    rows = list(csv.DictReader(io.StringIO(out.getvalue().decode())))
    assert [r["price"] for r in rows] == [p for _, p, _ in SENT]

    import pyarrow as pa
    import pyarrow.parquet as pq

    # Parquet's decimal128(38, 18) column holds 18 decimal places: the 30-place price is refused in one line
    # naming it, never rounded (and no file is left behind) ...
    path = tmp_path / "petr4.parquet"
    with pytest.raises(
        InexactPrice, match=r"price 38.000000000000000000000000000001 of PETR4 at .*\[0\]@2\)"
    ):
        export_ticks(db, "PETR4", path, "parquet", collections=[market.topic])
    assert not path.exists() and not list(tmp_path.iterdir())
    # ... and the ticks after it export exactly.
    export_ticks(db, "PETR4", path, "parquet", collections=[market.topic], start=T0 + timedelta(seconds=100))
    table = pq.read_table(path)
    assert table.schema.field("price").type == pa.decimal128(38, 18)
    assert table.column("price").to_pylist() == PRICES[3:]  # the same numbers (at scale 18)


def test_the_chart_draws_decimal_bars(db: Any, market: DecimalMarket, tmp_path: Path) -> None:
    bars = q.ohlc(db, "PETR4", "1m", collections=[market.topic])
    path = plot_ohlc(
        bars, tmp_path / "c.png", title="PETR4", interval=timedelta(minutes=1), zone=UTC, zone_label="UTC"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _run(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, env: dict[str, str], *argv: str
) -> tuple[int, str, str]:
    return run_cli_in_process(monkeypatch, capsys, env, *argv)


def test_the_query_commands_print_exact_decimals(
    market: DecimalMarket, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, out, err = _run(
        monkeypatch, capsys, market.env(), "query", "ohlc", "PETR4", "--interval", "5m", "--format", "json"
    )
    assert code == 0, err
    first = out.splitlines()[0]
    assert '"low":38.000000000000000000000000000001' in first and '"open":38.10' in first
    code, out, err = _run(
        monkeypatch,
        capsys,
        market.env(),
        "query",
        "ticks",
        "PETR4",
        "--format",
        "csv",
        "--limit",
        "0",
        "--oldest-first",
    )
    assert code == 0, err
    assert [r["price"] for r in csv.DictReader(io.StringIO(out))] == [p for _, p, _ in SENT]
    for action in ("stats", "latest"):
        code, out, err = _run(monkeypatch, capsys, market.env(), "query", action)
        assert code == 0 and "39.10" in out, out + err
    code, out, err = _run(monkeypatch, capsys, market.env(), "query", "ohlc", "PETR4", "--interval", "1m")
    assert code == 0 and "38.10" in out and "Traceback" not in err


# ---- mixed collections -------------------------------------------------------------------------------


@pytest.fixture
def scratch(servers: Servers) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(servers.mongo_uri)
    name = unique("mixed").replace("-", "_")
    try:
        db = client[name]
        db["ticks"].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
        yield db
    finally:
        client.drop_database(name)
        client.close()


def _doc(offset: int, price: float | str, volume: int = 100) -> dict[str, Any]:
    doc = stored_doc("ticks", 0, offset, "VALE3", T0 + timedelta(seconds=offset), 1.0, volume)
    doc["price"] = Decimal128(price) if isinstance(price, str) else price
    return doc


def test_a_collection_holding_doubles_then_decimals_is_read_as_one_series(
    scratch: Any, tmp_path: Path
) -> None:
    # price_type changed from double to decimal128 while ticks kept coming.
    scratch["ticks"].insert_many([_doc(0, 62.5), _doc(1, 62.25), _doc(2, "62.75"), _doc(3, "62.10", 300)])
    ticks = q.ticks(scratch, "VALE3", collections=["ticks"])
    assert [t.price for t in ticks] == [62.5, 62.25, Decimal("62.75"), Decimal("62.10")]
    (bar,) = q.ohlc(scratch, "VALE3", "1h", collections=["ticks"])
    assert (bar.open, bar.high, bar.low, bar.close) == (
        62.5,
        Decimal("62.75"),
        Decimal("62.10"),
        Decimal("62.10"),
    )
    # Doubles 62.5 and 62.25 are exact in binary, so the server's Decimal128 sum is exact here too.
    expected = DEC34.divide(
        Decimal("62.5") * 100 + Decimal("62.25") * 100 + Decimal("62.75") * 100 + Decimal("62.10") * 300,
        Decimal(600),
    )
    assert bar.vwap == expected
    (row,) = q.stats(scratch, ["ticks"])
    assert isinstance(row.avg_price, Decimal) and row.last_price == Decimal("62.10")
    # Parquet: the column type is decided by the first batch (doubles), so a decimal later is refused in one
    # line rather than rounded; JSON Lines and CSV are exact.
    with pytest.raises(InexactPrice, match=r"cannot be written exactly to Parquet: a Decimal128 price"):
        export_ticks(scratch, "VALE3", tmp_path / "v.parquet", "parquet", collections=["ticks"], batch_size=2)
    assert not (tmp_path / "v.parquet").exists()
    out = io.BytesIO()
    export_ticks(scratch, "VALE3", out, "jsonl", collections=["ticks"])
    assert [line.split('"price":')[1].split(",")[0] for line in out.getvalue().decode().splitlines()] == [
        "62.5",
        "62.25",
        "62.75",
        "62.10",
    ]


def test_a_double_among_decimals_goes_to_parquet_as_its_shortest_decimal(
    scratch: Any, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    scratch["ticks"].insert_many([_doc(0, "62.10"), _doc(1, 62.3), _doc(2, "62.000000000000000000001")])
    with pytest.raises(InexactPrice, match="more digits than a decimal128"):
        export_ticks(scratch, "VALE3", tmp_path / "a.parquet", "parquet", collections=["ticks"])
    scratch["ticks"].delete_one({"_id.offset": 2})
    export_ticks(scratch, "VALE3", tmp_path / "b.parquet", "parquet", collections=["ticks"])
    assert pq.read_table(tmp_path / "b.parquet").column("price").to_pylist() == [
        Decimal("62.10"),
        Decimal("62.3"),
    ]


# ---- servers without the aggregation operators --------------------------------------------------------


@pytest.mark.write_path
def test_a_server_without_an_aggregation_operator_is_named_in_one_line(
    mongo: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    """SecantusDB answers every query; FerretDB 1.x lacks $dateTrunc and the $min/$max/$first accumulators:
    the read side says which operator, in one line, exit 1 (tick listing and export still work there)."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo.uri, serverSelectionTimeoutMS=10_000)
    name = unique("ops").replace("-", "_")
    try:
        db = client[name]
        db["ticks"].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
        db["ticks"].insert_many([_doc(i, 60.0 + i) for i in range(3)])
        assert [t.price for t in q.ticks(db, "VALE3", collections=["ticks"])] == [60.0, 61.0, 62.0]
        calls = {
            "OHLC bars": lambda: q.ohlc(db, "VALE3", "5m", collections=["ticks"]),
            "statistics": lambda: q.stats(db, ["ticks"]),
            "the latest ticks": lambda: q.latest(db, ["ticks"]),
        }
        outcomes = {}
        for what, call in calls.items():
            try:
                call()
                outcomes[what] = "ok"
            except UnsupportedOperation as exc:
                message = str(exc)
                assert "\n" not in message and f"needed for {what} " in message, message
                assert "$" in message.split("does not implement ")[1][:20], message
                outcomes[what] = "unsupported"
        if mongo.kind == "secantus":
            assert set(outcomes.values()) == {"ok"}, outcomes
        if mongo.kind == "ferretdb":
            assert set(outcomes.values()) == {"unsupported"}, outcomes
            config = tmp_path / "c.yaml"
            config.write_text("{}\n")
            env = {
                "PIPELINE_CONFIG": str(config),
                "PIPELINE_MONGO__URI": mongo.uri,
                "PIPELINE_MONGO__DATABASE": name,
                "PIPELINE_KAFKA__TOPICS": "ticks",
            }
            code, out, err = _run(monkeypatch, capsys, env, "query", "ohlc", "VALE3", "--interval", "5m")
            assert code == 1 and out == "" and len(err.strip().splitlines()) == 1, (code, out, err)
            assert "does not implement $dateTrunc" in err
    finally:
        client.drop_database(name)
        client.close()
