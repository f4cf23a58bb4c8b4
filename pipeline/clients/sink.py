"""MongoDB side of the write path: collections and indexes, bulk inserts, the latest-tick upserts and the
record of which Kafka topic each collection holds.

The sink does I/O and reports what the server said; what that means for each document is decided by
`pipeline.core.write_outcome` (never by an error message's wording). Whole-request failures (network,
elections, timeouts) raise and are retried by the writer; a write-concern error raises `TransientError`
after noting which documents the server did insert.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson.decimal128 import Decimal128
from pymongo import ASCENDING, MongoClient, WriteConcern
from pymongo.client_session import ClientSession
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import (
    BulkWriteError,
    CollectionInvalid,
    ConfigurationError,
    DocumentTooLarge,
    DuplicateKeyError,
    InvalidOperation,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)
from pymongo.read_concern import ReadConcern

from pipeline.clients.mongo import make_client
from pipeline.core.codec import TICK_INDEX, TICK_INDEX_NAME
from pipeline.core.errors import (
    TRANSIENT_MONGO_CODES,
    FatalError,
    StartupError,
    TransientError,
    describe,
)
from pipeline.core.errors import ConfigurationError as ConfigurationRefused
from pipeline.core.storage import CollectionPlan, TimeSeries
from pipeline.core.write_outcome import BulkErrors, id_key, read_bulk_errors, write_concern_error
from pipeline.ops.config import MongoConfig
from pipeline.ops.logs import get_logger
from pipeline.ops.redact import redact_text, redact_uri

log = get_logger("pipeline.clients.sink")
COORDINATES_INDEX = [("_id.topic", ASCENDING), ("_id.partition", ASCENDING), ("_id.offset", ASCENDING)]
# Which Kafka topic (topic id, cluster id) each collection holds ticks of.
SOURCES_COLLECTION = "tickpipe_sources"
# MongoDB's maxWriteBatchSize: the most documents one insert command may carry.
MAX_WRITE_BATCH = 100_000


class WriteConcernFailed(TransientError):
    """The server applied (some of) the write but could not confirm it with the write concern."""

    def __init__(self, message: str, inserted: list[int]) -> None:
        super().__init__(message)
        self.inserted = inserted  # indexes the server reported inserted: they are ours when seen again


@dataclass(frozen=True, slots=True)
class TopicIdentity:
    """Which topic a topic name stands for: Kafka gives every topic a new id when it is (re-)created."""

    topic_id: str | None
    cluster_id: str | None


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
        self._prepared: set[str] = set()
        # collection -> whether it has a unique index besides _id (listIndexes, read once)
        self._other_unique: dict[str, bool] = {}
        self.secrets = [s for s in (config.password, config.uri) if s is not None]
        self._sessions_supported: bool | None = None

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
        self._sessions_supported = hello.get("logicalSessionTimeoutMinutes") is not None
        return hello

    def collection(self, name: str) -> Collection[dict[str, Any]]:
        coll = self._collections.get(name)
        if coll is None:
            coll = self._collections[name] = self.db.get_collection(name)
        return coll

    # ---- collections ---------------------------------------------------------------------------------
    def prepare(self, plans: Sequence[CollectionPlan]) -> None:
        """Start-up: create the known collections and their indexes, or raise StartupError with one clear
        line (e.g. the credentials are valid but not allowed to write to this database)."""
        for plan in plans:
            try:
                self.ensure_collection(plan)
            except OperationFailure as exc:
                reason = self.redact(describe(exc))
                raise StartupError(
                    f"MongoDB at {self.where} refused to prepare {self.db.name}.{plan.name}: {reason}"
                ) from None
            except PyMongoError as exc:
                raise StartupError(
                    f"cannot reach MongoDB at {self.where}: {self.redact(describe(exc))}"
                ) from None

    def ensure_collection(self, plan: CollectionPlan) -> None:
        """Create the collection as planned (time-series if asked) and its indexes, once per process."""
        if plan.name in self._prepared:
            return
        if plan.timeseries is not None:
            self._create_timeseries(plan.name, plan.timeseries)
        if self.config.create_indexes and plan.history:
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
        self._other_unique[plan.name] = self._has_other_unique_index(plan.name)
        self._prepared.add(plan.name)

    def _has_other_unique_index(self, name: str) -> bool:
        for index in self.collection(name).list_indexes():
            if index.get("unique") and list(index.get("key", {})) != ["_id"]:
                return True
        return False

    def _create_timeseries(self, name: str, options: TimeSeries) -> None:
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

    # ---- inserts ---------------------------------------------------------------------------------------
    def insert(
        self, name: str, documents: Sequence[Mapping[str, Any]], session: ClientSession | None = None
    ) -> BulkErrors | None:
        """One unordered bulk insert. None: every document was inserted. Otherwise the per-document errors
        (the rest were inserted). Raises WriteConcernFailed, or whatever pymongo raises for the request.

        Sent as one `insert` command when the batch fits in one (the usual case): PyMongo encodes it in C,
        without insert_many's per-document Python (about 1.5 µs per document less of a writer thread,
        bench/insert_cost.py). A batch too large for one command (DocumentTooLarge, raised before anything
        is sent) goes through insert_many, which splits it. Either way the server's reply is read alike."""
        if len(documents) <= MAX_WRITE_BATCH:
            command: dict[str, Any] = {"insert": name, "documents": documents, "ordered": False}
            if self.write_concern.document:
                command["writeConcern"] = self.write_concern.document
            try:
                reply = self.db.command(command, session=session)
            except DocumentTooLarge:
                pass  # more than one command can carry: insert_many below splits it
            else:
                details = {
                    "writeErrors": reply.get("writeErrors") or [],
                    "writeConcernErrors": [reply["writeConcernError"]]
                    if reply.get("writeConcernError")
                    else [],
                }
                return self._bulk_errors(name, details, len(documents)) if any(details.values()) else None
        try:
            self.collection(name).insert_many(documents, ordered=False, session=session)  # type: ignore[arg-type]
        except BulkWriteError as exc:
            return self._bulk_errors(name, exc.details, len(documents))
        return None

    def _bulk_errors(self, name: str, details: Mapping[str, Any], submitted: int) -> BulkErrors:
        errors = read_bulk_errors(details, submitted, self._other_unique.get(name, False))
        if errors.write_concern_failed:
            raise WriteConcernFailed(
                f"write concern not satisfied: {write_concern_error(details)}", errors.inserted
            ) from None
        return errors

    def read_back(self, name: str, ids: Sequence[Any]) -> dict[Any, Mapping[str, Any]]:
        """The stored documents with these `_id`s (their `kafka` field), keyed by `id_key`."""
        found = self.collection(name).find({"_id": {"$in": list(ids)}}, {"kafka": 1})
        return {id_key(doc["_id"]): doc for doc in found}

    @contextlib.contextmanager
    def causal_session(self) -> Iterator[ClientSession | None]:
        """A causally consistent session (None where the server has no sessions): a read in it waits for the
        writes made in it, so a retry's check sees what a failed attempt did write."""
        if self._sessions_supported is False:
            yield None
            return
        try:
            session = self.client.start_session(causal_consistency=True)
        except (ConfigurationError, InvalidOperation):
            self._sessions_supported = False
            yield None
            return
        with session:
            yield session

    def stored_coordinates(
        self, name: str, documents: Sequence[Mapping[str, Any]], session: ClientSession | None
    ) -> dict[Any, Mapping[str, Any]]:
        """For collections without a unique _id (time-series): which of these documents' coordinates are
        stored already (their `kafka` field), read with majority read concern in the writes' session."""
        ranges: dict[tuple[str, int], list[int]] = {}
        for doc in documents:
            _id = doc["_id"]
            bounds = ranges.setdefault((_id["topic"], _id["partition"]), [_id["offset"], _id["offset"]])
            bounds[0] = min(bounds[0], _id["offset"])
            bounds[1] = max(bounds[1], _id["offset"])
        coll = self.collection(name).with_options(read_concern=ReadConcern("majority"))
        existing: dict[Any, Mapping[str, Any]] = {}
        for (topic, partition), (low, high) in ranges.items():
            query = {
                "_id.topic": topic,
                "_id.partition": partition,
                "_id.offset": {"$gte": low, "$lte": high},
            }
            for found in coll.find(query, {"_id": 1, "kafka": 1}, session=session):
                existing[id_key(found["_id"])] = found
        return existing

    # ---- latest ticks ----------------------------------------------------------------------------------
    def upsert_latest(self, documents: Sequence[Mapping[str, Any]]) -> int:
        """Keep the newest tick of each symbol in the latest collection ("newest" in the one tick order: ts,
        then partition, then offset, then topic). Conditional upserts: an older or equal tick changes
        nothing, so re-delivery can never move it back. Returns the number of symbols updated."""
        newest: dict[str, Mapping[str, Any]] = {}
        for doc in documents:
            current = newest.get(doc["symbol"])
            if current is None or _order(doc) > _order(current):
                newest[doc["symbol"]] = doc
        coll = self.collection(self.config.latest_collection)
        updated = 0
        # One update per symbol (a batch holds few symbols). Not one bulk_write: FerretDB's reply to a bulk
        # update can lack nModified, on which pymongo's bulk merge fails after the server applied it.
        for symbol, doc in newest.items():
            query, change = _latest_update(symbol, doc)
            # Two writers inserting the same new symbol at once: one gets a duplicate key. Its update is sent
            # once more: then the document exists, and the condition alone decides.
            for attempt in range(2):
                try:
                    result = coll.update_one(query, change, upsert=True)
                except DuplicateKeyError:
                    if attempt == 0:
                        continue
                    break  # the stored tick is as new or newer: nothing to do
                except WriteConcernError as exc:
                    raise TransientError(
                        f"write concern not satisfied on the latest collection: {exc}"
                    ) from None
                except OperationFailure as exc:
                    if exc.code in TRANSIENT_MONGO_CODES:
                        raise TransientError(f"latest collection: {describe(exc)}") from None
                    raise FatalError(f"latest collection rejected an update: {describe(exc)}") from None
                updated += 1 if result.upserted_id is not None else int(result.modified_count or 0)
                break
        return updated

    def check_decimal128(self) -> None:
        """Start-up, with `tick.price_type: decimal128`: prove the server stores Decimal128 values (FerretDB
        1.x drops the connection on one), or raise ConfigurationRefused naming the setting."""
        probe = self.db.get_collection(SOURCES_COLLECTION)
        last: Exception | None = None
        for _ in range(2):  # once more, so that a passing network blip is not taken for the server's answer
            try:
                probe.insert_one({"_id": "decimal128-probe", "price": Decimal128("1.5")})
                probe.delete_one({"_id": "decimal128-probe"})
                return
            except DuplicateKeyError:
                probe.delete_one({"_id": "decimal128-probe"})
                return
            except PyMongoError as exc:
                last = exc
        raise ConfigurationRefused(
            f"MongoDB at {self.where} cannot store Decimal128 values, which tick.price_type decimal128 "
            f"needs: {self.redact(describe(last)) if last else 'refused'}; use price_type double with it"
        )

    # ---- the topics a collection holds ---------------------------------------------------------------
    def verify_source(self, collection: str, topic: str, identity: TopicIdentity) -> None:
        """Record that `collection` holds ticks of this topic, or raise ConfigurationRefused when it already
        holds ticks of another topic of the same name (re-created, or another cluster): that topic's
        offsets start again, and its messages would be taken for re-deliveries of the stored ones."""
        if identity.topic_id is None and identity.cluster_id is None:
            return
        sources = self.db.get_collection(SOURCES_COLLECTION)
        key = {"collection": collection, "topic": topic}
        record = {
            "_id": key,
            "topic_id": identity.topic_id,
            "cluster_id": identity.cluster_id,
            "first_seen": datetime.now(UTC),
        }
        try:
            sources.insert_one(record)
            return
        except DuplicateKeyError:
            pass
        stored = sources.find_one({"_id": key}) or {}
        changed = [
            f"{what} {stored.get(field)} -> {now}"
            for what, field, now in (
                ("topic id", "topic_id", identity.topic_id),
                ("cluster id", "cluster_id", identity.cluster_id),
            )
            if now is not None and stored.get(field) is not None and stored.get(field) != now
        ]
        if changed:
            raise ConfigurationRefused(
                f"topic {topic!r} is not the topic whose ticks {self.db.name}.{collection} holds "
                f"({', '.join(changed)}): it was re-created, or this is another cluster, so its offsets "
                f"would be taken for re-deliveries of the stored ticks. Map the topic to another collection "
                f"(mongo.collections), or remove the old ticks and their entry in {SOURCES_COLLECTION}; "
                "nothing of the topic was stored or committed"
            )

    def close(self) -> None:
        self.client.close()


def _order(doc: Mapping[str, Any]) -> tuple[Any, ...]:
    _id = doc["_id"]
    return (doc["ts"], _id["partition"], _id["offset"], _id["topic"])


def _latest_update(symbol: str, doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    ts, source = doc["ts"], doc["_id"]
    partition, offset, topic = source["partition"], source["offset"], source["topic"]
    older = [
        {"ts": {"$lt": ts}},
        {"ts": ts, "source.partition": {"$lt": partition}},
        {"ts": ts, "source.partition": partition, "source.offset": {"$lt": offset}},
        {"ts": ts, "source.partition": partition, "source.offset": offset, "source.topic": {"$lt": topic}},
    ]
    fields = {
        "symbol": symbol,
        "ts": ts,
        "price": doc["price"],
        "volume": doc["volume"],
        "source": source,
        "updated_at": doc["ingested_at"],
    }
    return {"_id": symbol, "$or": older}, {"$set": fields}
