"""MongoDB side: connection, indexes, and one unordered bulk insert per collection per batch.

`insert` reports, per document, whether it was stored, already there (duplicate `_id`: a re-delivery, which
is success), must be retried (a transient per-document error), or can never be stored (a data error). Whole-
request failures (network, elections, write-concern errors) raise and are retried by the writer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bson.errors import InvalidDocument
from pymongo import ASCENDING, MongoClient, UpdateOne, WriteConcern
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    DocumentTooLarge,
    OperationFailure,
    PyMongoError,
    WriteError,
)
from pymongo.read_concern import ReadConcern

from pipeline.clients.mongo import make_client
from pipeline.core.codec import TICK_INDEX, TICK_INDEX_NAME
from pipeline.core.errors import (
    DUPLICATE_KEY,
    TRANSIENT_MONGO_CODES,
    FatalError,
    StartupError,
    TransientError,
    describe,
)
from pipeline.ops.config import MongoConfig, TimeSeriesOptions
from pipeline.ops.logs import get_logger
from pipeline.ops.redact import redact_text, redact_uri

log = get_logger("pipeline.clients.sink")
COORDINATES_INDEX = [("_id.topic", ASCENDING), ("_id.partition", ASCENDING), ("_id.offset", ASCENDING)]


@dataclass(frozen=True, slots=True)
class CollectionPlan:
    """How one collection is written (from the options of the topic(s) that map to it)."""

    name: str
    history: bool = True  # insert every document (idempotent by _id)
    latest: bool = False  # upsert the latest tick of each symbol into the latest collection
    timeseries: TimeSeriesOptions | None = None

    @property
    def deduplicate(self) -> bool:
        # Time-series collections do not enforce a unique _id: re-delivered ticks are filtered out by
        # reading which of the batch's coordinates are already stored, before inserting.
        return self.timeseries is not None


@dataclass(slots=True)
class InsertOutcome:
    inserted: int = 0
    # indexes of documents already stored (duplicate `_id`: a re-delivery, i.e. success).
    duplicates: list[int] = field(default_factory=list)
    # (index into the submitted list, error code, message) of documents MongoDB will never accept.
    rejected: list[tuple[int, int, str]] = field(default_factory=list)
    # indexes of documents that failed transiently and must be sent again.
    retry: list[int] = field(default_factory=list)


def _is_id_duplicate(error: Mapping[str, Any]) -> bool:
    """A duplicate on `_id` is a re-delivery; a duplicate on some other unique index is not."""
    pattern = error.get("keyPattern")
    if pattern is not None:
        return list(pattern) == ["_id"]
    message = str(error.get("errmsg", ""))
    return "_id_" in message or ("_id" in message and "dup key" in message)


class MongoSink:
    def __init__(self, config: MongoConfig, client: MongoClient[dict[str, Any]] | None = None) -> None:
        self.config = config
        self.client = client if client is not None else make_client(config)
        wc = config.write_concern
        self.write_concern = WriteConcern(w=wc.w, j=wc.j, wtimeout=wc.wtimeout_ms or None)
        self.db: Database[dict[str, Any]] = self.client.get_database(
            config.database, write_concern=self.write_concern
        )
        self._collections: dict[str, Collection[dict[str, Any]]] = {}
        self._indexed: set[str] = set()
        self.secrets = [s for s in (config.password, config.uri) if s is not None]

    def redact(self, text: str) -> str:
        return redact_text(text, [s.get_secret_value() for s in self.secrets])

    @property
    def where(self) -> str:
        return redact_uri(self.config.uri.get_secret_value())

    def check_connection(self, timeout_s: float) -> dict[str, Any]:
        """Ping (and authenticate) within a bounded time, or raise StartupError with one clear line."""
        try:
            self.client.admin.command("ping", maxTimeMS=int(timeout_s * 1000))
            hello: dict[str, Any] = self.client.admin.command("hello")
        except OperationFailure as exc:
            raise StartupError(f"MongoDB at {self.where} refused us: {self.redact(describe(exc))}") from None
        except Exception as exc:
            raise StartupError(
                f"cannot reach MongoDB at {self.where}: {self.redact(describe(exc))}"
            ) from None
        return hello

    def collection(self, name: str) -> Collection[dict[str, Any]]:
        coll = self._collections.get(name)
        if coll is None:
            coll = self._collections[name] = self.db.get_collection(name)
        return coll

    def ensure_indexes(self, name: str) -> None:
        """Create the {symbol: 1, ts: 1} index once per collection (idempotent on the server)."""
        self.ensure_collection(CollectionPlan(name))

    def ensure_collection(self, plan: CollectionPlan) -> None:
        """Create the collection as planned (time-series if asked) and its indexes, once per process."""
        if plan.name in self._indexed:
            return
        if plan.timeseries is not None:
            self._create_timeseries(plan.name, plan.timeseries)
        if self.config.create_indexes:
            self.collection(plan.name).create_index(TICK_INDEX, name=TICK_INDEX_NAME)
            if plan.deduplicate:
                try:
                    self.collection(plan.name).create_index(COORDINATES_INDEX, name="kafka_coordinates")
                except OperationFailure as exc:  # e.g. a server without measurement-field indexes
                    log.warning(
                        "no index on _id coordinates: de-duplication reads will scan",
                        collection=plan.name,
                        error=describe(exc),
                    )
        self._indexed.add(plan.name)

    def _create_timeseries(self, name: str, options: TimeSeriesOptions) -> None:
        spec = {"timeField": "ts", "metaField": "symbol", "granularity": options.granularity}
        extra: dict[str, Any] = (
            {"expireAfterSeconds": options.expire_after_s} if options.expire_after_s else {}
        )
        try:
            self.db.create_collection(name, timeseries=spec, **extra)
            log.info("created time-series collection", collection=name, **spec, **extra)
        except CollectionInvalid:  # already there: fine if it is a time-series collection
            info = next(iter(self.db.list_collections(filter={"name": name})), {})
            if "timeseries" not in info.get("options", {}):
                log.warning(
                    "collection exists and is not a time-series collection; using it as it is",
                    collection=name,
                )

    def insert_deduplicated(self, name: str, documents: list[dict[str, Any]]) -> InsertOutcome:
        """Insert only the documents whose coordinates are not stored yet (for collections without a unique
        _id). Reads with majority read concern, so a write that could still be rolled back is not trusted."""
        ranges: dict[tuple[str, int], list[int]] = {}
        for doc in documents:
            _id = doc["_id"]
            bounds = ranges.setdefault((_id["topic"], _id["partition"]), [_id["offset"], _id["offset"]])
            bounds[0] = min(bounds[0], _id["offset"])
            bounds[1] = max(bounds[1], _id["offset"])
        coll = self.collection(name).with_options(read_concern=ReadConcern("majority"))
        existing: set[tuple[str, int, int]] = set()
        for (topic, partition), (low, high) in ranges.items():
            query = {
                "_id.topic": topic,
                "_id.partition": partition,
                "_id.offset": {"$gte": low, "$lte": high},
            }
            for found in coll.find(query, {"_id": 1}):
                existing.add((topic, partition, found["_id"]["offset"]))
        fresh: list[int] = []
        outcome = InsertOutcome()
        for index, doc in enumerate(documents):
            _id = doc["_id"]
            if (_id["topic"], _id["partition"], _id["offset"]) in existing:
                outcome.duplicates.append(index)
            else:
                fresh.append(index)
        if fresh:
            part = self.insert(name, [documents[i] for i in fresh])
            outcome.inserted = part.inserted
            outcome.duplicates += [fresh[i] for i in part.duplicates]
            outcome.rejected = [(fresh[i], code, message) for i, code, message in part.rejected]
            outcome.retry = [fresh[i] for i in part.retry]
        return outcome

    def upsert_latest(self, documents: list[dict[str, Any]]) -> int:
        """Keep the newest tick of each symbol in the latest collection. Conditional upserts: a tick older
        than (or as old as) the stored one changes nothing, so re-delivery can never move it back.
        Returns the number of symbols updated."""
        newest: dict[str, dict[str, Any]] = {}
        for doc in documents:
            current = newest.get(doc["symbol"])
            if current is None or doc["ts"] > current["ts"]:
                newest[doc["symbol"]] = doc
        if not newest:
            return 0
        ops = [
            UpdateOne(
                {"_id": symbol, "ts": {"$lt": doc["ts"]}},
                {
                    "$set": {
                        "symbol": symbol,
                        "ts": doc["ts"],
                        "price": doc["price"],
                        "volume": doc["volume"],
                        "source": doc["_id"],
                        "updated_at": doc["ingested_at"],
                    }
                },
                upsert=True,
            )
            for symbol, doc in newest.items()
        ]
        try:
            result = self.collection(self.config.latest_collection).bulk_write(ops, ordered=False)
            return result.upserted_count + result.modified_count
        except BulkWriteError as exc:
            details = exc.details
            if details.get("writeConcernErrors"):
                raise TransientError("write concern not satisfied on the latest collection") from None
            # E11000: the stored tick is newer: nothing to do. Anything else is not expected here.
            others = [e for e in details.get("writeErrors", []) if e.get("code") != DUPLICATE_KEY]
            if any(e.get("code") in TRANSIENT_MONGO_CODES for e in others):
                raise TransientError(f"latest collection: {others[0].get('errmsg')}") from None
            if others:
                raise FatalError(f"latest collection rejected an update: {others[0].get('errmsg')}") from None
            return int(details.get("nUpserted", 0)) + int(details.get("nModified", 0))

    def prepare(self, plans: list[CollectionPlan]) -> None:
        """Start-up: create the known collections and their indexes, or raise StartupError with one clear
        line (e.g. the credentials are valid but not allowed to write to this database)."""
        for plan in plans:
            name = plan.name
            try:
                self.ensure_collection(plan)
            except OperationFailure as exc:
                reason = self.redact(describe(exc))
                raise StartupError(
                    f"MongoDB at {self.where} refused to prepare {self.db.name}.{name}: {reason}"
                ) from None
            except PyMongoError as exc:
                raise StartupError(
                    f"cannot reach MongoDB at {self.where}: {self.redact(describe(exc))}"
                ) from None

    def insert(self, name: str, documents: list[dict[str, Any]]) -> InsertOutcome:
        """One unordered bulk insert. Raises on whole-request failures (classified by the caller)."""
        coll = self.collection(name)
        try:
            coll.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            return self._outcome(exc, len(documents))
        except (InvalidDocument, DocumentTooLarge):
            # Should not happen (the codec validates first), but never let one document sink a batch.
            return self._insert_one_by_one(coll, documents)
        return InsertOutcome(inserted=len(documents))

    def _outcome(self, exc: BulkWriteError, submitted: int) -> InsertOutcome:
        details = exc.details
        if details.get("writeConcernErrors"):
            first = details["writeConcernErrors"][0]
            raise TransientError(f"write concern not satisfied: {first.get('errmsg', first)}")
        outcome = InsertOutcome()
        for error in details.get("writeErrors", []):
            code = int(error.get("code", 0))
            index = int(error["index"])
            if code == DUPLICATE_KEY and _is_id_duplicate(error):
                outcome.duplicates.append(index)
            elif code in TRANSIENT_MONGO_CODES:
                outcome.retry.append(index)
            else:
                outcome.rejected.append((index, code, str(error.get("errmsg", ""))[:500]))
        outcome.inserted = submitted - len(outcome.duplicates) - len(outcome.retry) - len(outcome.rejected)
        return outcome

    def _insert_one_by_one(
        self, coll: Collection[dict[str, Any]], documents: list[dict[str, Any]]
    ) -> InsertOutcome:
        outcome = InsertOutcome()
        for index, document in enumerate(documents):
            try:
                coll.insert_one(document)
                outcome.inserted += 1
            except (InvalidDocument, DocumentTooLarge) as exc:
                outcome.rejected.append((index, 0, f"{type(exc).__name__}: {str(exc)[:300]}"))
            except WriteError as exc:  # per-document errors only; anything else propagates to the retry loop
                if exc.code == DUPLICATE_KEY and _is_id_duplicate(exc.details or {}):
                    outcome.duplicates.append(index)
                elif exc.code in TRANSIENT_MONGO_CODES:
                    outcome.retry.append(index)
                else:
                    outcome.rejected.append((index, exc.code or 0, describe(exc)))
        return outcome

    def close(self) -> None:
        self.client.close()
