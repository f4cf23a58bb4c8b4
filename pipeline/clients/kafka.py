"""librdkafka configuration for every Kafka client tickpipe makes (worker consumer, dead-letter producer,
simulator, status, tail), and the few calls they share.

The worker's consumer keeps the properties that commit-after-durable-write depends on; users add raw
librdkafka properties through `kafka.consumer` / `kafka.producer` (keys tickpipe manages are refused there
by the configuration model).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Producer

from pipeline.ops.config import KafkaConfig

# librdkafka logs one line per reconnect attempt: commands that report errors themselves (status, tail) give
# it this silent logger instead of the structured one.
QUIET_LOGGER = logging.getLogger("pipeline.librdkafka.quiet")
QUIET_LOGGER.addHandler(logging.NullHandler())
QUIET_LOGGER.propagate = False


def heartbeat_interval_ms(session_timeout_ms: int) -> int:
    """A member must heartbeat several times per session, or one slow heartbeat expires it."""
    return max(100, session_timeout_ms // 4)


def consumer_config(
    config: KafkaConfig, error_cb: Callable[[KafkaError], None] | None = None
) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **config.common_librdkafka(),
        "group.id": config.group_id,
        "enable.auto.commit": False,
        "auto.offset.reset": config.auto_offset_reset,
        "max.poll.interval.ms": config.max_poll_interval_ms,
        "enable.partition.eof": False,
        # Bounded prefetch: with a backlog, librdkafka would otherwise buffer up to 64 MB per client.
        "queued.max.messages.kbytes": 16384,
        "topic.metadata.refresh.interval.ms": 30_000,
        # A broker that holds an empty fetch for the whole wait (instead of answering as soon as data arrives)
        # would add up to this much latency to every quiet-stream message; librdkafka's default is 500 ms.
        "fetch.wait.max.ms": 100,
    }
    if config.group_protocol == "consumer":
        # KIP-848: the broker owns the session timeout, the heartbeat interval and the assignor.
        conf["group.protocol"] = "consumer"
    else:
        conf["session.timeout.ms"] = config.session_timeout_ms
        conf["heartbeat.interval.ms"] = heartbeat_interval_ms(config.session_timeout_ms)
    conf.update(config.consumer)
    if error_cb is not None:
        conf["error_cb"] = error_cb
    return conf


def producer_config(kafka: KafkaConfig, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {
        **kafka.common_librdkafka(),
        "acks": "all",
        "enable.idempotence": True,
        "linger.ms": 10,
        "message.timeout.ms": 60_000,
    }
    conf.update(extra or {})
    conf.update(kafka.producer)
    return conf


def produce_waiting(producer: Producer, topic: str, **kwargs: Any) -> None:
    """produce(), waiting for room while librdkafka's local queue is full (serving delivery reports)."""
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)
