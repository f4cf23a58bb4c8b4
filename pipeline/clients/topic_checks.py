"""What the worker checks on Kafka before it consumes a topic: that the topic's dead-letter topic exists (or
can be created), how large a record that topic accepts, and which topic the name stands for (its id).

A missing dead-letter topic would otherwise be found by the first bad message, which could then never be
dead-lettered: the worker would stop at it, restart, and stop again. So it is created at start-up (or, for a
topic matched later by a pattern, before its first message is consumed), or the worker refuses to start with
one line naming it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from pipeline.clients.sink import TopicIdentity
from pipeline.core.errors import ConfigurationError, TransientError, describe, kafka_error_of
from pipeline.ops.config import KafkaConfig
from pipeline.ops.logs import get_logger

log = get_logger("pipeline.clients.topic_checks")


class TopicChecker:
    def __init__(self, kafka: KafkaConfig, timeout_s: float = 15.0) -> None:
        self.kafka = kafka
        self.timeout_s = timeout_s
        conf: dict[str, Any] = dict(kafka.common_librdkafka())
        try:
            self.admin = AdminClient(conf)
        except KafkaException as exc:
            raise ConfigurationError(f"invalid Kafka configuration: {describe(exc)}") from None
        self._cluster_id: str | None = None
        self._identity_unavailable_logged = False

    def ensure_topics(self, names: Iterable[str], create: bool, partitions: int, replication: int) -> None:
        """Make sure every named (dead-letter) topic exists: create the missing ones when allowed, else raise
        ConfigurationError naming the topic and why."""
        wanted = sorted(set(names))
        if not wanted:
            return
        try:
            metadata = self.admin.list_topics(timeout=self.timeout_s)
        except KafkaException as exc:
            raise TransientError(f"cannot list Kafka topics: {describe(exc)}") from None
        self._cluster_id = metadata.cluster_id or self._cluster_id
        missing = [name for name in wanted if name not in metadata.topics or metadata.topics[name].error]
        if not missing:
            return
        if not create:
            raise ConfigurationError(
                f"dead-letter topic {missing[0]} does not exist (errors.dead_letter.create_topics is false): "
                f"create it (pipeline topics create {' '.join(missing)}) or change errors.dead_letter.topic"
            )
        futures = self.admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=replication) for name in missing],
            operation_timeout=self.timeout_s,
            request_timeout=self.timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=self.timeout_s)
                log.info("created dead-letter topic", topic=name, partitions=partitions)
            except KafkaException as exc:
                error = kafka_error_of(exc)
                if error is not None and error.code() == error.TOPIC_ALREADY_EXISTS:
                    continue
                raise ConfigurationError(
                    f"dead-letter topic {name} does not exist and cannot be created: {describe(exc)}; "
                    f"create it (pipeline topics create {name}) or change errors.dead_letter.topic"
                ) from None
            except Exception as exc:
                raise ConfigurationError(
                    f"dead-letter topic {name} does not exist and cannot be created: {describe(exc)}"
                ) from None

    def record_limits(self, names: Iterable[str]) -> dict[str, int]:
        """topic -> its max.message.bytes, for the topics whose configuration the broker lets us read."""
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in sorted(set(names))]
        if not resources:
            return {}
        limits: dict[str, int] = {}
        try:
            futures = self.admin.describe_configs(resources, request_timeout=self.timeout_s)
            for resource, future in futures.items():
                entry = future.result(timeout=self.timeout_s).get("max.message.bytes")
                if entry is not None and entry.value is not None:
                    limits[resource.name] = int(entry.value)
        except Exception as exc:  # not allowed to read topic configs, or an old broker: use the default
            log.info("cannot read the dead-letter topics' max.message.bytes", error=describe(exc))
        return limits

    def identities(self, topics: Iterable[str]) -> dict[str, TopicIdentity]:
        """topic -> its identity (topic id, cluster id), where the broker tells (Kafka 2.8+)."""
        names = sorted(set(topics))
        if not names:
            return {}
        if self._cluster_id is None:
            with contextlib.suppress(KafkaException):
                self._cluster_id = self.admin.list_topics(timeout=self.timeout_s).cluster_id
        ids: dict[str, str | None] = dict.fromkeys(names)
        try:
            futures = self.admin.describe_topics(TopicCollection(names), request_timeout=self.timeout_s)
            for name, future in futures.items():
                topic_id = future.result(timeout=self.timeout_s).topic_id
                ids[name] = str(topic_id) if topic_id is not None else None
        except Exception as exc:
            if not self._identity_unavailable_logged:
                self._identity_unavailable_logged = True
                log.warning(
                    "this broker does not tell topic ids: a re-created topic cannot be told from the old one",
                    error=describe(exc),
                )
        return {name: TopicIdentity(topic_id, self._cluster_id) for name, topic_id in ids.items()}
