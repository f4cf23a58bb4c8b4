"""The `dead_letters` collection: counts per topic and error kind, one letter, the letters of a selection,
their replay state, and purging.

Every write (marking letters replayed or failing, removing them, purging) uses the configured write concern
(`mongo.write_concern`, `w: majority, j: true` by default). Counting is done on the client from a projection
(topic, kind, time, state), so it works on servers without the `$group` accumulators (FerretDB 1.x).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bson.codec_options import CodecOptions
from pymongo import DeleteOne, UpdateOne, WriteConcern
from pymongo.collection import Collection
from pymongo.database import Database

from pipeline.core.coordinates import document_id
from pipeline.ops.dlq.letters import LetterFilter, section

CODEC: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True, tzinfo=UTC)


@dataclass
class KindCount:
    topic: str
    kind: str
    letters: int = 0
    pending: int = 0
    replayed: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None


@dataclass(frozen=True)
class Mark:
    """What to record about one letter after a replay."""

    coordinates: tuple[str, int, int]
    done: bool  # stored, found stored already, or filtered out: resolved
    outcome: str
    collection: str = ""
    kind: str = ""  # not done: the new error kind and reason
    reason: str = ""
    stage: str = ""
    original: Mapping[str, str] | None = None  # not done: the error it had before this replay


class DeadLetterStore:
    def __init__(self, db: Database[dict[str, Any]], name: str, write_concern: WriteConcern) -> None:
        self.name = name
        self.collection: Collection[dict[str, Any]] = db.get_collection(
            name, codec_options=CODEC, write_concern=write_concern
        )

    def counts(self, selection: LetterFilter) -> list[KindCount]:
        """Per topic and error kind: letters, pending, replayed, oldest and newest `failed_at`."""
        rows: dict[tuple[str, str], KindCount] = {}
        projection = {"_id": 1, "error.kind": 1, "failed_at": 1, "replay.state": 1}
        for doc in self.collection.find(selection.query(), projection):
            _id, error, replay = (section(doc, name) for name in ("_id", "error", "replay"))
            key = (str(_id.get("topic", "?")), str(error.get("kind", "?")))
            row = rows.get(key) or rows.setdefault(key, KindCount(*key))
            row.letters += 1
            if replay.get("state") == "done":
                row.replayed += 1
            else:
                row.pending += 1
            when = doc.get("failed_at")
            if isinstance(when, datetime):
                row.oldest = when if row.oldest is None else min(row.oldest, when)
                row.newest = when if row.newest is None else max(row.newest, when)
        return [rows[k] for k in sorted(rows)]

    def get(self, topic: str, partition: int, offset: int) -> dict[str, Any] | None:
        return self.collection.find_one({"_id": document_id(topic, partition, offset)})

    def documents(self, selection: LetterFilter, batch_size: int) -> Iterator[dict[str, Any]]:
        """The selected letters' documents, streamed (a document updated meanwhile may come back twice: the
        caller skips coordinates it has seen)."""
        cursor = self.collection.find(selection.query(), batch_size=batch_size)
        try:
            yield from cursor
        finally:
            cursor.close()

    def copies(
        self, coordinates: Sequence[tuple[str, int, int]]
    ) -> dict[tuple[str, int, int], dict[str, Any]]:
        """The collection copies of these letters (for letters read from a Kafka dead-letter topic)."""
        if not coordinates:
            return {}
        found = self.collection.find({"_id": {"$in": [document_id(*c) for c in coordinates]}})
        out = {}
        for doc in found:
            _id = doc["_id"]
            out[(_id["topic"], _id["partition"], _id["offset"])] = doc
        return out

    def mark(self, marks: Sequence[Mark], remove: bool, now: datetime | None = None) -> None:
        """Record each letter's outcome: resolved letters `replay.state: done` (or removed), the others
        `replay.state: failed` with the new reason in `error` and the first one kept in `first_error`."""
        if not marks:
            return
        now = now or datetime.now(UTC)
        ops: list[UpdateOne | DeleteOne] = []
        for mark in marks:
            key = {"_id": document_id(*mark.coordinates)}
            if mark.done and remove:
                ops.append(DeleteOne(key))
            elif mark.done:
                replay = {"state": "done", "outcome": mark.outcome, "at": now, "collection": mark.collection}
                ops.append(UpdateOne(key, {"$set": {"replay.state": "done", **_prefixed(replay)}}))
            else:
                if mark.original:
                    ops.append(
                        UpdateOne(
                            {**key, "first_error": {"$exists": False}},
                            {"$set": {"first_error": dict(mark.original)}},
                        )
                    )
                error = {"kind": mark.kind, "message": mark.reason, "stage": mark.stage}
                ops.append(
                    UpdateOne(
                        key,
                        {
                            "$set": {
                                "error": error,
                                "replay.state": "failed",
                                "replay.outcome": mark.outcome,
                                "replay.at": now,
                            },
                            "$inc": {"replay.attempts": 1},
                        },
                    )
                )
        self.collection.bulk_write(ops, ordered=True)

    def count(self, selection: LetterFilter) -> int:
        return int(self.collection.count_documents(selection.query()))

    def purge(self, selection: LetterFilter) -> int:
        return int(self.collection.delete_many(selection.query()).deleted_count)


def _prefixed(values: Mapping[str, Any]) -> dict[str, Any]:
    return {f"replay.{k}": v for k, v in values.items() if k != "state"}
