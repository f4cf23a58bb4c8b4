"""Keyset paging over the tick order (pipeline/read/query/paging.py), on ticks written by the real worker and
on hand-made documents full of ties: every page continues exactly after the last tick of the previous one,
in both directions, whatever the page size, with no tick lost or repeated, and ticks stored before the
cursor meanwhile do not shift the pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import ASCENDING, MongoClient

from pipeline.read import query as q
from tests.harness import Servers, unique
from tests.query_data import BASE, Market, stored_doc

pytestmark = pytest.mark.servers

T0 = datetime(2026, 3, 2, 13, 0, tzinfo=UTC)


@pytest.fixture
def scratch(servers: Servers) -> Iterator[Any]:
    client: MongoClient[dict[str, Any]] = MongoClient(servers.mongo_uri)
    name = unique("pdb").replace("-", "_")
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


def all_pages(db: Any, symbol: str, size: int, newest_first: bool, **kwargs: Any) -> list[list[q.Tick]]:
    pages: list[list[q.Tick]] = []
    after: q.OrderKey | None = None
    while True:
        page = list(
            q.iter_ticks_after(db, symbol, after, limit=size + 1, newest_first=newest_first, **kwargs)
        )
        pages.append(page[:size])
        if len(page) <= size:
            return pages
        after = q.order_key(page[size - 1])


def tied(db: Any) -> list[dict[str, Any]]:
    """Two collections holding one symbol; runs of up to 7 ticks share a ts (partitions and offsets and
    topics interleaved), so page boundaries fall inside runs."""
    docs: dict[str, list[dict[str, Any]]] = {"old": [], "new": []}
    offsets = {("old", p): 0 for p in range(3)} | {("new", p): 0 for p in range(3)}
    for i in range(60):
        ts = T0 + timedelta(seconds=i // 7)
        topic = "old" if i % 3 else "new"
        partition = (i * 5) % 3
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] += 1
        docs[topic].append(stored_doc(topic, partition, offset, "ITUB4", ts, 30.0 + i / 100, 100 + i))
    for name, batch in docs.items():
        db[name].create_index([("symbol", ASCENDING), ("ts", ASCENDING)], name=q.TICK_INDEX_NAME)
        db[name].insert_many(batch)
    return docs["old"] + docs["new"]


@pytest.mark.parametrize("size", [1, 2, 5, 7, 13, 60, 100])
@pytest.mark.parametrize("newest_first", [False, True], ids=["oldest_first", "newest_first"])
def test_pages_over_ties_are_exactly_the_full_list(scratch: Any, size: int, newest_first: bool) -> None:
    docs = tied(scratch)
    everything = q.ticks(scratch, "ITUB4", newest_first=newest_first)
    assert len(everything) == len(docs) == 60
    keys = [q.order_key(t) for t in everything]
    assert keys == sorted(keys, reverse=newest_first)  # the one tick order, exactly reversed
    pages = all_pages(scratch, "itub4", size, newest_first)
    assert [t for page in pages for t in page] == everything
    assert all(len(page) == size for page in pages[:-1])


def test_a_cursor_inside_a_run_of_equal_ts_continues_within_the_run(scratch: Any) -> None:
    tied(scratch)
    run = [t for t in q.ticks(scratch, "ITUB4") if t.ts == T0 + timedelta(seconds=3)]
    assert len(run) == 7 and len({(t.partition, t.offset, t.topic) for t in run}) == 7
    after = q.order_key(run[2])
    got = list(q.iter_ticks_after(scratch, "ITUB4", after, limit=4))
    assert got == run[3:7]
    before = list(q.iter_ticks_after(scratch, "ITUB4", after, limit=2, newest_first=True))
    assert before == [run[1], run[0]]


def test_ticks_stored_before_the_cursor_do_not_shift_the_next_page(scratch: Any) -> None:
    tied(scratch)
    first = list(q.iter_ticks_after(scratch, "ITUB4", None, limit=10))
    after = q.order_key(first[-1])
    expected = list(q.iter_ticks_after(scratch, "ITUB4", after, limit=10))
    # A late tick at the very first ts, and one in the middle of the run the cursor is in.
    scratch["old"].insert_many(
        [
            stored_doc("old", 9, 0, "ITUB4", T0, 1.0, 1),
            stored_doc("old", 0, 999, "ITUB4", first[-1].ts, 2.0, 1),  # partition 0 < cursor's: before it
        ]
    )
    assert first[-1].partition > 0
    assert list(q.iter_ticks_after(scratch, "ITUB4", after, limit=10)) == expected


def test_pages_of_worker_written_ticks_with_a_range(market: Market, servers: Servers) -> None:
    with MongoClient(servers.mongo_uri) as client:
        db = client[market.sc.database]
        sent = market.ticks["PETR4"]
        start, end = sent[20].ts, sent[200].ts
        for newest_first in (False, True):
            full = q.ticks(db, "PETR4", start=start, end=end, newest_first=newest_first)
            assert len(full) == 180
            pages = all_pages(db, "PETR4", 17, newest_first, start=start, end=end)
            assert [t for page in pages for t in page] == full
        # A cursor outside the range: nothing after it in that range.
        late = (BASE + timedelta(days=1), 0, 0, "")
        assert list(q.iter_ticks_after(db, "PETR4", late, start=start, end=end)) == []
        early = (BASE - timedelta(days=1), 0, 0, "")
        assert list(q.iter_ticks_after(db, "PETR4", early, start=start, end=end, newest_first=True)) == []


def test_bad_positions_and_unknown_symbols_are_query_errors(scratch: Any) -> None:
    tied(scratch)
    with pytest.raises(q.QueryError):
        list(q.iter_ticks_after(scratch, "ITUB4", ("2026-01-01", 0, 0, "t")))  # type: ignore[arg-type]
    with pytest.raises(q.QueryError):
        list(q.iter_ticks_after(scratch, "ITUB4", (T0, True, 0, "t")))
    with pytest.raises(q.UnknownSymbol):
        list(q.iter_ticks_after(scratch, "NOPE3", None, limit=5))
    with pytest.raises(q.InvalidSymbol):
        q.iter_ticks_after(scratch, {"$gt": ""}, None)  # type: ignore[arg-type]
    naive = (T0.replace(tzinfo=None), 0, 0, "old")
    assert q.check_order_key(naive)[0] == T0
