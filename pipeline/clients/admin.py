"""Topic administration with the Kafka AdminClient (what the seed did with kafka-topics.sh)."""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from pipeline.core.errors import PipelineError, describe, kafka_error_of
from pipeline.ops.config import KafkaConfig


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int


def admin_client(kafka: KafkaConfig) -> AdminClient:
    try:
        return AdminClient(kafka.common_librdkafka())
    except KafkaException as exc:
        raise PipelineError(f"invalid Kafka configuration: {describe(exc)}") from None


def create_topics(
    kafka: KafkaConfig, names: list[str], partitions: int, replication: int = 1, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create topics; returns name -> "created" | "exists". Raises PipelineError on any other failure."""
    admin = admin_client(kafka)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=replication) for name in names],
        operation_timeout=timeout_s,
        request_timeout=timeout_s,
    )
    result: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=timeout_s)
            result[name] = "created"
        except KafkaException as exc:
            error = kafka_error_of(exc)
            if error is not None and error.code() == error.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
            else:
                raise PipelineError(f"cannot create topic {name!r}: {describe(exc)}") from None
        except Exception as exc:
            raise PipelineError(f"cannot create topic {name!r}: {describe(exc)}") from None
    return result


def list_topics(
    kafka: KafkaConfig, timeout_s: float = 10.0, include_internal: bool = False
) -> list[TopicInfo]:
    admin = admin_client(kafka)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise PipelineError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {describe(exc)}") from None
    topics = [
        TopicInfo(name, len(meta.partitions))
        for name, meta in metadata.topics.items()
        if include_internal or not name.startswith("__")
    ]
    return sorted(topics, key=lambda t: t.name)
