"""Reading stored ticks back (library API; `pipeline query` and `pipeline export` are its command line).

Every function takes a pymongo `Database` and returns plain dataclasses, so it works the same from the CLI, a
notebook or a test. Aggregations (OHLC bars, statistics, latest ticks) run on the server.

    from pymongo import MongoClient
    from pipeline import query

    db = MongoClient("mongodb://127.0.0.1:27017/?directConnection=true")["market"]
    query.ticks(db, "petr4", start=datetime(2026, 1, 5, 13, tzinfo=UTC), limit=10)
    query.ohlc(db, "PETR4", "5m")
    query.stats(db)
    query.latest(db)

Ranges are half-open, `start <= ts < end`, in UTC (a naive datetime means UTC). Symbols are stored uppercase
and user input is uppercased. Every query value comes from a typed argument: a symbol must be a string
matching the tick schema's symbol pattern, so it can never become a query operator.

Which collections hold a symbol is decided by a `CollectionResolver`: the collections of the configured topics
(through the topic->collection router), else every collection of the database that has the tick index
`symbol_1_ts_1` (regex subscriptions, symbols of unknown topics), except dead letters and system collections.
Functions also accept an explicit list of collection names instead.
"""

from __future__ import annotations

import heapq
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bson.codec_options import CodecOptions
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import OperationFailure

from pipeline.core.codec import SYMBOL_PATTERN, TICK_INDEX_NAME
from pipeline.core.naming import CollectionRouter, NameError_, is_topic_pattern

if TYPE_CHECKING:
    from pipeline.ops.config import Settings

Db = Database[dict[str, Any]]
DEFAULT_SYMBOL_PATTERN = SYMBOL_PATTERN
# Interval name -> ($dateTrunc unit, binSize). Bars are aligned to UTC.
INTERVALS: dict[str, tuple[str, int]] = {
    "1m": ("minute", 1),
    "5m": ("minute", 5),
    "15m": ("minute", 15),
    "1h": ("hour", 1),
    "1d": ("day", 1),
}
_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)
R = TypeVar("R")


# ---- errors ---------------------------------------------------------------------------------------------


class QueryError(ValueError):
    """Bad input to a query. The message is one line meant for the user."""


class InvalidSymbol(QueryError):
    """Not a string, or does not match the symbol pattern (so it can never be a query operator)."""


class UnknownSymbol(QueryError):
    """No stored tick has this symbol in any tick collection."""


class InvalidRange(QueryError):
    """start is after end, or a bound is not a datetime."""


class InvalidInterval(QueryError):
    """Not one of INTERVALS."""


class InvalidTime(QueryError):
    """A time argument that is neither ISO-8601 nor a relative time such as -1h."""


class InvalidTimezone(QueryError):
    """Not an IANA time zone name (zoneinfo)."""


# ---- results --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tick:
    symbol: str
    ts: datetime  # aware, UTC
    price: float
    volume: int
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Bar:
    """One OHLC bar: ticks with start <= ts < start + interval."""

    start: datetime  # aware, UTC
    open: float
    high: float
    low: float
    close: float
    volume: int
    trades: int
    vwap: float | None  # sum(price * volume) / sum(volume); None when the bar's volume is 0
    first_ts: datetime
    last_ts: datetime


@dataclass(frozen=True)
class SymbolStats:
    symbol: str
    collection: str
    count: int
    first_ts: datetime
    last_ts: datetime
    last_price: float
    avg_price: float
    total_volume: int


# ---- validation -----------------------------------------------------------------------------------------


def normalize_symbol(symbol: object, pattern: str = DEFAULT_SYMBOL_PATTERN) -> str:
    """Uppercase a user-supplied symbol; reject anything that is not a plain symbol string."""
    if not isinstance(symbol, str):
        raise InvalidSymbol(f"symbol must be a string, got {type(symbol).__name__}")
    text = symbol.strip()
    if not re.fullmatch(pattern, text):
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidSymbol(f"invalid symbol {shown!r}: symbols match {pattern}")
    return text.upper()


