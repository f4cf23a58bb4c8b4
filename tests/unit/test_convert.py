"""Unit tests for pipeline.ingest.convert: `Converter.put` keeps a batch's book-keeping once per run of a
partition (`Batch.note_run`); whatever the mix of documents, filtered messages, dead letters, poison
messages, partitions that are not ours and consume errors, the batch must hold exactly what adding each
message on its own (`Batch.add_document` and friends) would have built."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, Message

from pipeline.core.batching import Batch
from pipeline.core.codec import DataError, TickSchema, make_document, make_tick_decoder
from pipeline.core.coordinates import TP
from pipeline.core.deadletter import letter_for_message
from pipeline.ingest.convert import Converter
from pipeline.ingest.routing import Route

TOPICS = ("petr4", "vale3", "itub4")
DECODE = make_tick_decoder(TickSchema())


def keep(fields: dict[str, Any]) -> bool:
    return bool(fields["volume"] % 5)  # volumes that are multiples of 5 are filtered out


class Routes:
    """petr4 and vale3 go to their collections (vale3 filtered); itub4 is not routed (None: not ours)."""

    def __init__(self) -> None:
        self.routes = {
            "petr4": Route("petr4", "petr4", DECODE, None),
            "vale3": Route("vale3", "vale3", DECODE, keep),
        }

    def route(self, topic: str) -> Route | None:
        return self.routes.get(topic)


OWNED = {("petr4", 0): 3, ("petr4", 1): 4, ("vale3", 0): 5, ("vale3", 2): 6}  # tp -> epoch


def epoch_of(tp: TP) -> int | None:
    return OWNED.get(tp)


def messages(rng: random.Random, count: int) -> list[Message]:
    offsets: dict[TP, int] = {}
    out: list[Message] = []
    tp: TP = ("petr4", 0)
    while len(out) < count:
        if rng.random() < 0.25:  # a new run
            tp = (rng.choice(TOPICS), rng.randrange(3))
        roll = rng.random()
        if roll < 0.03:
            out.append(Message(error=KafkaError(KafkaError._TRANSPORT)))
            continue
        offset = offsets[tp] = offsets.get(tp, rng.randrange(100)) + 1
        if roll < 0.10:
            value: bytes | None = b"{not json"
        elif roll < 0.12:
            value = None
        else:
            value = orjson.dumps(
                {
                    "symbol": tp[0].upper(),
                    "price": 10.5,
                    "volume": rng.randrange(20),
                    "ts": "2026-12-01T13:00:00Z",
                }
            )
        out.append(
            Message(
                topic=tp[0],
                partition=tp[1],
                offset=offset,
                value=value,
                key=b"k",
                timestamp=(1, 1_764_594_000_000 + offset // 2),
            )
        )
    return out


def reference(batch: Batch, consumed: list[Message], tolerance: str, ingested_at: datetime) -> dict[str, Any]:
    """What one add_* call per message builds; returns the added count and the poison coordinates."""
    added = 0
    stopped: set[TP] = set()
    poison: list[tuple[TP, int, str]] = []
    for message in consumed:
        if message.error() is not None:
            continue
        tp: TP = (message.topic(), message.partition())  # type: ignore[assignment]
        route, epoch = Routes().route(tp[0]), epoch_of(tp)
        if route is None or epoch is None or tp in stopped:
            continue
        offset: int = message.offset()  # type: ignore[assignment]
        try:
            fields = route.decode(message.value())
        except DataError as exc:
            if tolerance == "none":
                poison.append((tp, offset, exc.kind))
                stopped.add(tp)
                continue
            letter = letter_for_message(
                tp[0],
                tp[1],
                offset,
                message.key(),
                message.value(),
                message.timestamp()[1],
                exc.kind,
                exc.message,
            )
            batch.add_dead_letter(letter, tp, offset, epoch)
            added += 1
            continue
        if route.keep is not None and not route.keep(fields):
            batch.add_filtered(tp, offset, epoch)
        else:
            document = make_document(
                fields, tp[0], tp[1], offset, message.timestamp()[1], message.key(), ingested_at
            )
            batch.add_document(route.collection, document, message.value(), tp, offset, epoch)
        added += 1
    return {"added": added, "poison": poison}


def contents(batch: Batch) -> dict[str, Any]:
    letters = [(d.topic, d.partition, d.offset, d.kind, d.value) for d in batch.dead_letters]
    documents = {
        name: [{k: v for k, v in doc.items() if k != "ingested_at"} for doc in docs]
        for name, docs in batch.documents.items()
    }
    return {
        "documents": documents,
        "values": batch.values,
        "letters": letters,
        "first": batch.first_offsets,
        "last": batch.last_offsets,
        "epochs": batch.epochs,
        "consumed": batch.consumed,
        "filtered": batch.filtered,
        "topics": batch.topics,
        "size": batch.size,
        "spans": batch.spans(),
    }


@pytest.mark.parametrize("tolerance", ["all", "none"])
@pytest.mark.parametrize("seed", range(40))
def test_put_builds_the_batch_that_adding_each_message_builds(seed: int, tolerance: str) -> None:
    rng = random.Random(seed)
    consumed = messages(rng, rng.randrange(1, 300))
    converter = Converter(Routes(), epoch_of, tolerance)  # type: ignore[arg-type]
    got = Batch(1, 0.0)
    result = converter.put(consumed, got)
    want = Batch(1, 0.0)
    expected = reference(want, consumed, tolerance, datetime.now(UTC))
    assert contents(got) == contents(want)
    assert result.added == expected["added"] == got.size
    poison = [(p.tp, p.offset, p.error.kind) for p in result.poison or []]
    assert poison == expected["poison"]
    assert len(result.errors or []) == sum(1 for m in consumed if m.error() is not None)


def test_a_run_split_by_a_filtered_message_and_a_dead_letter_keeps_its_first_offset() -> None:
    tick = orjson.dumps({"symbol": "VALE3", "price": 1.0, "volume": 1, "ts": "2026-12-01T13:00:00Z"})
    filtered = orjson.dumps({"symbol": "VALE3", "price": 1.0, "volume": 5, "ts": "2026-12-01T13:00:00Z"})
    values = [tick, filtered, tick, b"{bad", tick]
    consumed = [
        Message(topic="vale3", partition=0, offset=10 + i, value=v, key=None, timestamp=(1, 0))
        for i, v in enumerate(values)
    ]
    batch = Batch(1, 0.0)
    result = Converter(Routes(), epoch_of, "all").put(consumed, batch)  # type: ignore[arg-type]
    assert result.added == 5 and batch.size == 5
    assert batch.spans() == {("vale3", 0): (10, 14)}
    assert [d["_id"]["offset"] for d in batch.documents["vale3"]] == [10, 12, 14]
    assert batch.filtered == {"vale3": 1}
    assert [d.offset for d in batch.dead_letters] == [13]
    assert batch.topics == {"vale3": {"vale3": 3}}
