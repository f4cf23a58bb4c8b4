"""What a bulk insert's errors mean for each document (pure: the server's reply in, a decision per document).

Never decided by an error message's wording, which differs between MongoDB-compatible servers:

- **a duplicate key** (11000/11001) on `_id` is a re-delivery (success). When the server names the index
  (`keyPattern`), that decides. When it does not (FerretDB's replies have no `keyPattern`), the collection's
  own unique indexes decide: with `_id` the only one, the conflict can only be on `_id`; with others, the
  stored document at that `_id` is read back and compared (`resolve_duplicates`): the same message is a
  duplicate, a different one at the same coordinates is dead-lettered (`coordinates_reused`), none means the
  conflict was on another unique index: refused.
- **a transient code** (elections, shutdowns, lock and time limits, write conflicts) is retried;
- **a code known to be permanent** (validation, bad values, too large) is refused at once;
- **any other code** is retried a few times (`UNKNOWN_CODE_ATTEMPTS`), then refused: never retried forever,
  never refused at the first sight of an unfamiliar transient error.
- **a write-concern error** makes the whole request's durability unknown: it is sent again; documents the
  first reply said were inserted then come back as duplicates, and are counted as stored (`inserted`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.core.errors import DUPLICATE_KEY_CODES, TRANSIENT_MONGO_CODES
from pipeline.core.timefmt import millis_utc

# Per-document errors that no retry can fix.
PERMANENT_WRITE_CODES = frozenset(
    {
        2,  # BadValue
        14,  # TypeMismatch
        22,  # InvalidBSON
        52,  # DollarPrefixedFieldName
        53,  # InvalidIdField
        55,  # InvalidDBRef
        56,  # EmptyFieldName
        57,  # DottedFieldName
        66,  # ImmutableField
        121,  # DocumentValidationFailure
        10334,  # BSONObjectTooLarge
        17419,  # document too large for a capped collection
        17420,  # document too large for a capped collection (update)
    }
)
UNKNOWN_CODE_ATTEMPTS = 3


@dataclass(slots=True)
class BulkErrors:
    """The per-document reading of one BulkWriteError (indexes into the submitted list)."""

    # The whole request must be sent again (its durability is unknown): a write-concern error.
    write_concern_failed: bool = False
    # Inserted according to the reply (all submitted minus those with an error).
    inserted: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    # Duplicate keys the reply does not place on an index, in a collection with other unique indexes.
    to_read_back: list[int] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)
    # Retried only while the document has had fewer than UNKNOWN_CODE_ATTEMPTS attempts.
    unknown: list[tuple[int, int, str]] = field(default_factory=list)
    refused: list[tuple[int, int, str]] = field(default_factory=list)


def _names_id_index(error: Mapping[str, Any]) -> bool | None:
    """True/False when the server says which index conflicted; None when it does not say."""
    pattern = error.get("keyPattern")
    if isinstance(pattern, Mapping) and pattern:
        return list(pattern) == ["_id"]
    return None


def write_concern_error(details: Mapping[str, Any]) -> str | None:
    """The first write-concern error of a bulk write's reply, as text; None when there is none."""
    errors = details.get("writeConcernErrors")
    if not errors:
        return None
    first = errors[0]
    return str(first.get("errmsg") or first) if isinstance(first, Mapping) else str(first)


def read_bulk_errors(details: Mapping[str, Any], submitted: int, other_unique_indexes: bool) -> BulkErrors:
    """`other_unique_indexes`: the collection has a unique index besides `_id` (from listIndexes)."""
    out = BulkErrors(write_concern_failed=write_concern_error(details) is not None)
    failed: set[int] = set()
    for error in details.get("writeErrors", []):
        index = int(error["index"])
        failed.add(index)
        code = int(error.get("code") or 0)
        message = str(error.get("errmsg", ""))[:500]
        if code in DUPLICATE_KEY_CODES:
            on_id = _names_id_index(error)
            if on_id is None:
                on_id = None if other_unique_indexes else True
            if on_id is True:
                out.duplicates.append(index)
            elif on_id is False:
                out.refused.append((index, code, message))
            else:
                out.to_read_back.append(index)
        elif code in TRANSIENT_MONGO_CODES:
            out.retry.append(index)
        elif code in PERMANENT_WRITE_CODES:
            out.refused.append((index, code, message))
        else:
            out.unknown.append((index, code, message))
    out.inserted = [i for i in range(submitted) if i not in failed]
    return out


def _millis(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return millis_utc(value)
    return int(value)  # DatetimeMS


def _key(value: Any) -> bytes | None:
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, bytes):
        return bytes(value)
    return None


def same_message(stored: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Is the stored document at these coordinates the same Kafka message as `new` (a re-delivery)?

    Compares what identifies a Kafka record independently of how tickpipe turned it into a document (so a
    re-delivery after an upgrade or a configuration change still counts as one): its timestamp and its key.
    """
    a = stored.get("kafka") or {}
    b = new.get("kafka") or {}
    same_time = _millis(a.get("timestamp")) == _millis(b.get("timestamp"))
    return same_time and _key(a.get("key")) == _key(b.get("key"))


@dataclass(slots=True)
class Resolution:
    duplicates: list[int] = field(default_factory=list)
    reused: list[int] = field(default_factory=list)  # a different message holds these coordinates
    refused: list[int] = field(default_factory=list)  # nothing at that _id: another unique index conflicted


def resolve_duplicates(
    candidates: Sequence[int], documents: Sequence[Mapping[str, Any]], stored: Mapping[Any, Mapping[str, Any]]
) -> Resolution:
    """Classify duplicate-key candidates against the stored documents read back by `_id` (`stored` maps
    `id_key(_id)` to the stored document, projected to its `kafka` field)."""
    out = Resolution()
    for index in candidates:
        document = documents[index]
        found = stored.get(id_key(document["_id"]))
        if found is None:
            out.refused.append(index)
        elif same_message(found, document):
            out.duplicates.append(index)
        else:
            out.reused.append(index)
    return out


def id_key(_id: Any) -> Any:
    """A hashable form of a coordinates `_id`."""
    if isinstance(_id, Mapping):
        return (_id.get("topic"), _id.get("partition"), _id.get("offset"))
    return _id