def _utc(value: object, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise InvalidRange(f"{name} must be a datetime, got {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def check_range(start: object, end: object) -> tuple[datetime | None, datetime | None]:
    """Bounds as aware UTC datetimes (naive means UTC); raises InvalidRange if start > end."""
    lo, hi = _utc(start, "start"), _utc(end, "end")
    if lo is not None and hi is not None and lo > hi:
        raise InvalidRange(f"invalid range: from {_iso(lo)} is after to {_iso(hi)}")
    return lo, hi


def check_interval(interval: object) -> str:
    if not isinstance(interval, str) or interval not in INTERVALS:
        raise InvalidInterval(f"invalid interval {interval!r}: use one of {', '.join(INTERVALS)}")
    return interval


def interval_delta(interval: str) -> timedelta:
    unit, size = INTERVALS[check_interval(interval)]
    per_unit = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}
    return per_unit[unit] * size


_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """ISO-8601 (a naive time means UTC; a date alone means its midnight UTC), `now`, or relative to now:
    -90s, -15m, -1h, -2d, -1w. Returns an aware UTC datetime."""
    value = text.strip()
    now = now or datetime.now(UTC)
    if value.lower() == "now":
        return now
    match = _RELATIVE.match(value)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidTime(
            f"invalid time {text!r}: use ISO-8601 (2026-01-05T13:00:00, naive = UTC; "
            "2026-01-05T10:00:00-03:00) or a relative time (-15m, -1h, -2d)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def parse_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidTimezone(
            f"unknown time zone {name!r}: use an IANA name such as UTC or America/Sao_Paulo"
        ) from None


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds")


# ---- where symbols live ---------------------------------------------------------------------------------


class CollectionResolver:
    """Finds the collections that hold ticks of a symbol.

    `topics`/`router` are the worker's subscriptions and topic->collection mapping: plain topic names give
    the configured collections, which are searched first. When a symbol is not found there (or there are no
    plain topics, e.g. a regex subscription), every collection of the database that has the tick index
    `symbol_1_ts_1` is searched, except `exclude` (dead letters, the latest-tick collection) and system
    collections. Presence is checked with an index lookup per collection.
    """

    def __init__(
        self,
        db: Db,
        *,
        topics: Sequence[str] = (),
        router: CollectionRouter | None = None,
        exclude: Iterable[str] = ("dead_letters",),
        symbol_pattern: str = DEFAULT_SYMBOL_PATTERN,
    ) -> None:
        self.db = db
        self.topics = list(topics)
        self.router = router or CollectionRouter(db.name, "{topic}", {})
        self.exclude = set(exclude)
        self.symbol_pattern = symbol_pattern

    @classmethod
    def from_settings(cls, db: Db, settings: Settings) -> CollectionResolver:
        mongo = settings.mongo
        exclude = {mongo.latest_collection}
        if settings.errors.dead_letter.collection:
            exclude.add(settings.errors.dead_letter.collection)
        return cls(
            db,
            topics=settings.kafka.topics,
            router=settings.collection_router(),
            exclude=exclude,
            symbol_pattern=settings.tick.symbol_pattern,
        )

    def configured(self) -> list[str]:
        """Collections of the configured plain (non-regex) topics, in configuration order."""
        names: list[str] = []
        for topic in self.topics:
            if is_topic_pattern(topic):
                continue
            try:
                name = self.router.collection_for(topic)
            except NameError_:
                continue
            if name not in names and name not in self.exclude:
                names.append(name)
        return names

    def discovered(self) -> list[str]:
        """Collections of the database that have the tick index (dead letters and system collections
        excluded), sorted by name."""
        found = []
        for name in sorted(self.db.list_collection_names()):
            if name.startswith("system.") or name in self.exclude:
                continue
            try:
                indexes = self.db[name].index_information()
            except OperationFailure:  # a view, or a collection dropped meanwhile
                continue
            if TICK_INDEX_NAME in indexes:
                found.append(name)
        return found

    def tick_collections(self) -> list[str]:
        """Every collection that may hold ticks: the configured ones that exist, then the discovered ones."""
        existing = set(self.db.list_collection_names())
        names = [n for n in self.configured() if n in existing]
        names += [n for n in self.discovered() if n not in names]
        return names

    def collections_for(self, symbol: str) -> list[str]:
        """Collections holding at least one tick of `symbol` (normalised); raises UnknownSymbol if none."""
        symbol = normalize_symbol(symbol, self.symbol_pattern)
        configured = self.configured()
        found = [n for n in configured if _has_symbol(self.db[n], symbol)]
        if not found:
            found = [n for n in self.discovered() if n not in configured and _has_symbol(self.db[n], symbol)]
        if not found:
            raise UnknownSymbol(self.unknown_message(symbol))
        return found

    def unknown_message(self, symbol: str) -> str:
        names = self.tick_collections()
        known: set[str] = set()
        for name in names:
            known.update(s for s in self.db[name].distinct("symbol") if isinstance(s, str))
        where = f"collections {', '.join(names)}" if names else "no tick collections"
        listed = sorted(known)
        more = ", ..." if len(listed) > 20 else ""
        hint = f" (known symbols: {', '.join(listed[:20])}{more})" if known else ""
        return f"unknown symbol {symbol!r}: no ticks in database {self.db.name!r}, {where}{hint}"


Collections = Sequence[str] | CollectionResolver | None


def _has_symbol(coll: Collection[dict[str, Any]], symbol: str) -> bool:
    # Covered by the {symbol, ts} index on MongoDB: no document is fetched.
    return coll.find_one({"symbol": symbol}, {"_id": 0, "symbol": 1}) is not None


def _resolver(db: Db, collections: Collections) -> CollectionResolver:
    return collections if isinstance(collections, CollectionResolver) else CollectionResolver(db)


def resolve(db: Db, symbol: object, collections: Collections = None) -> tuple[str, list[str]]:
    """(normalised symbol, collections holding it), probing each candidate collection. Raises InvalidSymbol
    or UnknownSymbol. (The query functions below only probe when a query comes back empty.)"""
    name, tiers = _candidates(db, symbol, collections)
    for names in tiers:
        found = [n for n in names if _has_symbol(db[n], name)]
        if found:
            return name, found
    raise UnknownSymbol(_unknown_message(db, name, collections))


def _candidates(db: Db, symbol: object, collections: Collections) -> tuple[str, Iterator[list[str]]]:
    """The normalised symbol and the tiers of collections to search, in order: the explicit list; or the
    configured collections, then (computed only if needed) the other collections with the tick index."""
    if collections is None or isinstance(collections, CollectionResolver):
        resolver = _resolver(db, collections)
        name = normalize_symbol(symbol, resolver.symbol_pattern)

        def tiers() -> Iterator[list[str]]:
            configured = resolver.configured()
            yield configured
            yield [n for n in resolver.discovered() if n not in configured]

        return name, tiers()
    if isinstance(collections, str):
        raise TypeError("collections must be a list of names, not a string")
    return normalize_symbol(symbol), iter([list(collections)])


def _unknown_message(db: Db, symbol: str, collections: Collections) -> str:
    if collections is None or isinstance(collections, CollectionResolver):
        return _resolver(db, collections).unknown_message(symbol)
    return (
        f"unknown symbol {symbol!r}: no ticks in database {db.name!r}, collections {', '.join(collections)}"
    )


def _first_nonempty(
    db: Db, symbol: str, collections: Collections, tiers: Iterator[list[str]], run: Callable[[list[str]], R]
) -> R:
    """run(names) on the first tier of collections that holds the symbol. A tier whose result is empty
    (falsy) is probed (does it hold the symbol at all, outside the range?) before moving on; no tier holding
    it raises UnknownSymbol. Probing only empty results keeps the common case at one query."""
    for names in tiers:
        if not names:
            continue
        result = run(names)
        if result or any(_has_symbol(db[n], symbol) for n in names):
            return result
    raise UnknownSymbol(_unknown_message(db, symbol, collections))


def _coll(db: Db, name: str) -> Collection[dict[str, Any]]:
    return db.get_collection(name, codec_options=_CODEC)


# ---- ticks ----------------------------------------------------------------------------------------------


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
    """Both keys in the same direction, so MongoDB walks the index (backwards for newest first)."""
    direction = -1 if newest_first else 1
    return [("symbol", direction), ("ts", direction)]


def _tick(doc: dict[str, Any]) -> Tick | None:
    _id = doc.get("_id")
    ts = doc.get("ts")
    price = doc.get("price")
    volume = doc.get("volume")
    if not isinstance(ts, datetime) or not isinstance(price, int | float) or not isinstance(volume, int):
        return None  # not a tick (e.g. a raw-format document that happens to have a symbol)
    coords = _id if isinstance(_id, dict) else {}
    return Tick(
        symbol=str(doc.get("symbol")),
        ts=ts,
        price=float(price),
        volume=int(volume),
        topic=str(coords.get("topic", "")),
        partition=int(coords.get("partition", -1)),
        offset=int(coords.get("offset", -1)),
    )


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
    """Stream the ticks of a symbol in ts order (constant memory: one cursor batch at a time per collection).

    The symbol, range and limit are validated at the call; UnknownSymbol is raised when the stream is first
    read (before any tick is returned)."""
    lo, hi = check_range(start, end)
    if limit is not None and limit < 0:
        raise QueryError(f"limit must be >= 0, got {limit}")
    name, tiers = _candidates(db, symbol, collections)
    query = tick_filter(name, lo, hi)

    def run(names: list[str]) -> _Peeked | None:
        stream = _merged_ticks(db, names, query, newest_first, limit, batch_size)
        first = next(stream, None)
        return None if first is None else _Peeked(first, stream)

    def generate() -> Iterator[Tick]:
        if limit == 0:
            return
        found = _first_nonempty(db, name, collections, tiers, run)
        if found is not None:
            yield found.first
            yield from itertools.islice(found.rest, limit - 1) if limit else found.rest

    return generate()


@dataclass
class _Peeked:
    first: Tick
    rest: Iterator[Tick]


def _merged_ticks(
    db: Db, names: list[str], query: dict[str, Any], newest_first: bool, limit: int | None, batch_size: int
) -> Iterator[Tick]:
    streams = []
    for name in names:
        # Whole documents: they are small, and a projection only slows the SecantusDB test server down.
        cursor = _coll(db, name).find(query, batch_size=batch_size).sort(tick_sort(newest_first))
        if limit:
            cursor = cursor.limit(limit)
        streams.append(t for t in map(_tick, cursor) if t is not None)
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=_ts_key, reverse=newest_first)


