"""A dead letter read back, and the filters that select dead letters (pure, no I/O).

A dead letter comes from the `dead_letters` collection (`DeadLetter.to_document`) or from a record of a Kafka
dead-letter topic (original key and value, the reason in `tickpipe.error.*` headers). Either may have been
written by someone else than tickpipe, so both are validated before anything of them is used: the
coordinates must be a valid topic name and non-negative integers (they become the stored `_id` and choose the
collection through the configured topic -> collection mapping, never directly), the value bytes or null.

The replay state lives in the collection copy: `replay.state` is `done` once the letter's message is stored
(or was found stored already, or is filtered out by the current configuration), `failed` after a replay
that still could not store it (its `error` then holds the new reason, `first_error` the original one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bson.datetime_ms import DatetimeMS

from pipeline.core.codec import encode_key
from pipeline.core.coordinates import document_id
from pipeline.core.deadletter import HEADER_PREFIX
from pipeline.core.naming import NameError_, check_topic_name
from pipeline.core.timefmt import EPOCH

State = Literal["pending", "replayed", "all"]
STATES: tuple[State, ...] = ("pending", "replayed", "all")
# Error kinds are identifiers such as out_of_bounds (DataError.kind): nothing else is ever put in a query.
_KIND = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_COORDINATES = re.compile(r"^(?P<topic>[A-Za-z0-9._-]+)(?::|\[)(?P<partition>\d+)(?::|\]@)(?P<offset>\d+)$")
REUSED = "coordinates_reused"


class LetterError(ValueError):
    """A dead letter (or a selection of them) that is not what tickpipe writes."""


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter: the original message (coordinates, key, value, timestamp) and why it failed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None  # the original message's timestamp; None: it had none
    kind: str
    message: str
    stage: str
    failed_at: datetime | None
    truncated: bool = False  # the value is cut (too big for the destination): not replayable from here
    length: int | None = None  # the original value's length, when known
    state: str = "pending"  # pending | done | failed (the collection copy's replay.state)
    source: str = "collection"  # collection | topic
    timestamp_known: bool = True  # False: a Kafka dead-letter record (the original timestamp is not in it)

    @property
    def coordinates(self) -> tuple[str, int, int]:
        return (self.topic, self.partition, self.offset)

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"

    @property
    def document_id(self) -> dict[str, Any]:
        return document_id(self.topic, self.partition, self.offset)


def _millis(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        stamp = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (stamp - EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, DatetimeMS):
        return int(value)
    raise LetterError(f"kafka.timestamp is a {type(value).__name__}, not a date")


def _coordinates(_id: Any) -> tuple[str, int, int]:
    if not isinstance(_id, Mapping) or list(_id) != ["topic", "partition", "offset"]:
        raise LetterError(f"_id {str(_id)[:80]!r} is not {{topic, partition, offset}}")
    topic, partition, offset = _id["topic"], _id["partition"], _id["offset"]
    if not isinstance(topic, str):
        raise LetterError("_id.topic is not a string")
    try:
        check_topic_name(topic)
    except NameError_ as exc:
        raise LetterError(str(exc)) from None
    for name, number in (("partition", partition), ("offset", offset)):
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise LetterError(f"_id.{name} {number!r} is not a non-negative integer")
    return topic, partition, offset


def section(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """doc[name] when it is a sub-document, else {} (read-back documents are not trusted)."""
    value = doc.get(name)
    return value if isinstance(value, Mapping) else {}


def letter_from_document(doc: Mapping[str, Any]) -> Letter:
    """A `dead_letters` document (as `DeadLetter.to_document` writes it), validated; LetterError if not."""
    topic, partition, offset = _coordinates(doc.get("_id"))
    error = section(doc, "error")
    kafka = section(doc, "kafka")
    value = doc.get("value")
    if value is not None and not isinstance(value, bytes):  # bson Binary is a bytes subclass
        raise LetterError(f"value is a {type(value).__name__}, not bytes")
    key = kafka.get("key")
    if key is not None and not isinstance(key, str | bytes):
        raise LetterError(f"kafka.key is a {type(key).__name__}, not text or bytes")
    failed_at = doc.get("failed_at")
    replay = section(doc, "replay")
    length = doc.get("value_length")
    return Letter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=encode_key(key),
        value=None if value is None else bytes(value),
        timestamp_ms=_millis(kafka.get("timestamp")),
        kind=str(error.get("kind", "")),
        message=str(error.get("message", "")),
        stage=str(error.get("stage", "")),
        failed_at=failed_at if isinstance(failed_at, datetime) else None,
        truncated=bool(doc.get("value_truncated")),
        length=length if isinstance(length, int) and not isinstance(length, bool) else None,
        state=str(replay.get("state", "pending")),
    )


def _header(headers: Mapping[str, bytes | None], name: str) -> str | None:
    raw = headers.get(HEADER_PREFIX + name)
    return None if raw is None else raw.decode("utf-8", "replace")


def _int_header(headers: Mapping[str, bytes | None], name: str) -> int:
    text = _header(headers, name)
    if text is None or not text.isdigit():
        raise LetterError(f"header {HEADER_PREFIX}{name} {text!r} is not a non-negative integer")
    return int(text)


def letter_from_record(
    headers: Sequence[tuple[str, bytes | None]] | None, key: bytes | None, value: bytes | None
) -> Letter:
    """A record of a Kafka dead-letter topic, from its `tickpipe.error.*` headers; LetterError if it has
    none or they are malformed. A record cut to fit the topic (`value.truncated`) is marked truncated. The
    original message's timestamp is not in the record (`timestamp_known` False)."""
    found = {name: raw for name, raw in headers or [] if name.startswith(HEADER_PREFIX)}
    topic = _header(found, "topic")
    if topic is None:
        raise LetterError(f"no {HEADER_PREFIX}topic header: not a tickpipe dead letter")
    try:
        check_topic_name(topic)
    except NameError_ as exc:
        raise LetterError(f"header {HEADER_PREFIX}topic: {exc}") from None
    failed_at: datetime | None = None
    with_time = _header(found, "time")
    if with_time:
        try:
            failed_at = datetime.fromisoformat(with_time)
        except ValueError:
            failed_at = None
    length = _header(found, "value.length")
    return Letter(
        topic=topic,
        partition=_int_header(found, "partition"),
        offset=_int_header(found, "offset"),
        key=key,
        value=value,
        timestamp_ms=None,
        kind=_header(found, "class") or "",
        message=_header(found, "message") or "",
        stage=_header(found, "stage") or "",
        failed_at=failed_at,
        truncated=_header(found, "value.truncated") == "true",
        length=int(length) if length and length.isdigit() else (None if value is None else len(value)),
        source="topic",
        timestamp_known=False,
    )


