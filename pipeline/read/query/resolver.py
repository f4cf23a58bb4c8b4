"""Which collections hold a symbol's ticks.

A `CollectionResolver` knows the collections of the configured topics (through the topic->collection router)
and otherwise every collection of the database that has the tick index `symbol_1_ts_1` (regex subscriptions,
symbols of unknown topics), except dead letters, the latest-tick collection and system collections. The query
functions accept a resolver, an explicit list of collection names, or None (a resolver with no configuration).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from pipeline.core.codec import TICK_INDEX_NAME
from pipeline.core.naming import CollectionRouter, NameError_, is_topic_pattern
from pipeline.read.query.errors import UnknownSymbol
from pipeline.read.query.model import Db
from pipeline.read.query.params import DEFAULT_SYMBOL_PATTERN, normalize_symbol

if TYPE_CHECKING:
    from pipeline.ops.config import Settings

R = TypeVar("R")


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
        found = [n for n in configured if has_symbol(self.db[n], symbol)]
        if not found:
            found = [n for n in self.discovered() if n not in configured and has_symbol(self.db[n], symbol)]
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


def has_symbol(coll: Collection[dict[str, Any]], symbol: str) -> bool:
    # Covered by the {symbol, ts} index on MongoDB: no document is fetched.
    return coll.find_one({"symbol": symbol}, {"_id": 0, "symbol": 1}) is not None


def _resolver(db: Db, collections: Collections) -> CollectionResolver:
    return collections if isinstance(collections, CollectionResolver) else CollectionResolver(db)


def all_collections(db: Db, collections: Collections) -> list[str]:
    """Every tick collection to aggregate over: the explicit list, or the resolver's tick collections."""
    if collections is None or isinstance(collections, CollectionResolver):
        return _resolver(db, collections).tick_collections()
    return list(collections)


def candidates(db: Db, symbol: object, collections: Collections) -> tuple[str, Iterator[list[str]]]:
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


def first_nonempty(
    db: Db, symbol: str, collections: Collections, tiers: Iterator[list[str]], run: Callable[[list[str]], R]
) -> R:
    """run(names) on the first tier of collections that holds the symbol. A tier whose result is empty
    (falsy) is probed (does it hold the symbol at all, outside the range?) before moving on; no tier holding
    it raises UnknownSymbol. Probing only empty results keeps the common case at one query."""
    for names in tiers:
        if not names:
            continue
        result = run(names)
        if result or any(has_symbol(db[n], symbol) for n in names):
            return result
    raise UnknownSymbol(_unknown_message(db, symbol, collections))