def _ts_key(tick: Tick) -> datetime:
    return tick.ts


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
    name, tiers = _candidates(db, symbol, collections)
    query = tick_filter(name, lo, hi)
    return _first_nonempty(
        db, name, collections, tiers, lambda names: sum(_coll(db, n).count_documents(query) for n in names)
    )


# ---- OHLC bars ------------------------------------------------------------------------------------------


def ohlc_pipeline(
    symbol: str, interval: str, start: datetime | None = None, end: datetime | None = None
) -> list[dict[str, Any]]:
    """The server-side aggregation: range $match (index), $sort by ts, $group by $dateTrunc bucket."""
    unit, size = INTERVALS[check_interval(interval)]
    return [
        {"$match": tick_filter(symbol, start, end)},
        {"$sort": {"symbol": 1, "ts": 1}},
        {
            "$group": {
                "_id": {"$dateTrunc": {"date": "$ts", "unit": unit, "binSize": size}},
                "open": {"$first": "$price"},
                "high": {"$max": "$price"},
                "low": {"$min": "$price"},
                "close": {"$last": "$price"},
                "volume": {"$sum": "$volume"},
                "trades": {"$sum": 1},
                "pv": {"$sum": {"$multiply": ["$price", "$volume"]}},
                "first_ts": {"$first": "$ts"},
                "last_ts": {"$last": "$ts"},
            }
        },
        {
            "$project": {
                "_id": 0,
                "start": "$_id",
                "open": 1,
                "high": 1,
                "low": 1,
                "close": 1,
                "volume": 1,
                "trades": 1,
                "pv": 1,
                "first_ts": 1,
                "last_ts": 1,
                "vwap": {"$cond": [{"$gt": ["$volume", 0]}, {"$divide": ["$pv", "$volume"]}, None]},
            }
        },
        {"$sort": {"start": 1}},
    ]


