"""Kafka side: the consumer (group membership, batched consume, synchronous explicit commits, pause/resume).

All calls happen on the worker's main thread; librdkafka invokes the rebalance callbacks from inside
`consume()`, on that same thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from pipeline.clients.kafka import consumer_config
from pipeline.core.coordinates import TP
from pipeline.core.errors import (
    ConfigurationError,
    FatalError,
    PipelineError,
    StartupError,
    describe,
    is_rebalance_error,
    is_transient_kafka,
    kafka_error_of,
)
from pipeline.core.naming import is_topic_pattern
from pipeline.ops.config import KafkaConfig
from pipeline.ops.logs import get_logger

log = get_logger("pipeline.clients.source")
RebalanceCallback = Callable[[list[TP]], None]


class CommitFailed(Exception):
    def __init__(self, error: KafkaError | None, message: str) -> None:
        super().__init__(message)
        self.error = error

    @property
    def transient(self) -> bool:
        return self.error is None or is_transient_kafka(self.error)

    @property
    def rebalance(self) -> bool:
        return self.error is not None and is_rebalance_error(self.error)


def _who(config: KafkaConfig) -> str:
    user = config.security.sasl_username
    return f"user {user!r}" if user else "this client"


CONSUMER_ACLS = "Read and Describe ACLs on its topics and a Read ACL on its group"
PRODUCER_ACLS = "Write and Describe ACLs on its topics"


def kafka_refusal(
    error: KafkaError,
    config: KafkaConfig,
    redact: Callable[[str], str] = lambda s: s,
    at_start: bool = True,
    needs: str = CONSUMER_ACLS,
) -> PipelineError | None:
    """A Kafka error that waiting or retrying cannot fix, as one operator line naming its cause; None when
    the error may be transient (librdkafka then keeps retrying by itself).

    Decided by error code only (never by the broker's wording): wrong SASL credentials, a TLS handshake that
    fails (an untrusted certificate), a missing ACL on a topic, the group or the cluster, and a group
    setting the broker refuses (the session timeout) are refusals.
    """
    code = error.code()
    where = config.bootstrap_servers
    text = redact(error.str())
    kind: type[PipelineError] = StartupError if at_start else FatalError
    if code in (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED):
        mechanism = config.security.sasl_mechanism or "SASL"
        return kind(f"Kafka at {where} refused the {mechanism} credentials of {_who(config)}: {text}")
    if code == KafkaError._SSL:
        return kind(f"TLS with Kafka at {where} failed (check kafka.security.ssl_ca_location): {text}")
    if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        return kind(
            f"Kafka at {where} denies {_who(config)} access to a topic (TOPIC_AUTHORIZATION_FAILED; "
            f"it needs {needs}): {text}"
        )
    if code == KafkaError.GROUP_AUTHORIZATION_FAILED:
        return kind(
            f"Kafka at {where} denies {_who(config)} access to consumer group {config.group_id!r} "
            f"(GROUP_AUTHORIZATION_FAILED; it needs a Read ACL on the group): {text}"
        )
    if code == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        return kind(
            f"Kafka at {where} denies {_who(config)} a cluster operation "
            f"(CLUSTER_AUTHORIZATION_FAILED): {text}"
        )
    if code == KafkaError.INVALID_SESSION_TIMEOUT:
        return ConfigurationError(
            f"kafka.session_timeout_ms={config.session_timeout_ms}: the broker at {where} refuses this "
            "session timeout (INVALID_SESSION_TIMEOUT: outside its group.min.session.timeout.ms.."
            f"group.max.session.timeout.ms): {text}"
        )
    if error.fatal():
        return kind(f"fatal Kafka error: {error.name()}: {text}")
    return None


class RefusalWatch:
    """An error_cb for any Kafka client: keeps the first refusal (kafka_refusal) it is told about, so a
    command can report that cause instead of a generic 'cannot reach Kafka' or a timeout."""

    def __init__(
        self, config: KafkaConfig, redact: Callable[[str], str] = lambda s: s, needs: str = CONSUMER_ACLS
    ) -> None:
        self.config = config
        self.redact = redact
        self.needs = needs
        self.refusal: PipelineError | None = None
        self.last_error: KafkaError | None = None

    def __call__(self, error: KafkaError) -> None:
        self.last_error = error
        if self.refusal is None:
            self.refusal = kafka_refusal(error, self.config, self.redact, needs=self.needs)

    def raise_if_refused(self) -> None:
        if self.refusal is not None:
            raise self.refusal


def wait_for_metadata(client: Any, watch: RefusalWatch, timeout_s: float, topic: str | None = None) -> Any:
    """client.list_topics() retried within timeout_s, serving the error callback between attempts: raises
    the refusal as soon as one is seen, or StartupError('cannot reach Kafka ...') at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return client.list_topics(topic, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            client.poll(0)
            watch.raise_if_refused()
            if time.monotonic() >= deadline:
                last = watch.last_error
                cause = last.str() if last is not None else describe(exc)
                raise StartupError(
                    f"cannot reach Kafka at {watch.config.bootstrap_servers} within {timeout_s:g}s: "
                    f"{watch.redact(cause)}"
                ) from None


def check_topic_access(
    client: Any,
    topics: Iterable[str],
    config: KafkaConfig,
    timeout_s: float,
    redact: Callable[[str], str] = lambda s: s,
) -> None:
    """Raise the refusal (one line) if the broker denies us one of the named `topics` (patterns are skipped).
    A topic we may not Describe is left out of the cluster's metadata; asked for by name, the broker says why
    (TOPIC_AUTHORIZATION_FAILED): a refusal, not a missing topic. A missing Read ACL shows only when
    fetching: consume() reports it."""
    for topic in topics:
        if is_topic_pattern(topic):
            continue
        try:
            metadata = client.list_topics(topic, timeout=timeout_s)
        except KafkaException:
            continue  # transient: the caller retries or reports on its own
        found = metadata.topics.get(topic)
        error = found.error if found is not None else None
        if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            refusal = kafka_refusal(error, config, redact)
            if refusal is not None:
                raise refusal


def check_group_access(
    config: KafkaConfig, group_id: str, timeout_s: float, redact: Callable[[str], str] = lambda s: s
) -> None:
    """Raise the refusal (one line) if the broker denies us the consumer group `group_id`. Without an ACL on
    a group, librdkafka only logs 'Group authorization failed' once and waits forever; the group coordinator
    answers an admin request with GROUP_AUTHORIZATION_FAILED at once."""
    from confluent_kafka.admin import AdminClient

    from pipeline.clients.kafka import QUIET_LOGGER

    try:
        conf: dict[str, Any] = {**config.common_librdkafka(), "logger": QUIET_LOGGER}
        admin = AdminClient(conf)
        future = admin.describe_consumer_groups([group_id], request_timeout=timeout_s)
        future[group_id].result(timeout=timeout_s + 1)
    except KafkaException as exc:
        error = kafka_error_of(exc)
        if error is not None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
            named = config.model_copy(update={"group_id": group_id})
            refusal = kafka_refusal(error, named, redact)
            if refusal is not None:
                raise refusal from None
    except Exception:
        return  # anything else (a timeout, a coordinator moving) is not a refusal: carry on


class KafkaSource:
    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self.last_error: KafkaError | None = None
        # Set (from librdkafka's error callback) when the client can't go on: the worker stops with it.
        self.fatal: PipelineError | None = None
        # The first refusal seen (credentials, certificate, ACL, refused setting): check_connection raises it.
        self.refusal: PipelineError | None = None
        self._started = False
        self.brokers_down = False
        try:
            self.consumer = Consumer(consumer_config(config, self._on_error))
        except KafkaException as exc:
            raise StartupError(
                f"invalid Kafka consumer configuration: {self.redact(describe(exc))}"
            ) from None
        self.paused: set[TP] = set()

    def redact(self, text: str) -> str:
        return self.config.redact(text)

    def _on_error(self, error: KafkaError) -> None:
        # Called from consume()/poll(). librdkafka keeps reconnecting by itself; what retrying cannot fix (a
        # refusal: credentials, certificate, ACLs, a refused setting, a fatal error) becomes `fatal`, which
        # the worker checks on every step and stops with.
        refusal = kafka_refusal(error, self.config, self.redact, at_start=not self._started)
        with self._lock:
            self.last_error = error
            if error.code() == KafkaError._ALL_BROKERS_DOWN:
                self.brokers_down = True
            if refusal is not None:
                self.refusal = self.refusal or refusal
                if self._started:
                    self.fatal = self.fatal or refusal
        if refusal is None:
            log.warning("Kafka client error (librdkafka retries by itself)", error=self.redact(error.str()))
        # A refusal is reported once, by whoever stops on it (check_connection's caller, or the worker).

    def _check_message_errors(self, messages: list[Message]) -> None:
        """Errors delivered as messages: a missing Read ACL (fetch), a refused session timeout (join)."""
        for message in messages:
            error = message.error()
            if error is None or self.fatal is not None:
                continue
            refusal = kafka_refusal(error, self.config, self.redact, at_start=False)
            if refusal is not None:
                self.fatal = refusal

    def check_connection(self, timeout_s: float) -> None:
        """Within timeout_s: fetch cluster metadata, check that the fixed topics and the group may be used,
        or raise one line naming the cause: a refusal (StartupError, or ConfigurationError), else 'cannot
        reach Kafka' with the last client error."""
        deadline = time.monotonic() + timeout_s

        def remaining() -> float:
            return max(0.1, deadline - time.monotonic())

        while True:
            try:
                self.consumer.list_topics(timeout=min(1.0, remaining()))
                break
            except KafkaException as exc:
                self.consumer.poll(0)  # serve the error callback: it records refusals
                if self.refusal is not None:
                    raise self.refusal from None
                if time.monotonic() >= deadline:
                    cause = self.last_error.str() if self.last_error is not None else describe(exc)
                    raise StartupError(
                        f"cannot reach Kafka at {self.config.bootstrap_servers} within {timeout_s:g}s: "
                        f"{self.redact(cause)}"
                    ) from None
        self.consumer.poll(0)
        if self.refusal is not None:
            raise self.refusal
        self._check_topics(remaining())
        self._check_group(remaining())
        self.brokers_down = False
        self._started = True

    def _check_topics(self, timeout_s: float) -> None:
        check_topic_access(self.consumer, self.config.topics, self.config, timeout_s, self.redact)

    def _check_group(self, timeout_s: float) -> None:
        check_group_access(self.config, self.config.group_id, timeout_s, self.redact)

    def subscribe(
        self,
        on_assign: RebalanceCallback,
        on_revoke: RebalanceCallback,
        on_lost: RebalanceCallback,
        skip: Callable[[str], bool] | None = None,
    ) -> None:
        """Join the group. Partitions of topics for which `skip(topic)` is true (the worker's own dead-letter
        topics, matched by a pattern subscription) are taken from the group but never fetched."""
        incremental = self.incremental

        def kept(partitions: list[TopicPartition]) -> list[TopicPartition]:
            return [p for p in partitions if skip is None or not skip(p.topic)]

        def tps(partitions: list[TopicPartition]) -> list[TP]:
            return [(p.topic, p.partition) for p in partitions]

        def assigned(_c: Consumer, parts: list[TopicPartition]) -> None:
            ours = kept(parts)
            if len(ours) < len(parts):  # assign ourselves: the client would assign (and fetch) them all
                if incremental:
                    self.consumer.incremental_assign(ours)
                else:
                    self.consumer.assign(ours)
            on_assign(tps(ours))

        def taken(callback: RebalanceCallback) -> Callable[[Consumer, list[TopicPartition]], None]:
            def handle(_c: Consumer, parts: list[TopicPartition]) -> None:
                ours = kept(parts)
                callback(tps(ours))
                if incremental and len(ours) < len(parts):  # only what was assigned can be unassigned
                    self.consumer.incremental_unassign(ours)

            return handle

        self.consumer.subscribe(
            list(self.config.topics), on_assign=assigned, on_revoke=taken(on_revoke), on_lost=taken(on_lost)
        )

    @property
    def incremental(self) -> bool:
        """Partitions are assigned and revoked incrementally (KIP-848, or the cooperative-sticky assignor)."""
        strategy = str(self.config.consumer.get("partition.assignment.strategy", ""))
        return self.config.group_protocol == "consumer" or "cooperative" in strategy

    def consume(self, max_messages: int, timeout_s: float) -> list[Message]:
        messages: list[Message] = self.consumer.consume(max(1, max_messages), timeout_s)
        if messages:
            self.brokers_down = False
            self._check_message_errors(messages)
        return messages

    def commit(self, offsets: Mapping[TP, int]) -> None:
        """Synchronously commit exactly these next-offsets. Raises CommitFailed."""
        partitions = [
            TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()
        ]
        try:
            result = self.consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            error = kafka_error_of(exc)
            raise CommitFailed(error, self.redact(describe(exc))) from None
        for tp in result or []:
            if tp.error is not None:
                raise CommitFailed(tp.error, f"{tp.topic}[{tp.partition}]: {tp.error.str()}")

    def committed(self, tps: list[TP], timeout_s: float = 10.0) -> dict[TP, int]:
        parts = self.consumer.committed([TopicPartition(t, p) for t, p in tps], timeout=timeout_s)
        return {(p.topic, p.partition): p.offset for p in parts}

    def pause(self, tps: list[TP]) -> None:
        todo = [tp for tp in tps if tp not in self.paused]
        if todo:
            self.consumer.pause([TopicPartition(t, p) for t, p in todo])
            self.paused.update(todo)

    def resume_all(self) -> None:
        if self.paused:
            self.consumer.resume([TopicPartition(t, p) for t, p in self.paused])
            self.paused.clear()

    def release(self, tps: list[TP]) -> None:
        """Resume partitions we paused before they leave us: librdkafka keeps a partition's pause flag across
        a rebalance, so a partition revoked while paused would stay paused when it is assigned again."""
        todo = [tp for tp in tps if tp in self.paused]
        if todo:
            self.consumer.resume([TopicPartition(t, p) for t, p in todo])
            self.paused.difference_update(todo)

    def positions(self, tps: list[TP]) -> dict[TP, int]:
        """The next offset the consumer will deliver per partition (past transaction markers and other
        offsets that hold no message); negative where nothing was delivered yet."""
        if not tps:
            return {}
        parts = self.consumer.position([TopicPartition(t, p) for t, p in tps])
        return {(p.topic, p.partition): p.offset for p in parts if p.error is None}

    @property
    def group_protocol(self) -> str:
        """'classic' or 'consumer' (KIP-848), as configured."""
        return self.config.group_protocol

    def watermarks(self, tp: TP) -> tuple[int, int] | None:
        try:
            low, high = self.consumer.get_watermark_offsets(TopicPartition(*tp), cached=True)
        except KafkaException:
            return None
        return (low, high) if high >= 0 else None

    def close(self) -> None:
        self.consumer.close()
