"""Topic administration with the Kafka AdminClient (what the seed did with kafka-topics.sh)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from pipeline.clients.kafka import QUIET_LOGGER
from pipeline.clients.source import RefusalWatch, wait_for_metadata
from pipeline.core.errors import PipelineError, describe, kafka_error_of
from pipeline.ops.config import KafkaConfig


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int


def admin_client(kafka: KafkaConfig, watch: RefusalWatch | None = None) -> AdminClient:
    # The commands using it report errors in one line (error_cb): librdkafka's log lines are dropped.
    conf: dict[str, Any] = {**kafka.common_librdkafka(), "logger": QUIET_LOGGER}
    if watch is not None:
        conf["error_cb"] = watch
    try:
        return AdminClient(conf)
    except KafkaException as exc:
        raise PipelineError(f"invalid Kafka configuration: {describe(exc)}") from None


def create_topics(
    kafka: KafkaConfig, names: list[str], partitions: int, replication: int = 1, timeout_s: float = 30.0
) -> dict[str, str]:
    """Create topics; returns name -> "created" | "exists". Raises PipelineError on any other failure (a
    refusal, such as wrong credentials, is reported as such rather than as a timeout)."""
    watch = RefusalWatch(kafka, needs="a Create ACL on the topics or the cluster")
    admin = admin_client(kafka, watch)
    wait_for_metadata(admin, watch, timeout_s)
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
    watch = RefusalWatch(kafka, needs="a Describe ACL on the topics")
    admin = admin_client(kafka, watch)
    metadata = wait_for_metadata(admin, watch, timeout_s)
    topics = [
        TopicInfo(name, len(meta.partitions))
        for name, meta in metadata.topics.items()
        if include_internal or not name.startswith("__")
    ]
    return sorted(topics, key=lambda t: t.name)
