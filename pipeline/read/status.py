"""Where a consumer group stands: committed offsets, end offsets and lag per partition, documents stored.

Read-only and side-effect free: the consumer is created with the group id only to read the group's
committed offsets (OffsetFetch) and the partitions' watermarks; it never subscribes, so it never joins the
group and never triggers a rebalance of the running workers. MongoDB is asked for estimated collection counts
(collection metadata, no scan).

The end offset is what the broker reports as the high watermark. When it is below the group's committed
offset the broker is wrong (a committed offset is always at or below the true end; the Tansu test broker
reports the start of a partition's last batch + 1): the partition is marked `end_offset_reliable: false` and
no lag is computed, instead of a lag clamped to 0.

The group itself is described by the broker (DescribeGroups / ConsumerGroupDescribe, a read-only request):
which group protocol it uses (`classic`, or `consumer` for KIP-848 groups), its state and how many members
it has. A group that has neither members nor committed offsets does not exist for the broker (state `dead`:
no protocol). A broker that cannot describe it leaves these fields empty, with the reason; the offsets are
still shown.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from pipeline.core.errors import PipelineError, describe, kafka_error_of
from pipeline.core.naming import CollectionRouter, NameError_, is_topic_pattern
from pipeline.ops.config import Settings
from pipeline.ops.redact import redact_text, redact_uri

END_OFFSET_SOURCE = "high watermark as reported by the broker"
UNRELIABLE_END_OFFSET = (
    "the broker reports an end offset below the committed offset, so its end offsets cannot be trusted "
    "(the Tansu test broker reports the start of the last batch + 1); no lag is shown"
)


@dataclass
class PartitionStatus:
    partition: int
    committed: int | None  # next offset the group will read; None: the group has committed nothing here
    end_offset: int  # high watermark, as reported by the broker
    lag: int | None  # end_offset - committed; None without a committed offset, or when the end is unreliable
    end_offset_reliable: bool = True  # False: the broker's end offset is below the committed offset


def partition_status(partition: int, committed: int, end_offset: int) -> PartitionStatus:
    """`committed` as librdkafka returns it (negative: nothing committed) and the broker's high watermark."""
    done = committed if committed >= 0 else None
    if done is not None and end_offset < done:
        return PartitionStatus(partition, done, end_offset, None, end_offset_reliable=False)
    return PartitionStatus(partition, done, end_offset, None if done is None else end_offset - done)


@dataclass
class TopicStatus:
    topic: str
    exists: bool
    collection: str | None  # None: the topic maps to no valid collection name
    stored_documents: int | None  # estimated count of the topic's collection
    partitions: list[PartitionStatus] = field(default_factory=list)

    @property
    def committed_total(self) -> int | None:
        offsets = [p.committed for p in self.partitions if p.committed is not None]
        return sum(offsets) if offsets else None

    @property
    def end_total(self) -> int:
        return sum(p.end_offset for p in self.partitions)

    @property
    def end_offsets_reliable(self) -> bool:
        return all(p.end_offset_reliable for p in self.partitions)

    @property
    def lag_total(self) -> int | None:
        """The sum of the partitions' lags; None when some partition has none (nothing committed there yet,
        or an unreliable end offset): a partial sum would understate the lag."""
        lags = [p.lag for p in self.partitions]
        if not lags or (None in lags and not self.end_offsets_reliable):
            return None
        known = [lag for lag in lags if lag is not None]
        return sum(known) if known else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            committed_total=self.committed_total,
            end_total=self.end_total,
            lag_total=self.lag_total,
            end_offsets_reliable=self.end_offsets_reliable,
        )
        return data


@dataclass(frozen=True)
class GroupDescription:
    """What the broker says about the group."""

    protocol: str | None  # "classic" | "consumer" (KIP-848); None: no such group, or not described
    state: str | None  # "stable", "empty", "dead", ... (lower case); None: not described
    members: int | None
    error: str | None = None  # why the broker could not describe it

    @classmethod
    def failed(cls, error: str) -> GroupDescription:
        return cls(None, None, None, error)


UNDESCRIBED = GroupDescription(None, None, None)


