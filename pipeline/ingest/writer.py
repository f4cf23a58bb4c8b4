"""The writer thread: makes batches (and their dead letters) durable in MongoDB, one batch at a time.

The consumer thread keeps consuming and decoding the next batch while this one is written (overlap). A batch
completes only when every document in it is durably stored or already there, and every dead letter is
durable; only then does the consumer thread commit its offsets. Transient failures are retried here with
exponential backoff and jitter until they succeed, or until the batch is abandoned by `abort()` (shutdown
timeout, rebalance): abandoned batches are never committed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from bson.binary import Binary
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_random_exponential

from pipeline.clients.sink import CollectionPlan, MongoSink
from pipeline.core.batching import TP, Batch
from pipeline.core.deadletter import DeadLetter, DeadLetterWriter
from pipeline.core.errors import (
    Aborted,
    FatalError,
    PipelineError,
    PoisonMessageError,
    describe,
    is_transient_mongo,
)
from pipeline.ops.logs import get_logger
from pipeline.ops.metrics import Health, Metrics

log = get_logger("pipeline.ingest.writer")
# Dead letters are logged one line each, up to this many per batch (a flood of bad input must not flood logs).
LOGGED_LETTERS_PER_BATCH = 10
T = TypeVar("T")


@dataclass(slots=True)
class Completion:
    batch: Batch
    next_offsets: dict[TP, int]
    stored: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    dead_lettered: dict[tuple[str, str], int] = field(default_factory=dict)
    latest_updates: int = 0
    seconds: float = 0.0
    dropped: bool = False
    error: PipelineError | None = None


def _count(counter: dict[Any, int], key: Any, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


class BatchWriter:
    def __init__(
        self,
        sink: MongoSink,
        dead_letters: DeadLetterWriter,
        *,
        tolerance: str,
        initial_backoff_s: float,
        max_backoff_s: float,
        metrics: Metrics,
        health: Health,
        plans: dict[str, CollectionPlan] | None = None,
    ) -> None:
        self.sink = sink
        # collection -> how to write it; filled by the consumer thread before it submits a batch for it.
        self.plans = plans if plans is not None else {}
        self.dead_letters = dead_letters
        self.tolerance = tolerance
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.metrics = metrics
        self.health = health
        self._queue: queue.Queue[tuple[Batch, int] | None] = queue.Queue()
        self._completed: deque[Completion] = deque()
        self._cond = threading.Condition()
        self._generation = 0
        self._submitted = 0
        self._finished = 0
        self._thread = threading.Thread(target=self._run, name="mongo-writer", daemon=True)

    # ---- consumer-thread API -------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, batch: Batch) -> None:
        with self._cond:
            self._submitted += 1
            generation = self._generation
        self._queue.put((batch, generation))

    @property
    def unfinished(self) -> int:
        """Batches submitted and not yet finished (written, dropped or failed)."""
        with self._cond:
            return self._submitted - self._finished

    def take_completed(self) -> list[Completion]:
        done = []
        while self._completed:
            done.append(self._completed.popleft())
        return done

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every submitted batch has finished. False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._finished == self._submitted, timeout=max(0.0, timeout_s))

    def abort(self) -> None:
        """Abandon every batch submitted so far: queued ones are dropped, a retrying one stops retrying.

        A write already on the wire cannot be recalled; if it lands, it is harmless (idempotent `_id`) and its
        offsets are still not committed, because the caller stops trusting these batches.
        """
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def stop(self, timeout_s: float) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    # ---- writer thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, generation = item
            started = time.monotonic()
            try:
                if self._aborted(generation):
                    raise Aborted()
                completion = self._process(batch, generation)
            except Aborted:
                completion = Completion(batch, {}, dropped=True)
            except PipelineError as exc:
                completion = Completion(batch, {}, error=exc)
            except Exception as exc:
                log.error(
                    "writer failed unexpectedly", error=self.sink.redact(describe(exc)), batch=batch.seq
                )
                completion = Completion(
                    batch, {}, error=FatalError(f"writer failed: {self.sink.redact(describe(exc))}")
                )
            completion.seconds = time.monotonic() - started
            self._completed.append(completion)
            with self._cond:
                self._finished += 1
                self._cond.notify_all()

    def _aborted(self, generation: int) -> bool:
        return self._generation > generation

    def _sleep(self, generation: int, seconds: float) -> None:
        with self._cond:
            if self._cond.wait_for(lambda: self._aborted(generation), timeout=seconds):
                raise Aborted()

    def _retry(self, generation: int, what: str, batch: Batch, call: Callable[[], T]) -> T:
        """Run `call`, retrying transient MongoDB errors with exponential backoff and full jitter, forever
        (until it succeeds or the batch is aborted). Non-transient errors stop the worker."""

        def before_sleep(state: RetryCallState) -> None:
            self.health.mongo_ok = False
            self.metrics.retries.labels("mongo").inc()
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            log.warning(
                f"MongoDB unavailable while {what}; retrying, nothing committed meanwhile",
                error=self.sink.redact(describe(exc)) if exc else "",
                attempt=state.attempt_number,
                retry_in_s=round(wait, 2),
                batch=batch.seq,
                holding_messages=batch.size,
            )

        retrying = Retrying(
            retry=retry_if_exception(is_transient_mongo),
            wait=wait_random_exponential(multiplier=self.initial_backoff_s, max=self.max_backoff_s),
            stop=stop_never,
            sleep=lambda seconds: self._sleep(generation, seconds),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result = retrying(call)
        except Aborted:
            raise
        except PipelineError:
            raise
        except Exception as exc:
            raise FatalError(f"MongoDB error while {what}: {self.sink.redact(describe(exc))}") from None
        self.health.mongo_ok = True
        return result

    def _process(self, batch: Batch, generation: int) -> Completion:
        completion = Completion(batch, batch.next_offsets())
        rejected: list[DeadLetter] = []
        for name, documents in batch.documents.items():
            plan = self.plans.get(name) or CollectionPlan(name)
            self._retry(generation, f"preparing {name}", batch, partial(self.sink.ensure_collection, plan))
            refused: set[int] = set()
            if plan.history:
                refused = self._write_history(plan, documents, batch, generation, completion, rejected)
            if plan.latest:
                accepted = [doc for i, doc in enumerate(documents) if i not in refused]
                completion.latest_updates += self._retry(
                    generation, "updating the latest ticks", batch, partial(self.sink.upsert_latest, accepted)
                )
        if rejected and self.tolerance == "none":
            first = min(rejected, key=lambda r: (r.topic, r.partition, r.offset))
            for letter in rejected:
                tp = (letter.topic, letter.partition)
                completion.next_offsets[tp] = min(completion.next_offsets[tp], letter.offset)
            completion.error = PoisonMessageError(
                f"MongoDB rejected the message at {first.topic}[{first.partition}]@{first.offset}: "
                f"{first.message} (errors.tolerance=none: not committing past it)"
            )
            return completion
        letters = batch.dead_letters + rejected
        if letters:
            self._retry(generation, "writing dead letters", batch, lambda: self.dead_letters.write(letters))
            for letter in letters:
                _count(completion.dead_lettered, (letter.topic, letter.kind))
            for letter in letters[:LOGGED_LETTERS_PER_BATCH]:
                log.warning(
                    "message dead-lettered",
                    topic=letter.topic,
                    partition=letter.partition,
                    offset=letter.offset,
                    kind=letter.kind,
                    reason=letter.message,
                    stage=letter.stage,
                )
            if len(letters) > LOGGED_LETTERS_PER_BATCH:
                log.warning(
                    "more messages dead-lettered in this batch", count=len(letters) - LOGGED_LETTERS_PER_BATCH
                )
        return completion

    def _write_history(
        self,
        plan: CollectionPlan,
        documents: list[dict[str, Any]],
        batch: Batch,
        generation: int,
        completion: Completion,
        rejected: list[DeadLetter],
    ) -> set[int]:
        """Insert every document (unordered); retry transient per-document failures; collect rejections.
        Returns the indexes of the documents MongoDB refused."""
        name = plan.name
        insert = self.sink.insert_deduplicated if plan.deduplicate else self.sink.insert
        per_topic: dict[str, int] = {}
        for doc in documents:
            _count(per_topic, doc["_id"]["topic"])
        refused: set[int] = set()
        pending = list(range(len(documents)))
        while pending:
            subset = documents if len(pending) == len(documents) else [documents[i] for i in pending]
            outcome = self._retry(generation, f"writing to {name}", batch, partial(insert, name, subset))
            for i in outcome.duplicates:
                topic = documents[pending[i]]["_id"]["topic"]
                _count(completion.duplicates, topic)
                per_topic[topic] -= 1
            for i, code, message in outcome.rejected:
                index = pending[i]
                letter = _letter_from_document(documents[index], batch.values[name][index], code, message)
                rejected.append(letter)
                refused.add(index)
                per_topic[letter.topic] -= 1
            pending = [pending[i] for i in outcome.retry]
            if pending:
                self.metrics.retries.labels("mongo").inc()
                self._sleep(generation, self.initial_backoff_s)
        for topic, n in per_topic.items():
            _count(completion.stored, topic, n)
        return refused


def _letter_from_document(
    document: dict[str, Any], value: bytes | None, code: int, message: str
) -> DeadLetter:
    coordinates = document["_id"]
    kafka = document.get("kafka") or {}
    key = kafka.get("key")
    key_bytes = bytes(key) if isinstance(key, Binary) else key.encode() if isinstance(key, str) else None
    stamp = kafka.get("timestamp")
    return DeadLetter(
        topic=coordinates["topic"],
        partition=coordinates["partition"],
        offset=coordinates["offset"],
        key=key_bytes,
        value=value,
        timestamp_ms=int(stamp.timestamp() * 1000) if isinstance(stamp, datetime) else None,
        kind="mongo_rejected",
        message=f"MongoDB error {code}: {message}",
        stage="write",
        failed_at=datetime.now(UTC),
    )
