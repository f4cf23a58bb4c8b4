"""Kafka Connect's `put`: each consumed message becomes a document, a dead letter or a filtered offset in the
open batch (the per-message hot path: no I/O, no per-message metrics).

With `errors.tolerance: none` a message that can never be stored is *poison*: it is not added, nothing after
it in its partition is added, and the caller stops the worker. Messages of other partitions in the same
consumed list are still added: they were delivered, so they must be accounted for like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pipeline.core.batching import Batch
from pipeline.core.codec import DataError, check_size, make_document
from pipeline.core.coordinates import TP
from pipeline.core.deadletter import letter_for_message
from pipeline.ingest.routing import Route, Router
from pipeline.ops.config import Tolerance

# Values at least this big are measured as BSON before they are accepted (MongoDB's 16 MiB limit).
_SIZE_CHECK_FROM = 512 * 1024


class KafkaMessage(Protocol):
    """The part of confluent_kafka.Message used here."""

    def error(self) -> Any: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(slots=True)
class Poison:
    tp: TP
    offset: int
    error: DataError


@dataclass(slots=True)
class PutResult:
    added: int = 0
    # Consume-error events (not messages), for the caller to report.
    errors: list[Any] | None = None
    # Messages that stop the worker (tolerance none), the first one first; one per partition at most.
    poison: list[Poison] | None = None


class Converter:
    def __init__(self, router: Router, epoch_of: Callable[[TP], int | None], tolerance: Tolerance) -> None:
        self.router = router
        self.epoch_of = epoch_of
        self.tolerance = tolerance

    def put(self, messages: Sequence[KafkaMessage], batch: Batch) -> PutResult:
        result = PutResult()
        size_before = batch.size
        ingested_at = datetime.now(UTC).replace(tzinfo=None)  # naive UTC: see make_document
        route_of = self.router.route
        epoch_of = self.epoch_of
        stopped: set[TP] = set()
        last_topic: str | None = None
        last_partition = -1
        tp: TP = ("", -1)
        epoch: int | None = None
        route: Route | None = None
        # The open run: documents of one partition appended to `docs`/`values`, booked once when the partition
        # changes (`Batch.note_run`: messages come in runs per partition). Filtered messages and dead letters
        # in between are booked on their own; the order of the two does not matter to the batch.
        docs: list[dict[str, Any]] = []
        values: list[bytes | None] = []
        run_first = run_last = -1
        run_count = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if result.errors is None:
                    result.errors = []
                result.errors.append(error)
                continue
            # Never None for a message without error (the stubs type them as optional).
            topic: str = message.topic()  # type: ignore[assignment]
            partition: int = message.partition()  # type: ignore[assignment]
            offset: int = message.offset()  # type: ignore[assignment]
            if partition != last_partition or topic != last_topic:
                if run_count:
                    batch.note_run(tp, epoch, run_first, run_last, run_count, route.collection)  # type: ignore[arg-type, union-attr]
                    run_count = 0
                last_topic, last_partition = topic, partition
                tp = (topic, partition)
                epoch = epoch_of(tp)
                route = route_of(topic)
            if epoch is None or route is None:  # not ours (any more): never store or commit it
                continue
            if stopped and tp in stopped:
                continue  # after a poison message: nothing past it in its partition
            value = message.value()
            try:
                try:
                    fields = route.decode(value)
                    if route.keep is not None and not route.keep(fields):
                        batch.add_filtered(tp, offset, epoch)
                        continue
                    ts_type, ts_ms = message.timestamp()
                    document = make_document(
                        fields,
                        topic,
                        partition,
                        offset,
                        ts_ms if ts_type else None,
                        message.key(),
                        ingested_at,
                    )
                    if value is not None and len(value) >= _SIZE_CHECK_FROM:
                        check_size(value, document)
                except DataError:
                    raise
                except Exception as exc:  # a filter or the document itself failed on this input
                    raise DataError("undecodable", f"{type(exc).__name__}: {str(exc)[:200]}") from None
            except DataError as exc:
                if self.tolerance == "none":
                    if result.poison is None:
                        result.poison = []
                    result.poison.append(Poison(tp, offset, exc))
                    stopped.add(tp)
                    continue
                ts_type, ts_ms = message.timestamp()
                letter = letter_for_message(
                    topic,
                    partition,
                    offset,
                    message.key(),
                    value,
                    ts_ms if ts_type else None,
                    exc.kind,
                    exc.message,
                )
                batch.add_dead_letter(letter, tp, offset, epoch)
                continue
            if not run_count:  # (a route without a collection rejects every message: never here for it)
                docs, values = batch.columns(route.collection)
                run_first = offset
            docs.append(document)
            values.append(value)
            run_last = offset
            run_count += 1
        if run_count:
            batch.note_run(tp, epoch, run_first, run_last, run_count, route.collection)  # type: ignore[arg-type, union-attr]
        result.added = batch.size - size_before
        return result