@dataclass
class GroupStatus:
    group: str
    kafka: str
    mongo: str  # redacted URI
    database: str
    topics: list[TopicStatus]
    description: GroupDescription = UNDESCRIBED
    configured_protocol: str = "classic"  # kafka.group_protocol: what this configuration's workers use

    @property
    def end_offsets_reliable(self) -> bool:
        return all(t.end_offsets_reliable for t in self.topics)

    def as_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "kafka": self.kafka,
            "mongo": self.mongo,
            "database": self.database,
            "group_protocol": self.description.protocol,
            "group_protocol_configured": self.configured_protocol,
            "group_state": self.description.state,
            "group_members": self.description.members,
            "group_description_error": self.description.error,
            "end_offset_source": END_OFFSET_SOURCE,
            "end_offsets_reliable": self.end_offsets_reliable,
            "topics": [t.as_dict() for t in self.topics],
        }


def collect(settings: Settings, timeout_s: float = 10.0) -> GroupStatus:
    """Raises PipelineError (one line, no secret) when a server cannot be reached or refuses us."""
    offsets = _kafka_offsets(settings, timeout_s)
    description = describe_group(settings, timeout_s)
    counts = _stored_counts(settings, list(offsets), timeout_s)
    router = settings.collection_router()
    topics = []
    for topic, partitions in offsets.items():
        collection = _collection(router, topic)
        topics.append(
            TopicStatus(
                topic=topic,
                exists=partitions is not None,
                collection=collection,
                stored_documents=counts.get(collection) if collection else None,
                partitions=partitions or [],
            )
        )
    return GroupStatus(
        group=settings.kafka.group_id,
        kafka=settings.kafka.bootstrap_servers,
        mongo=redact_uri(settings.mongo.uri.get_secret_value()),
        database=settings.mongo.database,
        topics=topics,
        description=description,
        configured_protocol=settings.kafka.group_protocol,
    )


def _collection(router: CollectionRouter, topic: str) -> str | None:
    try:
        return router.collection_for(topic)
    except NameError_:
        return None


def _kafka_offsets(settings: Settings, timeout_s: float) -> dict[str, list[PartitionStatus] | None]:
    """topic -> partitions (None: the topic does not exist), for the configured topics and patterns."""
    from pipeline.clients.kafka import QUIET_LOGGER, consumer_config
    from pipeline.clients.source import (
        RefusalWatch,
        check_group_access,
        check_topic_access,
        wait_for_metadata,
    )

    kafka = settings.kafka
    redact = kafka.redact
    # A refusal (credentials, certificate, ACLs) is named as such, never as 'cannot reach Kafka'.
    watch = RefusalWatch(kafka, redact)
    conf = consumer_config(kafka, error_cb=watch)
    conf["logger"] = QUIET_LOGGER  # errors are reported in one line instead
    where = f"Kafka at {kafka.bootstrap_servers}"

    def failure(what: str, exc: BaseException) -> PipelineError:
        consumer.poll(0)  # serve the error callback
        if watch.refusal is not None:
            return watch.refusal
        cause = watch.last_error.str() if watch.last_error is not None else describe(exc)
        return PipelineError(f"{what}: {redact(cause)}")

    try:
        consumer = Consumer(conf)
    except KafkaException as exc:
        raise PipelineError(f"invalid Kafka configuration: {redact(describe(exc))}") from None
    try:
        metadata = wait_for_metadata(consumer, watch, timeout_s)
        absent = [name for name in kafka.topics if name not in metadata.topics]
        check_topic_access(consumer, absent, kafka, timeout_s, redact)  # absent because denied?
        check_group_access(kafka, kafka.group_id, timeout_s, redact)
        existing = {
            name: sorted(meta.partitions)
            for name, meta in metadata.topics.items()
            if meta.error is None and not name.startswith("__")
        }
        topics: dict[str, list[int] | None] = {}
        for configured in kafka.topics:
            if is_topic_pattern(configured):
                pattern = re.compile(configured)
                for name in sorted(existing):
                    if pattern.search(name):
                        topics[name] = existing[name]
            else:
                topics[configured] = existing.get(configured)
        tps = [TopicPartition(t, p) for t, parts in topics.items() for p in parts or []]
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                answer = consumer.committed(tps, timeout=max(0.1, deadline - time.monotonic()))
                committed = {(tp.topic, tp.partition): tp.offset for tp in answer}
                break
            except KafkaException as exc:
                # Right after a broker starts (or the coordinator moves) the group's coordinator answers
                # NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS: retriable, so retried until the deadline.
                error = kafka_error_of(exc)
                transient = error is not None and (error.retriable() or error.code() in _COORDINATOR_BUSY)
                if transient and time.monotonic() < deadline - 0.5:
                    time.sleep(0.2)
                    continue
                what = f"cannot read the committed offsets of group {kafka.group_id!r} from {where}"
                raise failure(what, exc) from None
        result: dict[str, list[PartitionStatus] | None] = {}
        for topic, parts in topics.items():
            if parts is None:
                result[topic] = None
                continue
            statuses: list[PartitionStatus] = []
            for partition in parts:
                try:
                    _low, high = consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=timeout_s, cached=False
                    )
                except KafkaException as exc:
                    what = f"cannot read the end offset of {topic}[{partition}] from {where}"
                    raise failure(what, exc) from None
                statuses.append(partition_status(partition, committed.get((topic, partition), -1), high))
            result[topic] = statuses
        return result
    finally:
        consumer.close()


