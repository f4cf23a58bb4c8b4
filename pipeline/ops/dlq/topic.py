"""Reading Kafka dead-letter topics (`errors.dead_letter.topic`, default `<topic>.dlq`) for a replay.

The topics are read from their first to their current last record with `assign()` (no consumer group: nothing
is committed, no group sees a rebalance). A record must carry `tickpipe.error.*` headers naming a source
topic that this dead-letter topic belongs to (the template maps that topic's name to this topic's): a
record claiming another topic is reported, never replayed into that topic's collection. The same message
dead-lettered twice (a re-delivery) is replayed once: the last record wins.

A dead-letter record does not carry the original message's timestamp; `original_timestamps` reads it from
the source topic when the `dead_letters` copy is not there to give it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from pipeline.clients.kafka import QUIET_LOGGER, consumer_config
from pipeline.core.errors import PipelineError, describe
from pipeline.ops.config import Settings
from pipeline.ops.dlq.letters import Letter, LetterError, LetterFilter, letter_from_record

READER_GROUP = "tickpipe-dlq-reader"  # never joined: the reader only assigns partitions


@dataclass
class TopicRead:
    letters: list[Letter] = field(default_factory=list)
    # (dead-letter topic, partition, offset, why): records that are not replayable tickpipe dead letters
    rejected: list[tuple[str, int, int, str]] = field(default_factory=list)
    records: int = 0


def dead_letter_topic(template: str, source: str) -> str:
    return template.replace("{topic}", source)


def _consumer(settings: Settings) -> tuple[Consumer, Callable[[str], str]]:
    kafka = settings.kafka
    conf = consumer_config(kafka)
    conf.update({"group.id": READER_GROUP, "logger": QUIET_LOGGER, "enable.auto.commit": False})
    conf.pop("group.protocol", None)
    try:
        return Consumer(conf), kafka.redact
    except KafkaException as exc:
        raise PipelineError(f"invalid Kafka configuration: {kafka.redact(describe(exc))}") from None


def read_dead_letter_topics(
    settings: Settings, sources: list[str], selection: LetterFilter, timeout_s: float
) -> TopicRead:
    """Every selected letter of the dead-letter topics of `sources`, up to each partition's current end."""
    template = settings.errors.dead_letter.topic
    assert template is not None
    wanted = {dead_letter_topic(template, s): s for s in sources}
    consumer, redact = _consumer(settings)
    where = f"Kafka at {settings.kafka.bootstrap_servers}"
    out = TopicRead()
    latest: dict[tuple[str, int, int], Letter] = {}
    try:
        try:
            metadata = consumer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise PipelineError(
                f"cannot reach {where} within {timeout_s:g}s: {redact(describe(exc))}"
            ) from None
        ends: dict[tuple[str, int], int] = {}
        starts: list[TopicPartition] = []
        for dlq in sorted(wanted):
            meta = metadata.topics.get(dlq)
            if meta is None or meta.error is not None:
                continue  # no dead-letter topic: nothing was dead-lettered there
            for partition in sorted(meta.partitions):
                try:
                    low, high = consumer.get_watermark_offsets(
                        TopicPartition(dlq, partition), timeout=timeout_s, cached=False
                    )
                except KafkaException as exc:
                    raise PipelineError(
                        f"cannot read the offsets of {dlq}[{partition}] from {where}: {redact(describe(exc))}"
                    ) from None
                if high > low:
                    ends[(dlq, partition)] = high
                    starts.append(TopicPartition(dlq, partition, low))
        if not starts:
            return out
        consumer.assign(starts)
        deadline = time.monotonic() + timeout_s
        remaining = dict(ends)
        while remaining:
            if time.monotonic() > deadline:
                left = ", ".join(f"{t}[{p}]" for t, p in sorted(remaining))
                raise PipelineError(
                    f"reading the dead-letter topics from {where} timed out ({left} not read to the end)"
                )
            for message in consumer.consume(500, 1.0):
                error = message.error()
                if error is not None:
                    if error.code() == error._PARTITION_EOF:
                        continue
                    raise PipelineError(f"reading the dead-letter topics from {where}: {redact(error.str())}")
                dlq, partition, offset = (
                    str(message.topic()),
                    int(message.partition() or 0),
                    int(message.offset() or 0),
                )
                if offset + 1 >= remaining.get((dlq, partition), 0):
                    remaining.pop((dlq, partition), None)
                if offset >= ends.get((dlq, partition), 0):
                    continue  # produced after the read started: the next replay takes it
                out.records += 1
                try:
                    letter = letter_from_record(_headers(message), message.key(), message.value())
                except LetterError as exc:
                    out.rejected.append((dlq, partition, offset, str(exc)))
                    continue
                if dead_letter_topic(template, letter.topic) != dlq or letter.topic not in sources:
                    out.rejected.append(
                        (
                            dlq,
                            partition,
                            offset,
                            f"claims source topic {letter.topic!r}, whose dead letters go to "
                            f"{dead_letter_topic(template, letter.topic)!r}: not replayed",
                        )
                    )
                    continue
                if selection.matches(letter):
                    latest[letter.coordinates] = letter
    finally:
        consumer.close()
    out.letters = [latest[c] for c in sorted(latest)]
    return out


def _headers(message: Any) -> list[tuple[str, bytes | None]]:
    raw = message.headers() or []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v.encode() if isinstance(v, str) else v) for k, v in items]


def original_timestamps(
    settings: Settings, letters: list[Letter], timeout_s: float
) -> dict[tuple[str, int, int], int | None]:
    """The timestamp of each letter's original record, read at its coordinates in the source topic; a letter
    whose record is gone (retention) or holds other bytes is left out."""
    if not letters:
        return {}
    consumer, redact = _consumer(settings)
    found: dict[tuple[str, int, int], int | None] = {}
    try:
        for letter in letters:
            consumer.assign([TopicPartition(letter.topic, letter.partition, letter.offset)])
            deadline = time.monotonic() + timeout_s
            message: Any = None
            while message is None and time.monotonic() < deadline:
                batch = consumer.consume(1, 1.0)
                message = batch[0] if batch else None
                if message is not None and message.error() is not None:
                    message = None
            if message is None or message.offset() != letter.offset or message.value() != letter.value:
                continue
            kind, stamp = message.timestamp()
            found[letter.coordinates] = stamp if kind else None
    except KafkaException as exc:
        raise PipelineError(f"reading the original records: {redact(describe(exc))}") from None
    finally:
        consumer.close()
    return found
