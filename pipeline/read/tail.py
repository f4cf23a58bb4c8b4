"""A console consumer for tick topics (`pipeline tail`), like kafka-console-consumer with tick formatting.

Without a group it reads with `assign()` under a throwaway group id and never commits anything, so any number
of tails can run next to the worker without affecting it. With `--group G` it joins G (several tails with the
same group share the partitions) and commits, for G only, the offsets of the messages it has printed.

Messages that are not valid ticks are printed escaped, with a marker; they never stop the tail.
"""

from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, Literal

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from pipeline.clients.kafka import QUIET_LOGGER, heartbeat_interval_ms
from pipeline.clients.source import check_group_access, check_topic_access, kafka_refusal
from pipeline.core.codec import DataError, Decoder, decode_raw, make_tick_decoder
from pipeline.core.errors import PipelineError, describe
from pipeline.core.naming import is_topic_pattern
from pipeline.core.timefmt import EPOCH
from pipeline.ops.config import Settings, TopicFormat
from pipeline.read.jsonout import exact_number

BAD_MARKER = "!!"
RAW_LIMIT = 300


class TailError(PipelineError):
    """Bad tail arguments (a missing topic, a pattern that matches none, the worker's own group)."""

    exit_code = 2


ShownKind = TopicFormat | Literal["bad"]


@dataclass(frozen=True)
class Shown:
    """One consumed message, decoded for display."""

    topic: str
    partition: int
    offset: int
    key: str | None
    timestamp: datetime | None  # the Kafka message timestamp
    fields: dict[str, Any] | None  # decoded tick (or raw JSON object); None when bad
    kind: ShownKind
    error: str | None = None
    raw: str | None = None  # the value, escaped and truncated, when bad


def escape(text: str, limit: int = RAW_LIMIT) -> str:
    """Printable text only: control characters (terminal escapes, newlines) are shown as \\x.. escapes."""
    out = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return out if len(out) <= limit else out[:limit] + f"... ({len(text)} chars)"


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "backslashreplace")


class TopicDecoders:
    """Each topic's decoder, as the worker reads it: raw or tick, with the topic's own field mapping."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._tick = make_tick_decoder(settings.tick_schema())
        self._own: dict[str, Decoder] = {}

    def __call__(self, topic: str) -> Decoder:
        options = self.settings.topic_options(topic)
        if options.format == "raw":
            return decode_raw
        if not (options.fields or options.ts_format is not None):
            return self._tick
        decoder = self._own.get(topic)
        if decoder is None:
            decoder = self._own[topic] = make_tick_decoder(self.settings.tick_schema(topic))
        return decoder


def decoders(settings: Settings) -> TopicDecoders:
    return TopicDecoders(settings)


def describe_message(message: Message, settings: Settings, decode: TopicDecoders) -> Shown:
    topic = str(message.topic())
    partition = int(message.partition() or 0)
    offset = int(message.offset() or 0)
    ts_type, ts_ms = message.timestamp()
    timestamp = EPOCH + timedelta(milliseconds=ts_ms) if ts_type else None
    key = _text(message.key())
    value = message.value()
    kind = settings.topic_options(topic).format
    try:
        fields = decode(topic)(value)
    except DataError as exc:
        raw = "(null)" if value is None else escape(_text(value) or "")
        return Shown(topic, partition, offset, key, timestamp, None, "bad", f"{exc.kind}: {exc.message}", raw)
    return Shown(topic, partition, offset, key, timestamp, fields, kind)


def _iso(ts: datetime, zone: tzinfo) -> str:
    return ts.astimezone(zone).isoformat(timespec="milliseconds")


def _jsonable(value: Any, zone: tzinfo) -> Any:
    return _iso(value, zone) if isinstance(value, datetime) else value


def format_json(shown: Shown, zone: tzinfo = UTC) -> str:
    record: dict[str, Any] = {
        "topic": shown.topic,
        "partition": shown.partition,
        "offset": shown.offset,
        "key": shown.key,
        "timestamp": _jsonable(shown.timestamp, zone),
    }
    if shown.kind == "bad":
        record.update(bad=True, error=shown.error, raw=shown.raw)
    else:
        assert shown.fields is not None
        record["value"] = {k: _jsonable(v, zone) for k, v in shown.fields.items()}
    return orjson.dumps(record, default=_json_default).decode()


def _json_default(value: Any) -> Any:
    try:
        return exact_number(value)  # a Decimal128 price: exactly its digits
    except TypeError:
        return str(value)


class TextFormatter:
    """One aligned line per message; the price arrow compares with the symbol's previous tick."""

    def __init__(self, zone: tzinfo = UTC) -> None:
        self.zone = zone
        self.last_price: dict[str, float] = {}

    def __call__(self, shown: Shown) -> tuple[str, str]:
        """(line, style) where style is a rich style name ('' for none)."""
        where = f"{shown.topic}[{shown.partition}]@{shown.offset}"
        if shown.kind == "bad":
            return f"{BAD_MARKER} {where}  not a tick ({escape(shown.error or '')}): {shown.raw}", "bold red"
        fields = shown.fields or {}
        if shown.kind == "raw":
            return f"{where}  {escape(orjson.dumps(fields, default=str).decode())}", ""
        symbol = str(fields["symbol"])
        price = float(fields["price"])
        previous = self.last_price.get(symbol)
        self.last_price[symbol] = price
        arrow, style = " ", ""
        if previous is not None and price > previous:
            arrow, style = "▲", "green"
        elif previous is not None and price < previous:
            arrow, style = "▼", "red"
        line = (
            f"{_iso(fields['ts'], self.zone)}  {symbol:<8} {price:>12,.2f} {arrow} "
            f"{int(fields['volume']):>10,}  {where}"
        )
        return line, style