# The coordinator is loading or moving (right after a broker start, a failover): asked again.
_COORDINATOR_BUSY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


def group_description(description: Any) -> GroupDescription:
    """A GroupDescription from confluent-kafka's ConsumerGroupDescription."""
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType

    state = description.state
    state_name = state.name.lower() if isinstance(state, ConsumerGroupState) else None
    if state == ConsumerGroupState.DEAD:  # neither members nor committed offsets: no group at all
        return GroupDescription(None, state_name, 0)
    kind = description.type
    protocol = {ConsumerGroupType.CLASSIC: "classic", ConsumerGroupType.CONSUMER: "consumer"}.get(kind)
    return GroupDescription(protocol, state_name, len(description.members))


def describe_group(settings: Settings, timeout_s: float) -> GroupDescription:
    """The broker's description of the group; a failure is reported in the result, not raised."""
    from confluent_kafka.admin import AdminClient

    from pipeline.clients.kafka import QUIET_LOGGER

    kafka = settings.kafka
    conf: dict[str, Any] = {**kafka.common_librdkafka(), "logger": QUIET_LOGGER}
    try:
        admin = AdminClient(conf)
    except KafkaException as exc:
        return GroupDescription.failed(kafka.redact(describe(exc)))
    deadline = time.monotonic() + timeout_s
    while True:
        left = max(0.5, deadline - time.monotonic())
        try:
            futures = admin.describe_consumer_groups([kafka.group_id], request_timeout=left)
            return group_description(futures[kafka.group_id].result(left))
        except KafkaException as exc:
            error = kafka_error_of(exc)
            busy = error is not None and error.code() in _COORDINATOR_BUSY
            if not busy or time.monotonic() + 0.2 >= deadline:
                return GroupDescription.failed(kafka.redact(describe(exc)))
            time.sleep(0.2)
        except Exception as exc:  # a broker without these APIs, a timeout
            return GroupDescription.failed(kafka.redact(describe(exc)))


def _stored_counts(settings: Settings, topics: list[str], timeout_s: float) -> dict[str, int]:
    """collection -> estimated document count, for the collections of these topics."""
    from pymongo.errors import OperationFailure, PyMongoError

    from pipeline.clients.mongo import make_client

    mongo = settings.mongo
    where = redact_uri(mongo.uri.get_secret_value())
    secrets = [s.get_secret_value() for s in (mongo.password, mongo.uri) if s is not None]
    timeout_ms = max(100, int(timeout_s * 1000))
    try:
        client = make_client(
            mongo, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, appname="tickpipe-status"
        )
    except PyMongoError as exc:  # e.g. an unparsable URI option
        raise PipelineError(
            f"cannot connect to MongoDB at {where}: {redact_text(describe(exc), secrets)}"
        ) from None
    router = settings.collection_router()
    try:
        try:
            client.admin.command("ping", maxTimeMS=timeout_ms)  # reach (and authenticate) within the timeout
        except OperationFailure as exc:
            raise PipelineError(
                f"MongoDB at {where} refused us: {redact_text(describe(exc), secrets)}"
            ) from None
        except PyMongoError as exc:
            raise PipelineError(
                f"cannot reach MongoDB at {where}: {redact_text(describe(exc), secrets)}"
            ) from None
        counts: dict[str, int] = {}
        for topic in topics:
            name = _collection(router, topic)
            if name is not None and name not in counts:
                counts[name] = client[mongo.database][name].estimated_document_count(maxTimeMS=timeout_ms)
        return counts
    except PyMongoError as exc:
        raise PipelineError(
            f"cannot count the documents in MongoDB at {where}: {redact_text(describe(exc), secrets)}"
        ) from None
    finally:
        client.close()
