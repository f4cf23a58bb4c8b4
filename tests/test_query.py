"""The query library (pipeline/read/query) on ticks written by the real worker, and on hand-made documents
for the edge cases: ranges, ordering, the {symbol, ts} index, OHLC bars, statistics, latest ticks, where
symbols live, and hostile input."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import ASCENDING, MongoClient

from pipeline.ops.config import Settings
from pipeline.read import query as q
from tests.harness import Servers, unique
from tests.query_data import BASE, Market, Sent, stored_doc

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def db(market: Market) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(market.sc.servers.mongo_uri)
    try:
        yield client[market.sc.database]
    finally:
        client.close()


@pytest.fixture
def scratch(servers: Servers) -> Iterator[Any]:
    """An empty database for hand-made documents."""
    client: MongoClient[dict[str, Any]] = MongoClient(servers.mongo_uri)
    name = unique("qdb").replace("-", "_")
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


def _key(t: q.Tick | Sent) -> tuple[Any, ...]:
    return (t.symbol, t.ts, t.price, t.volume, t.topic, t.partition, t.offset)


# ---- ticks ------------------------------------------------------------------------------------------------


def test_ticks_returns_the_produced_ticks_in_range_in_order(market: Market, db: Any) -> None:
    sent = market.ticks["PETR4"]
    resolver = q.CollectionResolver(db, topics=market.sc.topics)
    # Everything, oldest first, with the Kafka coordinates the worker stored.
    got = q.ticks(db, "petr4", collections=resolver)
    assert [_key(t) for t in got] == [_key(s) for s in sent]
    assert all(t.ts.tzinfo is not None and t.ts.utcoffset() == timedelta(0) for t in got)

    # A half-open range: start included, end excluded (both fall exactly on ticks).
    start, end = sent[10].ts, sent[50].ts
    got = q.ticks(db, "PETR4", start=start, end=end, collections=resolver)
    assert [_key(t) for t in got] == [_key(s) for s in sent[10:50]]

    # Newest first with a limit: the newest ticks of the range, in descending order.
    got = q.ticks(db, "PETR4", start=start, end=end, limit=5, newest_first=True, collections=resolver)
    assert [_key(t) for t in got] == [_key(s) for s in reversed(sent[45:50])]

    # Naive datetimes are UTC; an aware one in another zone is converted.
    naive = q.ticks(db, "PETR4", start=start.replace(tzinfo=None), end=end.replace(tzinfo=None))
    sao_paulo = start.astimezone(q.parse_zone("America/Sao_Paulo"))
    aware = q.ticks(db, "PETR4", start=sao_paulo, end=end)
    assert [_key(t) for t in naive] == [_key(t) for t in aware] == [_key(s) for s in sent[10:50]]

    # An empty range of a known symbol is empty, not an error.
    assert q.ticks(db, "PETR4", start=BASE - timedelta(days=2), end=BASE - timedelta(days=1)) == []
    assert q.count_ticks(db, "PETR4", start=start, end=end) == 40


def _stages(plan: Any) -> Iterator[dict[str, Any]]:
    if isinstance(plan, dict):
        if "stage" in plan:
            yield plan
        for value in plan.values():
            yield from _stages(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _stages(item)


def _winning_plan(explain: dict[str, Any]) -> dict[str, Any]:
    if "queryPlanner" in explain:
        return dict(explain["queryPlanner"]["winningPlan"])
    # aggregate explain: the first stage's $cursor holds the query plan
    for stage in explain.get("stages", []):
        if "$cursor" in stage:
            return dict(stage["$cursor"]["queryPlanner"]["winningPlan"])
    raise AssertionError(f"no query plan in {explain}")


def _assert_index_scan(plan: dict[str, Any]) -> None:
    stages = list(_stages(plan))
    names = [s["stage"] for s in stages]
    assert "COLLSCAN" not in names, plan
    scans = [s for s in stages if s["stage"] == "IXSCAN"]
    assert scans and all(s["indexName"] == q.TICK_INDEX_NAME for s in scans), plan


@pytest.mark.parametrize("newest_first", [False, True])
def test_range_queries_use_the_symbol_ts_index(market: Market, db: Any, newest_first: bool) -> None:
    topic = market.topic_of["PETR4"]
    sent = market.ticks["PETR4"]
    query = q.tick_filter("PETR4", sent[10].ts, sent[50].ts)
    explain = db[topic].find(query).sort(q.tick_sort(newest_first)).limit(5).explain()
    _assert_index_scan(_winning_plan(explain))
    stats = explain["executionStats"]
    # Only the index entries of the range are read, not the collection (240 PETR4 ticks).
    assert stats["totalKeysExamined"] <= 41 and stats["totalDocsExamined"] <= 41, stats

    pipeline = q.ohlc_pipeline("PETR4", "5m", sent[10].ts, sent[50].ts)
    explain = db.command("explain", {"aggregate": topic, "pipeline": pipeline, "cursor": {}})
    _assert_index_scan(_winning_plan(explain))


# ---- OHLC -------------------------------------------------------------------------------------------------


def _bucket(ts: datetime, interval: str) -> datetime:
    unit, size = q.INTERVALS[interval]
    if unit == "day":
        return ts.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    return ts.replace(minute=ts.minute - ts.minute % size, second=0, microsecond=0)


def _expected_bars(ticks: list[Sent], interval: str) -> list[tuple[Any, ...]]:
    groups: dict[datetime, list[Sent]] = {}
    for t in sorted(ticks, key=lambda t: t.ts):
        groups.setdefault(_bucket(t.ts, interval), []).append(t)
    bars = []
    for start, group in sorted(groups.items()):
        volume = sum(t.volume for t in group)
        vwap = sum(t.price * t.volume for t in group) / volume
        prices = [t.price for t in group]
        bars.append(
            (start, group[0].price, max(prices), min(prices), group[-1].price, volume, len(group), vwap)
        )
    return bars


def _bar_tuple(bar: q.Bar) -> tuple[Any, ...]:
    return (bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trades, bar.vwap)


@pytest.mark.parametrize("interval", list(q.INTERVALS))
def test_ohlc_bars_match_bars_computed_from_the_produced_ticks(
    market: Market, db: Any, interval: str
) -> None:
    sent = market.ticks["VALE3"]
    expected = _expected_bars(sent, interval)
    got = [_bar_tuple(b) for b in q.ohlc(db, "vale3", interval)]
    assert [g[:7] for g in got] == [e[:7] for e in expected]
    assert [g[7] for g in got] == pytest.approx([e[7] for e in expected], rel=1e-12)
    assert sum(b[6] for b in got) == len(sent)


def test_ohlc_hand_computed_bars_with_boundary_ticks_and_vwap(scratch: Any) -> None:
    coll = scratch["ticks"]
    coll.create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
    t0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    ms = timedelta(milliseconds=1)
    rows = [
        ("PETR4", t0 - ms, 99.0, 100),  # before --from: excluded
        ("PETR4", t0 + timedelta(minutes=3), 10.5, 300),  # stored before the bar's first tick
        ("PETR4", t0, 10.0, 100),  # exactly on the bar start: first bar's open
        ("PETR4", t0 + timedelta(minutes=1), 11.0, 200),  # high
        ("PETR4", t0 + timedelta(minutes=2), 9.5, 100),  # low
        ("PETR4", t0 + timedelta(minutes=5) - ms, 10.2, 400),  # last millisecond of the bar: close
        ("PETR4", t0 + timedelta(minutes=5), 20.0, 1000),  # exactly on the next bar's start
        ("PETR4", t0 + timedelta(minutes=7), 21.0, 0),  # zero volume: counts as a trade
        ("PETR4", t0 + timedelta(minutes=10), 50.0, 100),  # == --to: excluded
        ("VALE3", t0 + timedelta(minutes=1), 70.0, 100),  # another symbol, same collection
    ]
    coll.insert_many(
        [stored_doc("ticks", 0, i, s, ts, p, v) for i, (s, ts, p, v) in enumerate(rows)], ordered=True
    )
    bars = q.ohlc(scratch, "PETR4", "5m", start=t0, end=t0 + timedelta(minutes=10), collections=["ticks"])
    assert [_bar_tuple(b)[:7] for b in bars] == [
        (t0, 10.0, 11.0, 9.5, 10.2, 1100, 5),
        (t0 + timedelta(minutes=5), 20.0, 21.0, 20.0, 21.0, 1000, 2),
    ]
    # VWAP = sum(price * volume) / sum(volume), by hand:
    pv = 10.0 * 100 + 10.5 * 300 + 11.0 * 200 + 9.5 * 100 + 10.2 * 400
    assert bars[0].vwap == pytest.approx(pv / 1100)
    assert bars[1].vwap == pytest.approx(20.0)
    assert bars[0].first_ts == t0 and bars[0].last_ts == t0 + timedelta(minutes=5) - ms

    # 1h bar over everything: includes the ticks excluded above, except the other symbol.
    (hour,) = [b for b in q.ohlc(scratch, "PETR4", "1h", collections=["ticks"]) if b.start == t0]
    assert (hour.open, hour.close, hour.high, hour.trades) == (10.0, 50.0, 50.0, 8)
    # A bar whose volume is 0 has no VWAP.
    (flat,) = q.ohlc(scratch, "PETR4", "1m", start=t0 + timedelta(minutes=7), collections=["ticks"])[:1]
    assert flat.volume == 0 and flat.vwap is None


def test_a_symbol_in_two_collections_is_merged_in_ts_order(scratch: Any) -> None:
    t0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    for name in ("old", "new"):
        scratch[name].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
    # Interleaved in time: old holds minutes 0, 2, 4; new holds 1, 3.
    scratch["old"].insert_many(
        [stored_doc("old", 0, i, "ITUB4", t0 + timedelta(minutes=2 * i), 30.0 + i, 100) for i in range(3)]
    )
    scratch["new"].insert_many(
        [stored_doc("new", 0, i, "ITUB4", t0 + timedelta(minutes=2 * i + 1), 40.0 + i, 100) for i in range(2)]
    )
    resolver = q.CollectionResolver(scratch)
    assert resolver.collections_for("itub4") == ["new", "old"]
    got = q.ticks(scratch, "ITUB4")
    assert [(t.topic, t.price) for t in got] == [
        ("old", 30.0),
        ("new", 40.0),
        ("old", 31.0),
        ("new", 41.0),
        ("old", 32.0),
    ]
    assert [t.price for t in q.ticks(scratch, "ITUB4", limit=2, newest_first=True)] == [32.0, 41.0]
    (bar,) = q.ohlc(scratch, "ITUB4", "1h")
    assert (bar.open, bar.close, bar.high, bar.low, bar.trades, bar.volume) == (
        30.0,
        32.0,
        41.0,
        30.0,
        5,
        500,
    )
    assert bar.vwap == pytest.approx((30 + 31 + 32 + 40 + 41) / 5)
    (latest,) = q.latest(scratch)
    assert (latest.topic, latest.price) == ("old", 32.0)


# ---- stats and latest -------------------------------------------------------------------------------------


def test_stats_and_latest_match_the_produced_ticks(market: Market, db: Any) -> None:
    resolver = q.CollectionResolver(db, topics=market.sc.topics)
    stats = {s.symbol: s for s in q.stats(db, resolver)}
    latest = {t.symbol: t for t in q.latest(db, resolver)}
    assert set(stats) == set(latest) == {"PETR4", "VALE3"}
    for symbol, sent in market.ticks.items():
        s = stats[symbol]
        assert (s.collection, s.count) == (market.topic_of[symbol], len(sent))
        assert (s.first_ts, s.last_ts, s.last_price) == (sent[0].ts, sent[-1].ts, sent[-1].price)
        assert s.avg_price == pytest.approx(sum(t.price for t in sent) / len(sent))
        assert s.total_volume == sum(t.volume for t in sent)
        assert _key(latest[symbol]) == _key(sent[-1])
    # The same through the settings-based resolver (what the CLI uses).
    settings = market.sc.settings()
    assert q.stats(db, q.CollectionResolver.from_settings(db, settings)) == sorted(
        stats.values(), key=lambda s: s.symbol
    )


# ---- where symbols live -----------------------------------------------------------------------------------


def test_resolver_uses_configured_topics_then_indexed_collections(market: Market, db: Any) -> None:
    petr4, vale3 = market.topic_of["PETR4"], market.topic_of["VALE3"]
    settings = market.sc.settings()
    resolver = q.CollectionResolver.from_settings(db, settings)
    assert resolver.configured() == [petr4, vale3]
    assert resolver.collections_for("petr4") == [petr4]

    # A regex subscription: nothing configured by name, the indexed collections are searched.
    regex = Settings(kafka={"topics": ["^(petr4|vale3)-.*"]}, mongo={"database": market.sc.database})
    by_pattern = q.CollectionResolver.from_settings(db, regex)
    assert by_pattern.configured() == []
    assert by_pattern.collections_for("VALE3") == [vale3]
    assert set(by_pattern.discovered()) >= {petr4, vale3}

    # A topic mapped to another collection name by mongo.collections.
    renamed = Settings(
        kafka={"topics": ["anything"]},
        mongo={"database": market.sc.database, "collections": {"anything": vale3}},
    )
    assert q.CollectionResolver.from_settings(db, renamed).collections_for("vale3") == [vale3]


def test_discovery_skips_dead_letters_system_and_unindexed_collections(scratch: Any) -> None:
    t0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    for name in ("ticks", "dead_letters", "latest"):
        scratch[name].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
        scratch[name].insert_one(stored_doc(name, 0, 0, "BBAS3", t0, 28.0, 100))
    scratch["no_index"].insert_one(stored_doc("no_index", 0, 0, "ABEV3", t0, 12.0, 100))
    scratch["dead_letters"].insert_one(stored_doc("dead_letters", 0, 1, "WEGE3", t0, 52.0, 100))
    resolver = q.CollectionResolver(scratch, exclude=("dead_letters", "latest"))
    assert resolver.discovered() == ["ticks"]
    assert resolver.collections_for("bbas3") == ["ticks"]
    for hidden in ("ABEV3", "WEGE3"):
        with pytest.raises(q.UnknownSymbol, match=f"unknown symbol '{hidden}'.*known symbols: BBAS3"):
            q.ticks(scratch, hidden, collections=resolver)


def test_unknown_symbol_is_a_specific_error_naming_the_known_ones(market: Market, db: Any) -> None:
    resolver = q.CollectionResolver(db, topics=market.sc.topics)
    for call in (
        lambda: q.ticks(db, "XPTO3", collections=resolver),
        lambda: q.ohlc(db, "xpto3", "1h", collections=resolver),
        lambda: q.count_ticks(db, "XPTO3", collections=resolver),
        lambda: resolver.collections_for("XPTO3"),
    ):
        with pytest.raises(q.UnknownSymbol) as info:
            call()
        assert "'XPTO3'" in str(info.value) and "known symbols: PETR4, VALE3" in str(info.value)
    with pytest.raises(q.UnknownSymbol):
        q.ticks(db, "XPTO3", collections=[market.topic_of["PETR4"]])


# ---- hostile and bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "symbol",
    [
        {"$ne": 1},
        {"$gt": ""},
        ["PETR4"],
        5,
        None,
        "$gt",
        "$where",
        "PETR4' || '1'=='1",
        "",
        " ",
        "A" * 33,
        "PE TR4",
    ],
)
def test_hostile_or_malformed_symbols_are_rejected_before_any_query(db: Any, symbol: Any) -> None:
    for call in (
        lambda: q.ticks(db, symbol),
        lambda: q.ohlc(db, symbol, "1m"),
        lambda: q.CollectionResolver(db).collections_for(symbol),
    ):
        with pytest.raises(q.InvalidSymbol):
            call()


def test_a_stored_dollar_symbol_matches_only_literally(scratch: Any) -> None:
    """Query values are typed equality values: even a permissive pattern cannot turn input into operators."""
    t0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    scratch["ticks"].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
    scratch["ticks"].insert_many(
        [stored_doc("ticks", 0, 0, "PETR4", t0, 38.0, 100), stored_doc("ticks", 0, 1, "$GT", t0, 1.0, 1)]
    )
    resolver = q.CollectionResolver(scratch, symbol_pattern=r".+")
    assert [t.price for t in q.ticks(scratch, "$gt", collections=resolver)] == [1.0]
    with pytest.raises(q.UnknownSymbol):
        q.ticks(scratch, "$ne", collections=resolver)


def test_bad_interval_range_time_and_zone_raise_specific_errors(db: Any) -> None:
    late, early = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(q.InvalidInterval, match=r"'2m'.*1m, 5m, 15m, 1h, 1d"):
        q.ohlc(db, "PETR4", "2m")
    with pytest.raises(q.InvalidRange, match="is after"):
        q.ticks(db, "PETR4", start=late, end=early)
    with pytest.raises(q.InvalidRange, match="is after"):
        q.ohlc(db, "PETR4", "1h", start=late, end=early)
    with pytest.raises(q.InvalidRange, match="must be a datetime"):
        q.ticks(db, "PETR4", start="2026-01-01")  # type: ignore[arg-type]
    with pytest.raises(q.QueryError, match="limit"):
        q.ticks(db, "PETR4", limit=-1)
    # (the last two leave the representable years: an error line, not an OverflowError)
    for bad in (
        "yesterday",
        "2026-13-01",
        "-1y",
        "1h",
        "",
        "13:00 PM",
        "-99999999999w",
        "0001-01-01T00:00+01:00",
    ):
        with pytest.raises(q.InvalidTime):
            q.parse_time(bad)
    with pytest.raises(q.InvalidTimezone):
        q.parse_zone("Mars/Olympus_Mons")
    assert all(issubclass(e, q.QueryError) for e in (q.UnknownSymbol, q.InvalidSymbol, q.InvalidRange))


def test_parse_time_accepts_iso_naive_utc_offsets_and_relative_times() -> None:
    now = datetime(2026, 1, 5, 15, 30, tzinfo=UTC)
    assert q.parse_time("2026-01-05T13:00:00", now) == datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
    assert q.parse_time("2026-01-05", now) == datetime(2026, 1, 5, tzinfo=UTC)
    assert q.parse_time("2026-01-05T13:00:00.250Z", now) == datetime(2026, 1, 5, 13, 0, 0, 250000, tzinfo=UTC)
    assert q.parse_time("2026-01-05T10:00-03:00", now) == datetime(2026, 1, 5, 13, 0, tzinfo=UTC)
    assert q.parse_time("now", now) == now
    assert q.parse_time("-90s", now) == now - timedelta(seconds=90)
    assert q.parse_time("-15m", now) == now - timedelta(minutes=15)
    assert q.parse_time("-1.5h", now) == now - timedelta(minutes=90)
    assert q.parse_time("-2d", now) == now - timedelta(days=2)
    assert q.parse_time("-1w", now) == now - timedelta(weeks=1)


# ---- one order of ticks everywhere: ts, then partition, then offset ---------------------------------------


def _tie_docs(collection: str, t0: datetime) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    """Ticks of one symbol, five of them in the same millisecond on three partitions, stored in an order that
    is neither the tick order nor its reverse; returns (documents in insertion order, expected order)."""
    ms = timedelta(milliseconds=1)
    rows = [  # (ts, partition, offset, price)
        (t0, 2, 5, 10.5),
        (t0 + ms, 0, 7, 11.0),
        (t0, 0, 9, 10.2),
        (t0 - ms, 1, 1, 9.0),
        (t0, 1, 3, 10.3),
        (t0, 0, 2, 10.1),
        (t0, 2, 1, 10.4),
    ]
    docs = [stored_doc(collection, p, o, "PETR4", ts, price, 100 + o) for ts, p, o, price in rows]
    expected = sorted(((ts, p, o, price) for ts, p, o, price in rows), key=lambda r: r[:3])
    return docs, expected


def _order(ticks: list[q.Tick]) -> list[tuple[Any, ...]]:
    return [(t.ts, t.partition, t.offset, t.price) for t in ticks]


def test_ticks_of_one_millisecond_are_in_one_order_in_every_query(scratch: Any, tmp_path: Any) -> None:
    from pipeline.read.export import export_ticks

    coll = scratch["ticks"]
    coll.create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
    t0 = datetime(2026, 3, 2, 13, 0, 0, 500000, tzinfo=UTC)
    docs, expected = _tie_docs("ticks", t0)
    coll.insert_many(docs, ordered=True)

    assert _order(q.ticks(scratch, "PETR4")) == expected
    assert _order(q.ticks(scratch, "PETR4", newest_first=True)) == expected[::-1]  # exactly the reverse
    # A limit that cuts through the run of equal ts takes the first ones of the order, in both directions.
    for n in range(1, len(expected) + 1):
        assert _order(q.ticks(scratch, "PETR4", limit=n)) == expected[:n], n
        assert _order(q.ticks(scratch, "PETR4", limit=n, newest_first=True)) == expected[::-1][:n], n
    # Open and close of a bar, the last price of the statistics and the latest tick: the same order.
    (bar,) = q.ohlc(scratch, "PETR4", "1m")
    assert (bar.open, bar.close, bar.trades) == (expected[0][3], expected[-1][3], len(expected))
    (tie_bar,) = q.ohlc(scratch, "PETR4", "1m", start=t0, end=t0 + timedelta(milliseconds=1))
    assert (tie_bar.open, tie_bar.close) == (
        10.1,
        10.5,
    )  # partition 0 offset 2 first, partition 2 offset 5 last
    (stats,) = q.stats(scratch)
    (latest,) = q.latest(scratch)
    assert stats.last_price == latest.price == expected[-1][3]
    assert (latest.ts, latest.partition, latest.offset) == expected[-1][:3]
    # Only the ticks of the newest millisecond: latest and stats still agree.
    coll.delete_many({"ts": {"$ne": t0}})
    (stats,) = q.stats(scratch)
    (latest,) = q.latest(scratch)
    assert stats.last_price == latest.price == 10.5 and (latest.partition, latest.offset) == (2, 5)
    # Exports: the same order.
    out = tmp_path / "ties.jsonl"
    export_ticks(scratch, "PETR4", out, "jsonl")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["partition"], r["offset"]) for r in rows] == [(0, 2), (0, 9), (1, 3), (2, 1), (2, 5)]


def test_the_tick_order_holds_across_collections(scratch: Any) -> None:
    t0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)
    for name in ("a", "b"):
        scratch[name].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
    # Same millisecond in both collections; b also has the same (partition, offset) as a: topic decides.
    scratch["a"].insert_many(
        [stored_doc("a", 1, 4, "PETR4", t0, 1.0, 1), stored_doc("a", 0, 8, "PETR4", t0, 2.0, 1)]
    )
    scratch["b"].insert_many(
        [stored_doc("b", 1, 4, "PETR4", t0, 3.0, 1), stored_doc("b", 0, 3, "PETR4", t0, 4.0, 1)]
    )
    expected = [(0, 3, "b"), (0, 8, "a"), (1, 4, "a"), (1, 4, "b")]
    got = q.ticks(scratch, "PETR4")
    assert [(t.partition, t.offset, t.topic) for t in got] == expected
    newest = q.ticks(scratch, "PETR4", newest_first=True, limit=3)
    assert [(t.partition, t.offset, t.topic) for t in newest] == expected[::-1][:3]
    (bar,) = q.ohlc(scratch, "PETR4", "1h")
    assert (bar.open, bar.close) == (4.0, 3.0)
    (latest,) = q.latest(scratch)
    assert (latest.topic, latest.price) == ("b", 3.0)
    assert {s.collection: s.last_price for s in q.stats(scratch)} == {"a": 1.0, "b": 3.0}


# ---- OHLC aligned to a time zone --------------------------------------------------------------------------


def _local_bucket(ts: datetime, interval: str, zone: Any) -> datetime:
    local = ts.astimezone(zone)
    if interval == "1d":
        local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        local = local.replace(minute=0, second=0, microsecond=0)
    # Midnight is never in a DST gap in these zones; `fold` keeps the two 01:00 hours of a fall-back apart.
    return local.astimezone(UTC)


@pytest.mark.parametrize(
    ("zone", "interval", "first_day"),
    [
        ("America/New_York", "1d", datetime(2026, 3, 6, tzinfo=UTC)),  # spring forward on 2026-03-08
        ("America/New_York", "1d", datetime(2026, 10, 30, tzinfo=UTC)),  # fall back on 2026-11-01
        ("America/New_York", "1h", datetime(2026, 3, 7, 20, tzinfo=UTC)),
        ("America/New_York", "1h", datetime(2026, 10, 31, 20, tzinfo=UTC)),
        ("Asia/Kolkata", "1h", datetime(2026, 3, 6, tzinfo=UTC)),  # UTC+05:30: hours start at :30 UTC
        ("America/Sao_Paulo", "1d", datetime(2026, 3, 6, tzinfo=UTC)),
    ],
)
def test_ohlc_aligned_to_a_zone_follows_its_local_midnight_and_hours_across_dst(
    scratch: Any, zone: str, interval: str, first_day: datetime
) -> None:
    coll = scratch["ticks"]
    coll.create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
    step = timedelta(minutes=20) if interval == "1h" else timedelta(hours=1, minutes=10)
    count = 30 if interval == "1h" else 90
    times = [first_day + i * step for i in range(count)]
    coll.insert_many([stored_doc("ticks", 0, i, "VALE3", ts, 60.0 + i, 100) for i, ts in enumerate(times)])
    tz = q.parse_zone(zone)
    groups: dict[datetime, list[int]] = {}
    for i, ts in enumerate(times):
        groups.setdefault(_local_bucket(ts, interval, tz), []).append(i)
    expected = [(start, 60.0 + ix[0], 60.0 + ix[-1], len(ix)) for start, ix in sorted(groups.items())]
    bars = q.ohlc(scratch, "VALE3", interval, align_tz=zone)
    assert [(b.start, b.open, b.close, b.trades) for b in bars] == expected
    assert all(b.start.utcoffset() == timedelta(0) for b in bars)
    if interval == "1d":
        # Every bar starts at local midnight; a DST day is 23 or 25 hours long.
        assert {b.start.astimezone(tz).time() for b in bars} == {datetime.min.time()}
    # The same zone as a ZoneInfo; UTC (the default) is plain UTC alignment.
    assert q.ohlc(scratch, "VALE3", interval, align_tz=tz) == bars
    assert q.ohlc(scratch, "VALE3", interval, align_tz="UTC") == q.ohlc(scratch, "VALE3", interval)


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "$tz", "$$ROOT", "", "../etc/passwd", 5])
def test_a_bad_alignment_zone_is_rejected_before_any_query(db: Any, zone: Any) -> None:
    with pytest.raises(q.InvalidTimezone):
        q.ohlc(db, "PETR4", "1d", align_tz=zone)
    with pytest.raises(q.InvalidTimezone):
        q.ohlc_pipeline("PETR4", "1d", align_tz=zone)


def test_every_name_of_the_former_module_is_importable_from_the_package() -> None:
    import pipeline
    from pipeline import query

    assert query is q and pipeline.query is q
    names = [
        "Bar",
        "CollectionResolver",
        "Collections",
        "DEFAULT_SYMBOL_PATTERN",
        "Db",
        "INTERVALS",
        "InvalidInterval",
        "InvalidRange",
        "InvalidSymbol",
        "InvalidTime",
        "InvalidTimezone",
        "QueryError",
        "SYMBOL_PATTERN",
        "SymbolStats",
        "TICK_INDEX_NAME",
        "Tick",
        "UnknownSymbol",
        "check_interval",
        "check_range",
        "count_ticks",
        "interval_delta",
        "iter_ticks",
        "latest",
        "normalize_symbol",
        "ohlc",
        "ohlc_pipeline",
        "parse_time",
        "parse_zone",
        "stats",
        "symbol_stats",
        "tick_filter",
        "tick_sort",
        "ticks",
    ]
    assert [n for n in names if not hasattr(q, n)] == []
    assert set(q.__all__) >= set(names)
    assert not hasattr(q, "resolve")  # unused, removed