class ConsoleTail:
    """The Kafka side of `pipeline tail`."""

    def __init__(
        self, settings: Settings, topics: list[str], group: str | None, from_beginning: bool
    ) -> None:
        kafka = settings.kafka
        if group is not None and group == kafka.group_id:
            raise TailError(
                f"group {group!r} is the worker's group (kafka.group_id): tailing with it would take "
                "partitions away from the worker and commit offsets it has not stored; use another group"
            )
        self._reported: set[str] = set()
        self._startup_errors: list[KafkaError] | None = []  # held back until start() succeeds or fails
        self.kafka = kafka
        # Refusals name the group this tail uses (--group), not the worker's.
        self._named = kafka if group is None else kafka.model_copy(update={"group_id": group})
        self.redact: Callable[[str], str] = kafka.redact
        # A refusal seen while tailing (a fetch or join refused: ACLs): consume() raises it.
        self.refusal: PipelineError | None = None
        self.topics = topics
        self.group = group
        self.from_beginning = from_beginning
        conf: dict[str, Any] = {
            **kafka.common_librdkafka(),
            # librdkafka's own log lines (one per reconnect attempt) would flood the console: dropped here;
            # errors are reported once each by `error_cb`.
            "logger": QUIET_LOGGER,
            "error_cb": self._on_error,
            "client.id": "tickpipe-tail",
            "enable.partition.eof": False,
            "enable.auto.offset.store": False,
        }
        if group is None:
            # assign() only: the group id is never used to join or commit.
            conf.update({"group.id": f"tickpipe-tail-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False})
        else:
            conf.update(
                {
                    "group.id": group,
                    "enable.auto.commit": True,  # commits the offsets stored after printing, and on close
                    "auto.offset.reset": "earliest" if from_beginning else "latest",
                    "session.timeout.ms": kafka.session_timeout_ms,
                    "heartbeat.interval.ms": heartbeat_interval_ms(kafka.session_timeout_ms),
                }
            )
        try:
            self.consumer = Consumer(conf)
        except KafkaException as exc:
            raise PipelineError(f"invalid Kafka configuration: {describe(exc)}") from None
        self.bootstrap = kafka.bootstrap_servers
        self.assigned: list[tuple[str, int]] = []

    def _on_error(self, error: KafkaError) -> None:
        if self._startup_errors is not None:  # folded into start()'s one line if it fails
            self._startup_errors.append(error)
            return
        refusal = self._refusal(error, at_start=False)
        if refusal is not None:
            self.refusal = self.refusal or refusal
            return
        text = f"{error.name()}: {error.str()}"
        if text not in self._reported:  # librdkafka repeats the same errors on every retry
            self._reported.add(text)
            print(f"tail: Kafka: {text}", file=sys.stderr, flush=True)

    def _existing(self, timeout_s: float) -> dict[str, int]:
        try:
            metadata = self.consumer.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            self.consumer.poll(0)  # serve error_cb: the cause (connection refused, name unknown, ...)
            for error in self._startup_errors or []:  # a refusal is named as such (credentials, certificate)
                refusal = self._refusal(error)
                if refusal is not None:
                    raise refusal from None
            seen = [e for e in self._startup_errors or [] if e.code() != KafkaError._ALL_BROKERS_DOWN]
            cause = f"{seen[0].name()}: {seen[0].str()}" if seen else describe(exc)
            raise PipelineError(
                f"cannot reach Kafka at {self.bootstrap} within {timeout_s:g}s: {cause}"
            ) from None
        return {name: len(meta.partitions) for name, meta in metadata.topics.items() if meta.error is None}

    def start(self, timeout_s: float = 10.0, on_assign: Any = None) -> None:
        """Check the topics (metadata within `timeout_s`), then assign or subscribe. Raises PipelineError
        (one line) when Kafka cannot be reached, TailError when a topic is missing or a pattern matches
        none."""
        existing = self._existing(timeout_s)
        self._startup_errors = None
        matched: dict[str, int] = {}
        for topic in self.topics:
            if is_topic_pattern(topic):
                try:
                    pattern = re.compile(topic)
                except re.error as exc:
                    raise TailError(
                        f"topic pattern {topic!r} is not a valid regular expression: {exc}"
                    ) from None
                found = {t: n for t, n in existing.items() if pattern.match(t)}
                if not found:
                    names = sorted(t for t in existing if not t.startswith("__"))
                    listed = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") or "none"
                    raise TailError(
                        f"topic pattern {topic!r} matches no topic on {self.bootstrap} (topics: {listed})"
                    )
                matched.update(found)
            elif topic in existing:
                matched[topic] = existing[topic]
            else:
                check_topic_access(self.consumer, [topic], self._named, timeout_s, self.redact)
                raise TailError(f"topic {topic!r} does not exist on {self.bootstrap}")
        if self.group is not None:
            check_group_access(self.kafka, self.group, timeout_s, self.redact)
        if self.group is None:
            start = OFFSET_BEGINNING if self.from_beginning else OFFSET_END
            partitions = [TopicPartition(t, p, start) for t, n in sorted(matched.items()) for p in range(n)]
            self.consumer.assign(partitions)
            self.assigned = [(p.topic, p.partition) for p in partitions]
            if on_assign is not None:
                on_assign(self.assigned)
            return

        def assigned(_consumer: Consumer, parts: list[TopicPartition]) -> None:
            self.assigned = sorted({*self.assigned, *((p.topic, p.partition) for p in parts)})
            if on_assign is not None:
                on_assign(self.assigned)

        def revoked(_consumer: Consumer, parts: list[TopicPartition]) -> None:
            gone = {(p.topic, p.partition) for p in parts}
            self.assigned = [tp for tp in self.assigned if tp not in gone]

        self.consumer.subscribe(self.topics, on_assign=assigned, on_revoke=revoked, on_lost=revoked)

    def _refusal(self, error: KafkaError, at_start: bool = True) -> PipelineError | None:
        if self.group is None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            return None  # our throwaway group.id is only looked up by librdkafka, never joined
        return kafka_refusal(error, self._named, self.redact, at_start=at_start)

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        """Messages (raises the refusal, one line, if the broker refuses us: e.g. no Read ACL)."""
        messages: list[Message] = self.consumer.consume(max(1, max_messages), timeout_s)
        for message in messages:
            error = message.error()
            if error is not None and self.refusal is None:
                self.refusal = self._refusal(error, at_start=False)
        if self.refusal is not None:
            raise self.refusal
        return messages

    def done(self, message: Message) -> None:
        """The message was printed: with a group, its offset may now be committed (auto-commit)."""
        if self.group is not None:
            self.consumer.store_offsets(message=message)

    def close(self) -> None:
        self.consumer.close()  # with a group: commits the stored offsets and leaves the group
