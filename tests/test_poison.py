"""Messages that can never be stored: dead-lettered (errors.tolerance=data) or a clean stop (=none)."""

from __future__ import annotations

import base64
import signal
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from tests.harness import ProcessWorker, Scenario, thread_worker, wait_for

# The write path: once per MongoDB-compatible test server (tests/conftest.py).
pytestmark = [pytest.mark.servers, pytest.mark.write_path]

TS = "2026-11-25T13:00:00.123Z"


def tick(**fields: object) -> bytes:
    base: dict[str, object] = {"symbol": "PETR4", "price": 38.12, "volume": 100, "ts": TS}
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


# (expected error kind, value). `...` removes a field. Every kind below is a different failure.
BAD: list[tuple[str, bytes | None]] = [
    ("invalid_json", b"not json at all"),
    ("invalid_json", b""),
    ("invalid_json", b"\xff\xfe\x00binary"),
    ("null_value", None),
    ("not_an_object", b"[1, 2, 3]"),
    ("not_an_object", b'"just a string"'),
    ("missing_field", tick(price=...)),
    ("invalid_field", tick(price="38.12")),
    ("out_of_bounds", tick(price=-1)),
    ("out_of_bounds", tick(volume=-100)),
    ("invalid_field", tick(volume=1.5)),
    ("invalid_timestamp", tick(ts="yesterday at noon")),
    ("invalid_timestamp", tick(ts=True)),
    ("invalid_field", tick(symbol="PETR 4; DROP")),
    ("invalid_field_name", tick(extra={"$where": "sleep(1000)"})),
    ("invalid_field_name", tick(**{"$set": {"price": 0}})),
    ("integer_out_of_range", tick(big=2**64 - 1)),
    ("reserved_field", tick(_id="forged")),
    # Valid for the pipeline, rejected by MongoDB itself (the collection's validator caps price at 1000).
    ("mongo_rejected", tick(price=5000.0)),
]


def _interleaved(good: int) -> tuple[list[bytes | None], list[str | None]]:
    """good ticks with the bad ones spread between them; kinds[i] is None for good messages."""
    values: list[bytes | None] = []
    kinds: list[str | None] = []
    bad = iter(BAD)
    for i in range(good):
        values.append(
            tick(price=round(30 + i * 0.01, 2), ts=f"2026-11-25T13:{i // 60 % 60:02d}:{i % 60:02d}.000Z")
        )
        kinds.append(None)
        if i % 3 == 1:
            item = next(bad, None)
            if item is not None:
                kinds.append(item[0])
                values.append(item[1])
    assert next(bad, None) is None, "not all bad kinds were interleaved"
    return values, kinds


def _create_validated_collection(sc: Scenario, name: str) -> None:
    with sc.mongo() as client:
        client[sc.database].create_collection(
            name,
            validator={"$jsonSchema": {"bsonType": "object", "properties": {"price": {"maximum": 1000}}}},
        )


def _dlq_messages(sc: Scenario, topic: str, expected: int) -> list[tuple[bytes | None, dict[str, bytes]]]:
    consumer = Consumer({"bootstrap.servers": sc.servers.bootstrap, "group.id": f"{sc.group}-dlq-reader"})
    # assign() rather than subscribe(): no group join needed to read the whole topic.
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    found: list[tuple[bytes | None, dict[str, bytes]]] = []
    try:
        wait_for(
            lambda: (
                found.extend(
                    (m.value(), dict(m.headers() or []))
                    for m in consumer.consume(100, 0.5)
                    if m.error() is None
                )
                or len(found) >= expected
            ),
            timeout=60,
            interval=0,
            what=f"{expected} messages on {topic}",
        )
    finally:
        consumer.close()
    return found


