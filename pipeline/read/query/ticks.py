"""Listing and counting the ticks of a symbol in a time range, in the one tick order (see `model`)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipeline.read.query.model import Db, Tick, collection, order_key, tick_from_doc
from pipeline.read.query.params import check_limit, check_range
from pipeline.read.query.resolver import Collections, candidates, first_nonempty


def tick_filter(symbol: str, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """The range filter: equality on symbol, half-open range on ts (the {symbol: 1, ts: 1} index)."""
    query: dict[str, Any] = {"symbol": symbol}
    bounds: dict[str, datetime] = {}
    if start is not None:
        bounds["$gte"] = start
    if end is not None:
        bounds["$lt"] = end
    if bounds:
        query["ts"] = bounds
    return query


def tick_sort(newest_first: bool) -> list[tuple[str, int]]:
    """The server-side sort: both index keys in the same direction, so MongoDB walks the {symbol, ts} index
    (backwards for newest first) instead of sorting. Ticks of the same ts are then put in the tick order on
    the client (`in_tick_order`)."""
    direction = -1 if newest_first else 1
    return [("symbol", direction), ("ts", direction)]


def in_tick_order(ticks: Iterator[Tick], newest_first: bool = False) -> Iterator[Tick]:
    """Ticks sorted by ts (as the index returns them) in the full tick order: each run of equal ts sorted by
    partition, offset, topic (descending for newest first). Streams: only one run is held at a time."""
    run: list[Tick] = []
    for tick in ticks:
        if run and tick.ts != run[0].ts:
            yield from sorted(run, key=order_key, reverse=newest_first)
            run = []
        run.append(tick)
    yield from sorted(run, key=order_key, reverse=newest_first)


def _collection_ticks(
    db: Db, name: str, query: dict[str, Any], newest_first: bool, limit: int | None, batch_size: int
) -> Iterator[Tick]:
    # No server-side limit: the run of ticks sharing the ts of the limit-th tick must be read whole to know
    # which of them come first. The first batch holds limit + 1 ticks, so in the common case (no tie at
    # the boundary) one batch is read; the cursor is closed as soon as the caller stops. Whole documents:
    # they are small, and a projection only slows the SecantusDB test server down.
    size = min(batch_size, limit + 1) if limit else batch_size
    cursor = collection(db, name).find(query, batch_size=size).sort(tick_sort(newest_first))
    try:
        stream = (t for t in map(tick_from_doc, cursor) if t is not None)
        yield from in_tick_order(stream, newest_first)
    finally:
        cursor.close()


def _merged(
    db: Db, names: list[str], query: dict[str, Any], newest_first: bool, limit: int | None, batch_size: int
) -> Iterator[Tick]:
    streams = [_collection_ticks(db, n, query, newest_first, limit, batch_size) for n in names]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=order_key, reverse=newest_first)


@dataclass
class _Peeked:
    first: Tick
    rest: Iterator[Tick]


def iter_ticks(
    db: Db,
    symbol: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    collections: Collections = None,
    batch_size: int = 1000,
) -> Iterator[Tick]:
    """Stream the ticks of a symbol in the tick order (ts, partition, offset; reversed for newest first), in
    constant memory (one cursor batch at a time per collection).

    The symbol, range and limit are validated at the call; UnknownSymbol is raised when the stream is first
    read (before any tick is returned)."""
    lo, hi = check_range(start, end)
    limit = check_limit(limit)
    name, tiers = candidates(db, symbol, collections)
    query = tick_filter(name, lo, hi)

    def run(names: list[str]) -> _Peeked | None:
        stream = _merged(db, names, query, newest_first, limit, batch_size)
        first = next(stream, None)
        return None if first is None else _Peeked(first, stream)

    def generate() -> Iterator[Tick]:
        if limit == 0:
            return
        found = first_nonempty(db, name, collections, tiers, run)
        if found is not None:
            yield found.first
            yield from itertools.islice(found.rest, limit - 1) if limit else found.rest

    return generate()


def ticks(
    db: Db,
    symbol: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    collections: Collections = None,
) -> list[Tick]:
    """The ticks of a symbol with start <= ts < end, oldest first (or newest first), at most `limit`."""
    return list(
        iter_ticks(
            db, symbol, start=start, end=end, limit=limit, newest_first=newest_first, collections=collections
        )
    )


def count_ticks(
    db: Db,
    symbol: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    collections: Collections = None,
) -> int:
    """How many ticks of the symbol have start <= ts < end (index count on MongoDB)."""
    lo, hi = check_range(start, end)
    name, tiers = candidates(db, symbol, collections)
    query = tick_filter(name, lo, hi)

    def count(names: list[str]) -> int:
        return sum(collection(db, n).count_documents(query) for n in names)

    return first_nonempty(db, name, collections, tiers, count)
