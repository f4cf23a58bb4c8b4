"""Dead letters read back (pipeline/ops/dlq/letters.py): validation, selection, display."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from bson.binary import Binary

from pipeline.core.deadletter import HEADER_PREFIX, letter_for_message
from pipeline.ops.dlq.letters import (
    LetterError,
    LetterFilter,
    letter_from_document,
    letter_from_record,
    parse_coordinates,
    readable,
)

AT = datetime(2026, 11, 25, 13, 0, 0, 123000, tzinfo=UTC)


def written(value: bytes | None = b'{"price": 1}', key: bytes | None = b"PETR4") -> dict[str, object]:
    letter = letter_for_message("petr4", 2, 17, key, value, 1_764_075_600_123, "out_of_bounds", "too high")
    return letter.to_document()


def test_a_document_written_by_the_worker_reads_back_whole() -> None:
    letter = letter_from_document(written())
    assert letter.coordinates == ("petr4", 2, 17)
    assert (letter.key, letter.value, letter.timestamp_ms) == (b"PETR4", b'{"price": 1}', 1_764_075_600_123)
    assert (letter.kind, letter.message, letter.stage, letter.state) == (
        "out_of_bounds",
        "too high",
        "decode",
        "pending",
    )
    assert letter_from_document(written(value=None, key=b"\xff")).key == b"\xff"


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"_id": {"topic": "petr4", "partition": 0}}, "is not {topic, partition, offset}"),
        ({"_id": {"topic": "a/b", "partition": 0, "offset": 1}}, "not a valid Kafka topic name"),
        ({"_id": {"topic": "petr4", "partition": -1, "offset": 1}}, "_id.partition -1"),
        ({"_id": {"topic": "petr4", "partition": 0, "offset": {"$gt": 1}}}, "_id.offset"),
        ({"_id": {"topic": "petr4", "partition": True, "offset": 1}}, "_id.partition True"),
        ({"value": "text"}, "value is a str"),
        ({"kafka": {"key": 5, "timestamp": None}}, "kafka.key is a int"),
        ({"kafka": {"key": None, "timestamp": "yesterday"}}, "kafka.timestamp is a str"),
    ],
)
def test_a_document_that_is_not_a_dead_letter_is_refused(change: dict[str, object], fragment: str) -> None:
    with pytest.raises(LetterError, match=None) as info:
        letter_from_document({**written(), **change})
    assert fragment in str(info.value)


def test_a_kafka_dead_letter_record_reads_from_its_headers() -> None:
    letter = letter_for_message("petr4", 0, 5, b"k", b"x" * 100, 1, "invalid_json", "bad", stage="decode")
    value, headers = letter.kafka_record(600)
    read = letter_from_record(headers, b"k", value)  # type: ignore[arg-type]
    assert read.coordinates == ("petr4", 0, 5) and read.kind == "invalid_json" and read.source == "topic"
    assert read.truncated and read.length == 100 and not read.timestamp_known
    whole = letter_from_record(letter.kafka_record(10_000)[1], b"k", b"x" * 100)  # type: ignore[arg-type]
    assert not whole.truncated and whole.value == b"x" * 100
    with pytest.raises(LetterError, match="not a tickpipe dead letter"):
        letter_from_record([("other", b"1")], None, b"v")
    with pytest.raises(LetterError, match="partition"):
        letter_from_record(
            [(HEADER_PREFIX + "topic", b"petr4"), (HEADER_PREFIX + "offset", b"1")], None, b"v"
        )


@pytest.mark.parametrize(
    ("text", "expected"), [("petr4:0:17", ("petr4", 0, 17)), ("ticks.x[12]@345", ("ticks.x", 12, 345))]
)
def test_coordinates_as_typed_or_as_logged(text: str, expected: tuple[str, int, int]) -> None:
    assert parse_coordinates(text) == expected


@pytest.mark.parametrize("text", ["petr4:0", "petr4:-1:2", "petr4[0]17", "$where:0:1", "a b:0:1"])
def test_bad_coordinates(text: str) -> None:
    with pytest.raises(LetterError):
        parse_coordinates(text)


def test_the_filter_query_holds_only_validated_values() -> None:
    selection = LetterFilter(topics=("petr4",), kinds=("out_of_bounds",), start=AT, state="pending")
    assert selection.query() == {
        "_id.topic": {"$in": ["petr4"]},
        "error.kind": {"$in": ["out_of_bounds"]},
        "failed_at": {"$gte": AT},
        "replay.state": {"$ne": "done"},
    }
    assert LetterFilter(state="replayed").query() == {"replay.state": "done"}
    for bad in ({"kinds": ("$where",)}, {"topics": ("$gt",)}, {"state": "done"}):
        with pytest.raises(LetterError):
            LetterFilter(**bad)  # type: ignore[arg-type]
    with pytest.raises(LetterError, match="--from is after --to"):
        LetterFilter(start=AT, end=datetime(2020, 1, 1, tzinfo=UTC))


def test_readable_escapes_control_characters_and_bytes() -> None:
    assert readable(b"\x1b[2Jok\n") == "\\x1b[2Jok\\n"
    assert readable(b"\xff\xfe") == "\\xff\\xfe"
    assert readable(None) == "(null)"
    assert readable(b"x" * 50, limit=10) == "x" * 10 + "... (50 bytes)"
    assert readable(Binary(b"a")) == "a"
