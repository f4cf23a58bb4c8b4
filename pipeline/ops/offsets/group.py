"""The Kafka side of `pipeline offsets`: one AdminClient, never a group member (no rebalance is caused).

Each call waits at most `timeout_s` and fails with one line naming the broker (PipelineError, exit 1); a
refusal (credentials, ACLs) is reported as such (`RefusalWatch`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import ConsumerGroupState, ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec as _OffsetSpec  # type: ignore[attr-defined]

from pipeline.clients.admin import admin_client
from pipeline.clients.source import RefusalWatch, wait_for_metadata
from pipeline.core.errors import PipelineError, describe, kafka_error_of
from pipeline.core.naming import is_topic_pattern
from pipeline.ops.config import KafkaConfig
from pipeline.ops.offsets.plan import PartitionOffsets, PlanError, TopicSelection

TP = tuple[str, int]
OffsetSpec: Any = _OffsetSpec  # (partly typed: its constructors are not)


class GroupActive(PipelineError):
    """The group has members: its offsets are theirs to commit (a reset would be overwritten, or refused)."""


@dataclass(frozen=True)
class GroupInfo:
    group: str
    state: str  # stable, empty, dead (never used or expired), preparing_rebalancing, ...
    members: list[str]  # "client-id@host" of each active member

    @property
    def active(self) -> bool:
        return bool(self.members) or self.state not in ("empty", "dead", "unknown")


class GroupOffsets:
    def __init__(self, kafka: KafkaConfig, timeout_s: float) -> None:
        self.kafka = kafka
        self.group = kafka.group_id
        self.timeout_s = timeout_s
        self.redact: Callable[[str], str] = kafka.redact
        self.watch = RefusalWatch(
            kafka, self.redact, needs="Describe on the topics and Describe/Read on the group"
        )
        self.admin = admin_client(kafka, self.watch)
        self.where = f"Kafka at {kafka.bootstrap_servers}"
        self._metadata: Any = None

    def _fail(self, what: str, exc: BaseException) -> PipelineError:
        self.watch.raise_if_refused()
        return PipelineError(f"cannot {what} from {self.where}: {self.redact(describe(exc))}")

    def _result(self, future: Any, what: str) -> Any:
        try:
            return future.result(timeout=self.timeout_s + 1)
        except KafkaException as exc:
            raise self._fail(what, exc) from None
        except Exception as exc:  # concurrent.futures.TimeoutError
            raise PipelineError(
                f"cannot {what} from {self.where} within {self.timeout_s:g}s: {describe(exc)}"
            ) from None

    def metadata(self) -> Any:
        if self._metadata is None:
            self._metadata = wait_for_metadata(self.admin, self.watch, self.timeout_s)
        return self._metadata

    def info(self) -> GroupInfo:
        futures = self.admin.describe_consumer_groups([self.group], request_timeout=self.timeout_s)
        description = self._result(futures[self.group], f"describe consumer group {self.group!r}")
        state = (
            description.state.name.lower() if isinstance(description.state, ConsumerGroupState) else "unknown"
        )
        members = [f"{m.client_id}@{m.host}" for m in description.members or []]
        return GroupInfo(self.group, state, members)

    def select(self, selections: list[TopicSelection]) -> list[TP]:
        """The partitions chosen: every partition of each selected topic (or only the listed ones), which
        must exist; no selection: the configured topics (patterns: the existing topics they match)."""
        import re

        topics = self.metadata().topics
        if not selections:
            chosen: list[TopicSelection] = []
            for configured in self.kafka.topics:
                if is_topic_pattern(configured):
                    pattern = re.compile(configured)
                    chosen += [TopicSelection(t) for t in sorted(topics) if pattern.search(t)]
                else:
                    chosen.append(TopicSelection(configured))
            selections = chosen
        out: list[TP] = []
        for selection in selections:
            meta = topics.get(selection.topic)
            if meta is None or meta.error is not None:
                raise PlanError(f"topic {selection.topic!r} does not exist on {self.kafka.bootstrap_servers}")
            existing = sorted(meta.partitions)
            wanted = list(selection.partitions) or existing
            missing = [p for p in wanted if p not in existing]
            if missing:
                raise PlanError(
                    f"topic {selection.topic!r} has no partition {missing[0]} (it has {len(existing)}: "
                    f"0..{len(existing) - 1})"
                )
            out += [(selection.topic, p) for p in wanted]
        return list(dict.fromkeys(out))

    def committed(self, tps: list[TP]) -> dict[TP, int | None]:
        request = [ConsumerGroupTopicPartitions(self.group, [TopicPartition(t, p) for t, p in tps])]
        futures = self.admin.list_consumer_group_offsets(request, request_timeout=self.timeout_s)
        result = self._result(futures[self.group], f"read the committed offsets of group {self.group!r}")
        return {
            (tp.topic, tp.partition): (tp.offset if tp.offset >= 0 else None)
            for tp in result.topic_partitions
        }

    def _list_offsets(self, specs: dict[TP, Any], what: str) -> dict[TP, int]:
        if not specs:
            return {}
        futures = self.admin.list_offsets(
            {TopicPartition(t, p): spec for (t, p), spec in specs.items()}, request_timeout=self.timeout_s
        )
        return {(tp.topic, tp.partition): int(self._result(f, what).offset) for tp, f in futures.items()}

    def partitions(self, tps: list[TP]) -> list[PartitionOffsets]:
        committed = self.committed(tps)
        earliest = self._list_offsets({tp: OffsetSpec.earliest() for tp in tps}, "read the first offsets")
        latest = self._list_offsets({tp: OffsetSpec.latest() for tp in tps}, "read the end offsets")
        return [
            PartitionOffsets(t, p, committed.get((t, p)), earliest[(t, p)], latest[(t, p)]) for t, p in tps
        ]

    def offsets_for_time(self, tps: list[TP], epoch_ms: int) -> dict[TP, int | None]:
        found = self._list_offsets(
            {tp: OffsetSpec.for_timestamp(epoch_ms) for tp in tps}, "look up the offsets by time"
        )
        return {tp: (offset if offset >= 0 else None) for tp, offset in found.items()}

    def alter(self, offsets: dict[TP, int]) -> None:
        """Commit these offsets for the group. The broker refuses while the group has members."""
        request = [
            ConsumerGroupTopicPartitions(
                self.group, [TopicPartition(t, p, o) for (t, p), o in offsets.items()]
            )
        ]
        futures = self.admin.alter_consumer_group_offsets(request, request_timeout=self.timeout_s)
        try:
            result = futures[self.group].result(timeout=self.timeout_s + 1)
        except KafkaException as exc:
            error = kafka_error_of(exc)
            if error is not None and error.code() in (error.UNKNOWN_MEMBER_ID, error.REBALANCE_IN_PROGRESS):
                raise GroupActive(
                    f"consumer group {self.group!r} got active members meanwhile: stop its workers first "
                    "(the broker refused the reset; nothing was changed)"
                ) from None
            raise self._fail(f"reset the offsets of group {self.group!r}", exc) from None
        failed = [tp for tp in result.topic_partitions if tp.error is not None]
        if failed:
            first = failed[0]
            raise PipelineError(
                f"the broker refused the reset of {first.topic}[{first.partition}] for group {self.group!r}: "
                f"{self.redact(first.error.str())}"
            )
