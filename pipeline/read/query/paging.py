"""Keyset paging over the tick order: the ticks that come after a given tick, in either direction.

A page ends at a tick; the next page is every tick after it in the tick order (ts, partition, offset,
topic; see `model`), found by narrowing the `ts` range to that tick's `ts` (the `{symbol, ts}` index) and
dropping the ticks of the same `ts` that are not after it. No skip: each page costs about its own size,
however deep it is, and ticks stored meanwhile before the cursor never shift a page. Ties are exact:
ticks sharing the last tick's `ts` are continued in partition, offset, topic order.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from pipeline.read.query.errors import QueryError
from pipeline.read.query.model import Db, OrderKey, Tick, order_key
from pipeline.read.query.params import check_limit, check_range
from pipeline.read.query.resolver import Collections
from pipeline.read.query.ticks import iter_ticks

# BSON dates have millisecond precision: the smallest step above a stored ts.
_BSON_TICK = timedelta(milliseconds=1)
# Extra ticks per cursor batch beyond the page (the ticks at the cursor's ts that are dropped).
_TIE_ALLOWANCE = 16


def check_order_key(key: object) -> OrderKey:
    """An order key (ts, partition, offset, topic) with an aware ts, as a cursor must carry."""
    if (
        not isinstance(key, tuple)
        or len(key) != 4
        or not isinstance(key[0], datetime)
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in key[1:3])
        or not isinstance(key[3], str)
    ):
        raise QueryError(f"a tick position is (ts, partition, offset, topic), got {key!r}")
    ts = key[0] if key[0].tzinfo is not None else key[0].replace(tzinfo=UTC)
    return (ts.astimezone(UTC), key[1], key[2], key[3])


def iter_ticks_after(
    db: Db,
    symbol: str,
    after: OrderKey | None = None,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
    newest_first: bool = False,
    collections: Collections = None,
) -> Iterator[Tick]:
    """The ticks of `symbol` with start <= ts < end that come after the tick at `after` (an `order_key`) in
    the tick order (or, newest first, before it: the next ones in that direction), at most `limit`.
    Without `after`, the same as `iter_ticks`. The tick at `after` itself is never included.

    Validation is that of `iter_ticks` (UnknownSymbol when the stream is first read)."""
    lo, hi = check_range(start, end)
    limit = check_limit(limit)
    if after is not None:
        key = check_order_key(after)
        if newest_first:  # ticks at ts <= the cursor's: end just above it (BSON dates are milliseconds)
            above = key[0] + _BSON_TICK if key[0] < datetime.max.replace(tzinfo=UTC) - _BSON_TICK else None
            if above is not None:
                hi = above if hi is None else min(hi, above)
        else:
            lo = key[0] if lo is None else max(lo, key[0])
        if lo is not None and hi is not None and lo > hi:
            lo = hi  # the cursor is outside the range: nothing after it in the range
    batch = (limit or 1000) + _TIE_ALLOWANCE
    stream = iter_ticks(
        db,
        symbol,
        start=lo,
        end=hi,
        newest_first=newest_first,
        collections=collections,
        batch_size=min(batch, 1000),
    )
    if after is not None:
        mark = check_order_key(after)
        if newest_first:
            stream = itertools.dropwhile(lambda t: order_key(t) >= mark, stream)
        else:
            stream = itertools.dropwhile(lambda t: order_key(t) <= mark, stream)
    return itertools.islice(stream, limit) if limit is not None else stream