@pytest.mark.needs_mongo("jsonSchema")  # the mongo_rejected case comes from a $jsonSchema validator
def test_every_kind_of_bad_message_is_dead_lettered_with_its_reason_and_good_ones_are_stored(
    make_scenario: Callable[..., Scenario],
) -> None:
    sc = make_scenario(("petr4",), partitions=1)
    topic = sc.topics[0]
    _create_validated_collection(sc, topic)
    values, kinds = _interleaved(good=60)
    offsets = sc.produce_values(topic, values)
    end = {(topic, 0): offsets[-1] + 1}
    bad_expected = {offset: kind for offset, kind in zip(offsets, kinds, strict=True) if kind is not None}
    assert len(set(bad_expected.values())) >= 10

    with thread_worker(sc.settings()) as runner:
        wait_for(lambda: sc.committed(list(end)) == end, timeout=120, interval=0.5, what="all committed")
        assert runner.stop() == 0
    totals = runner.worker.totals
    assert totals.stored == 60 and totals.dead_lettered == len(BAD) and totals.consumed == len(values)

    with sc.mongo() as client:
        db = client[sc.database]
        stored = {d["_id"]["offset"] for d in db[topic].find({}, {"_id": 1})}
        letters = {d["_id"]["offset"]: d for d in db["dead_letters"].find({"_id.topic": topic})}
    good_offsets = {o for o, k in zip(offsets, kinds, strict=True) if k is None}
    assert stored == good_offsets
    assert set(letters) == set(bad_expected)
    assert stored.isdisjoint(letters), "a message was both stored and dead-lettered"
    assert len(stored) + len(letters) == len(values)
    for offset, kind in bad_expected.items():
        letter = letters[offset]
        assert letter["error"]["kind"] == kind, (offset, letter["error"])
        assert letter["error"]["message"]
        original = values[offsets.index(offset)]
        assert (bytes(letter["value"]) if letter["value"] is not None else None) == original
        assert letter["_id"] == {"topic": topic, "partition": 0, "offset": offset}
        assert letter["kafka"]["key"] == "k"
    assert (
        letters[next(o for o, k in bad_expected.items() if k == "mongo_rejected")]["error"]["stage"]
        == "write"
    )
    binary = letters[
        next(o for o, k in bad_expected.items() if values[offsets.index(o)] == b"\xff\xfe\x00binary")
    ]
    assert base64.b64decode(binary["value_base64"]) == b"\xff\xfe\x00binary"

    # The Kafka dead-letter topic has the same messages, original bytes, reason in headers.
    dlq = _dlq_messages(sc, f"{topic}.dlq", len(BAD))
    assert len(dlq) == len(BAD)
    by_offset = {int(h["tickpipe.error.offset"]): (v, h) for v, h in dlq}
    assert set(by_offset) == set(bad_expected)
    for offset, (value, headers) in by_offset.items():
        assert headers["tickpipe.error.class"].decode() == bad_expected[offset]
        assert headers["tickpipe.error.topic"].decode() == topic
        assert value == values[offsets.index(offset)]


def test_tolerance_none_stops_at_the_first_bad_message_and_commits_only_what_precedes_it(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("petr4",), partitions=1)
    topic = sc.topics[0]
    values = (
        [tick(price=30 + i) for i in range(25)] + [b"{broken json"] + [tick(price=60 + i) for i in range(25)]
    )
    offsets = sc.produce_values(topic, values)
    poison = offsets[25]
    worker = ProcessWorker(sc.env(PIPELINE_ERRORS__TOLERANCE="none"), tmp_path / "worker.log").start()
    try:
        code = worker.wait(60)
    finally:
        worker.stop()
    assert code == 1
    text = worker.log_text()
    assert f"{topic}[0]@{poison}" in text and "invalid_json" in text, text[-2000:]
    assert "Traceback" not in text
    assert sc.committed([(topic, 0)]) == {(topic, 0): poison}
    with sc.mongo() as client:
        db = client[sc.database]
        stored = sorted(d["_id"]["offset"] for d in db[topic].find({}, {"_id": 1}))
        assert db["dead_letters"].count_documents({}) == 0
    assert stored == offsets[:25]

    # Restarting does not skip it either: same stop, same committed offset.
    again = ProcessWorker(sc.env(PIPELINE_ERRORS__TOLERANCE="none"), tmp_path / "worker2.log").start()
    try:
        assert again.wait(60) == 1
    finally:
        again.stop()
    assert sc.committed([(topic, 0)]) == {(topic, 0): poison}


@pytest.mark.needs_mongo("jsonSchema")  # the rejection comes from a $jsonSchema validator
def test_tolerance_none_stops_on_a_mongodb_rejection_without_committing_past_it(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("petr4",), partitions=1)
    topic = sc.topics[0]
    _create_validated_collection(sc, topic)
    values = (
        [tick(price=30 + i) for i in range(10)]
        + [tick(price=5000.0)]
        + [tick(price=40 + i) for i in range(10)]
    )
    offsets = sc.produce_values(topic, values)
    worker = ProcessWorker(sc.env(PIPELINE_ERRORS__TOLERANCE="none"), tmp_path / "worker.log").start()
    try:
        code = worker.wait(60)
    finally:
        if worker.alive():
            worker.terminate(signal.SIGKILL)
        worker.stop()
    assert code == 1
    assert f"{topic}[0]@{offsets[10]}" in worker.log_text()
    assert sc.committed([(topic, 0)]) == {(topic, 0): offsets[10]}