def parse_coordinates(text: str) -> tuple[str, int, int]:
    """`petr4:0:17` or `petr4[0]@17` (as logs write them) -> (topic, partition, offset)."""
    match = _COORDINATES.match(text.strip())
    if match is None:
        raise LetterError(f"{text!r} is not TOPIC:PARTITION:OFFSET (e.g. petr4:0:17 or petr4[0]@17)")
    topic = match["topic"]
    try:
        check_topic_name(topic)
    except NameError_ as exc:
        raise LetterError(str(exc)) from None
    return topic, int(match["partition"]), int(match["offset"])


def check_kind(kind: str) -> str:
    if not _KIND.match(kind):
        raise LetterError(f"{kind!r} is not an error kind (e.g. out_of_bounds, invalid_json)")
    return kind


@dataclass(frozen=True)
class LetterFilter:
    """Which dead letters: topics, error kinds, `failed_at` in [start, end), replay state."""

    topics: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    state: State = "all"
    coordinates: tuple[tuple[str, int, int], ...] = field(default=())

    def __post_init__(self) -> None:
        for topic in self.topics:
            try:
                check_topic_name(topic)
            except NameError_ as exc:
                raise LetterError(str(exc)) from None
        for kind in self.kinds:
            check_kind(kind)
        if self.state not in STATES:
            raise LetterError(f"state {self.state!r}: use one of {', '.join(STATES)}")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise LetterError("--from is after --to")

    def query(self) -> dict[str, Any]:
        """The MongoDB filter (only validated values in it)."""
        query: dict[str, Any] = {}
        if self.coordinates:
            query["_id"] = {"$in": [document_id(*c) for c in self.coordinates]}
        if self.topics:
            query["_id.topic"] = {"$in": list(self.topics)}
        if self.kinds:
            query["error.kind"] = {"$in": list(self.kinds)}
        bounds: dict[str, datetime] = {}
        if self.start is not None:
            bounds["$gte"] = self.start
        if self.end is not None:
            bounds["$lt"] = self.end
        if bounds:
            query["failed_at"] = bounds
        if self.state == "pending":
            query["replay.state"] = {"$ne": "done"}
        elif self.state == "replayed":
            query["replay.state"] = "done"
        return query

    def matches(self, letter: Letter) -> bool:
        """The same selection on a letter read from a Kafka dead-letter topic."""
        if self.coordinates and letter.coordinates not in self.coordinates:
            return False
        if self.topics and letter.topic not in self.topics:
            return False
        if self.kinds and letter.kind not in self.kinds:
            return False
        when = letter.failed_at
        too_early = self.start is not None and (when is None or when < self.start)
        too_late = self.end is not None and (when is None or when >= self.end)
        return not (too_early or too_late)

    def describe(self) -> str:
        parts = []
        if self.coordinates:
            parts.append(", ".join(f"{t}[{p}]@{o}" for t, p, o in self.coordinates))
        if self.topics:
            parts.append("topic " + ",".join(self.topics))
        if self.kinds:
            parts.append("kind " + ",".join(self.kinds))
        if self.start or self.end:
            start = self.start.isoformat() if self.start else "..."
            end = self.end.isoformat() if self.end else "..."
            parts.append(f"failed {start} to {end}")
        if self.state != "all":
            parts.append(self.state)
        return "; ".join(parts) or "all"


def readable(value: bytes | None, limit: int = 2000) -> str:
    """The original bytes for a terminal: UTF-8 text with control characters escaped (\\x1b, \\n), bytes
    that are not UTF-8 as \\x.. escapes; cut at `limit` characters (saying how long it was)."""
    if value is None:
        return "(null)"
    text = value.decode("utf-8", "backslashreplace")
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return out if len(out) <= limit else out[:limit] + f"... ({len(value):,} bytes)"