def ohlc(
    db: Db,
    symbol: str,
    interval: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    collections: Collections = None,
) -> list[Bar]:
    """OHLC bars (open, high, low, close, volume, trades, VWAP) of a symbol, computed by MongoDB.

    Bars are aligned to UTC (e.g. 5m bars start at :00, :05, ...; 1d bars at 00:00 UTC); only bars with at
    least one tick are returned. A symbol stored in several collections gets one aggregation per collection,
    and bars of the same start are combined (open of the earliest tick, close of the latest)."""
    check_interval(interval)
    lo, hi = check_range(start, end)
    name, tiers = _candidates(db, symbol, collections)
    pipeline = ohlc_pipeline(name, interval, lo, hi)

    def run(names: list[str]) -> list[Bar]:
        rows: dict[datetime, list[dict[str, Any]]] = {}
        for n in names:
            for row in _coll(db, n).aggregate(pipeline):
                rows.setdefault(row["start"], []).append(row)
        return [_combine(parts) for _, parts in sorted(rows.items())]

    return _first_nonempty(db, name, collections, tiers, run)


def _combine(parts: list[dict[str, Any]]) -> Bar:
    first = min(parts, key=lambda r: r["first_ts"])
    last = max(parts, key=lambda r: r["last_ts"])
    volume = sum(int(r["volume"]) for r in parts)
    if len(parts) == 1:
        vwap = first["vwap"]
    else:
        vwap = sum(float(r["pv"]) for r in parts) / volume if volume else None
    return Bar(
        start=first["start"],
        open=float(first["open"]),
        high=max(float(r["high"]) for r in parts),
        low=min(float(r["low"]) for r in parts),
        close=float(last["close"]),
        volume=volume,
        trades=sum(int(r["trades"]) for r in parts),
        vwap=None if vwap is None else float(vwap),
        first_ts=first["first_ts"],
        last_ts=last["last_ts"],
    )


