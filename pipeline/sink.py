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
from pymongo import ASCENDING, MongoClient, WriteConcern
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DocumentTooLarge, OperationFailure, PyMongoError, WriteError

from pipeline.config import MongoConfig
from pipeline.errors import DUPLICATE_KEY, TRANSIENT_MONGO_CODES, StartupError, TransientError, describe
from pipeline.redact import redact_text, redact_uri

TICK_INDEX = [("symbol", ASCENDING), ("ts", ASCENDING)]


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


def make_client(config: MongoConfig, **extra: Any) -> MongoClient[dict[str, Any]]:
    return MongoClient(config.uri.get_secret_value(), **{**config.client_kwargs(), **extra})


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
        if name in self._indexed or not self.config.create_indexes:
            return
        self.collection(name).create_index(TICK_INDEX, name="symbol_1_ts_1")
        self._indexed.add(name)

    def prepare(self, collections: list[str]) -> None:
        """Start-up: create the indexes of the known collections, or raise StartupError with one clear line
        (e.g. the credentials are valid but not allowed to write to this database)."""
        for name in collections:
            try:
                self.ensure_indexes(name)
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