# ---- per-symbol statistics and latest ticks ------------------------------------------------------------


def symbol_stats(db: Db, collections: Iterable[str]) -> list[SymbolStats]:
    """Per symbol: count, first/last ts, last price, average price, total volume (server-side $group)."""
    pipeline: list[dict[str, Any]] = [
        {"$sort": {"symbol": 1, "ts": 1}},
        {
            "$group": {
                "_id": "$symbol",
                "count": {"$sum": 1},
                "first_ts": {"$first": "$ts"},
                "last_ts": {"$last": "$ts"},
                "last_price": {"$last": "$price"},
                "avg_price": {"$avg": "$price"},
                "total_volume": {"$sum": "$volume"},
            }
        },
        {"$sort": {"_id": 1}},
    ]
    result = []
    for name in collections:
        for row in _coll(db, name).aggregate(pipeline):
            if not isinstance(row["_id"], str) or not isinstance(row["first_ts"], datetime):
                continue  # documents without a symbol or ts (e.g. raw-format data)
            result.append(
                SymbolStats(
                    symbol=row["_id"],
                    collection=name,
                    count=int(row["count"]),
                    first_ts=row["first_ts"],
                    last_ts=row["last_ts"],
                    last_price=float(row["last_price"]),
                    avg_price=float(row["avg_price"]),
                    total_volume=int(row["total_volume"]),
                )
            )
    return sorted(result, key=lambda s: (s.symbol, s.collection))


def _names(db: Db, collections: Collections) -> list[str]:
    if collections is None or isinstance(collections, CollectionResolver):
        return _resolver(db, collections).tick_collections()
    return list(collections)


def stats(db: Db, collections: Collections = None) -> list[SymbolStats]:
    """symbol_stats over every tick collection (see CollectionResolver), one row per symbol and collection."""
    return symbol_stats(db, _names(db, collections))


def latest(db: Db, collections: Collections = None) -> list[Tick]:
    """The newest tick of each symbol (over all its collections), sorted by symbol."""
    pipeline: list[dict[str, Any]] = [
        # Descending on both keys: MongoDB can walk the {symbol, ts} index backwards, first tick per group.
        {"$sort": {"symbol": -1, "ts": -1}},
        {
            "$group": {
                "_id": "$symbol",
                "ts": {"$first": "$ts"},
                "price": {"$first": "$price"},
                "volume": {"$first": "$volume"},
                "coords": {"$first": "$_id"},
            }
        },
    ]
    newest: dict[str, Tick] = {}
    for name in _names(db, collections):
        for row in _coll(db, name).aggregate(pipeline):
            if not isinstance(row["_id"], str):
                continue
            doc = {"_id": row["coords"], "symbol": row["_id"], "ts": row["ts"], "price": row["price"]}
            tick = _tick({**doc, "volume": row["volume"]})
            if tick is not None and (tick.symbol not in newest or tick.ts > newest[tick.symbol].ts):
                newest[tick.symbol] = tick
    return [newest[s] for s in sorted(newest)]
