"""The writer: makes batches durable in MongoDB (and their dead letters at their destinations), several at
once.

The worker thread hands it batches and keeps consuming; writer threads take them in order, up to the write
concurrency (found by measuring, see `concurrency.py`). A batch completes only when every document in it is
durably stored or already there and every dead letter is durable; then the commit gate may count it.
Batches can complete out of order: the gate commits a partition only over an unbroken run of durable ones.

Transient failures are retried with exponential backoff and jitter until they succeed, or until the writer
is aborted (shutdown timeout, a second signal, a fatal error). Before every attempt the writer drops the work
of partitions that are no longer assigned under the batch's epoch, so a revoked partition's documents are not
written after it moved (except a write already on the wire, which is harmless: idempotent `_id`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception, stop_never, wait_random_exponential

from pipeline.clients.deadletters import DeadLetterWriter
from pipeline.clients.sink import MongoSink, TopicIdentity
from pipeline.core.batching import Batch
from pipeline.core.coordinates import TP
from pipeline.core.deadletter import DeadLetter, letter_for_document
from pipeline.core.errors import (
    Aborted,
    FatalError,
    PipelineError,
    PoisonMessageError,
    describe,
    is_transient_mongo,
)
from pipeline.core.storage import CollectionPlan
from pipeline.core.write_outcome import UNKNOWN_CODE_ATTEMPTS, id_key, resolve_duplicates, same_message
from pipeline.ingest.concurrency import ConcurrencyTuner
from pipeline.ops.config import Tolerance
from pipeline.ops.config.model import WriteConcurrency
from pipeline.ops.logs import get_logger
from pipeline.ops.metrics import Health, Metrics

log = get_logger("pipeline.ingest.writer")
# Dead letters are logged one line each, up to this many per batch (a flood of bad input must not flood logs).
LOGGED_LETTERS_PER_BATCH = 10
# Logged when the write concurrency tuner keeps a new limit (the bench reads its worker's log for it).
CONCURRENCY_KEPT = "write concurrency changed"
T = TypeVar("T")


@dataclass(slots=True)
class Completion:
    batch: Batch
    # errors.tolerance none and MongoDB refused documents: per partition, durable only below this offset.
    until: dict[TP, int] | None = None
    stored: dict[str, int] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    dead_lettered: dict[tuple[str, str], int] = field(default_factory=dict)
    latest_updates: int = 0
    seconds: float = 0.0
    dropped: bool = False  # abandoned (abort): nothing of it may be committed
    error: PipelineError | None = None


def _count(counter: dict[Any, int], key: Any, n: int = 1) -> None:
    counter[key] = counter.get(key, 0) + n


class WritePool:
    def __init__(
        self,
        sink: MongoSink,
        dead_letters: DeadLetterWriter,
        *,
        plan_for: Callable[[str], CollectionPlan],
        owns: Callable[[TP, int], bool],
        tolerance: Tolerance,
        initial_backoff_s: float,
        max_backoff_s: float,
        max_in_flight: int,
        concurrency: WriteConcurrency,
        metrics: Metrics,
        health: Health,
        verify_sources: bool = True,
    ) -> None:
        self.sink = sink
        self.dead_letters = dead_letters
        self.plan_for = plan_for
        self.owns = owns
        self.tolerance = tolerance
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.metrics = metrics
        self.health = health
        self.verify_sources = verify_sources
        # topic -> its identity, filled by the worker when partitions are assigned (before their messages).
        self.identities: dict[str, TopicIdentity] = {}
        self._verified: set[tuple[str, str, TopicIdentity]] = set()
        threads = max_in_flight if concurrency == "auto" else concurrency
        self.tuner = ConcurrencyTuner(max_limit=threads) if concurrency == "auto" else None
        self.limit = 1 if concurrency == "auto" else threads
        self._queue: deque[tuple[Batch, int]] = deque()
        self._completed: deque[Completion] = deque()
        self._cond = threading.Condition()
        self._active = 0
        self._generation = 0
        self._submitted = 0
        self._finished = 0
        self._stopping = False
        self._threads = [
            threading.Thread(target=self._run, name=f"mongo-writer-{i}", daemon=True) for i in range(threads)
        ]

    # ---- worker-thread API ---------------------------------------------------------------------------
    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, batch: Batch) -> None:
        with self._cond:
            self._submitted += 1
            self._queue.append((batch, self._generation))
            self._cond.notify_all()

    @property
    def in_flight(self) -> int:
        """Batches submitted and not yet finished (written, dropped or failed)."""
        with self._cond:
            return self._submitted - self._finished

    def take_completed(self) -> list[Completion]:
        done = []
        while self._completed:
            done.append(self._completed.popleft())
        return done

    def wait_for_completion(self, timeout_s: float) -> bool:
        """Wait until a completion is ready to take (or nothing is in flight). False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: bool(self._completed) or self._finished == self._submitted,
                timeout=max(0.0, timeout_s),
            )

    def wait_idle(self, timeout_s: float) -> bool:
        """Wait until every submitted batch has finished. False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._finished == self._submitted, timeout=max(0.0, timeout_s))

    def abort(self) -> None:
        """Abandon every batch submitted so far: queued ones are dropped, retrying ones stop before their next
        attempt. A write already on the wire cannot be recalled; if it lands it is harmless (idempotent `_id`)
        and its offsets are not committed: its batch completes as dropped."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def stop(self, timeout_s: float) -> None:
        with self._cond:
            self._stopping = True
            self._generation += 1
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))

    # ---- writer threads ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or (self._queue and self._active < self.limit))
                if self._stopping and not self._queue:
                    return
                batch, generation = self._queue.popleft()
                self._active += 1
            started = time.monotonic()
            try:
                self._check(generation)
                completion = self._process(batch, generation)
            except Aborted:
                completion = Completion(batch, dropped=True)
            except PipelineError as exc:
                completion = Completion(batch, error=exc)
            except Exception as exc:
                reason = self.sink.redact(describe(exc))
                log.error("writer failed unexpectedly", error=reason, batch=batch.seq)
                completion = Completion(batch, error=FatalError(f"writer failed: {reason}"))
            completion.seconds = time.monotonic() - started
            with self._cond:
                self._active -= 1
                self._finished += 1
                self._completed.append(completion)
                if self.tuner is not None and not completion.dropped and completion.error is None:
                    written = sum(completion.stored.values()) + sum(completion.duplicates.values())
                    kept = self.tuner.kept
                    self.limit = self.tuner.record(
                        time.monotonic(), written, saturated=bool(self._queue), started=started
                    )
                    if self.tuner.kept != kept:  # a trial's outcome, not its switches
                        measured = {str(n): round(rate) for n, rate in sorted(self.tuner.rates.items())}
                        log.info(CONCURRENCY_KEPT, concurrency=self.tuner.kept, docs_per_s_at=measured)
                self._cond.notify_all()

    def _aborted(self, generation: int) -> bool:
        return self._generation > generation

    def _check(self, generation: int) -> None:
        if self._aborted(generation):
            raise Aborted()

    def _sleep(self, generation: int, seconds: float) -> None:
        with self._cond:
            if self._cond.wait_for(lambda: self._aborted(generation), timeout=seconds):
                raise Aborted()

    def _retry(
        self, generation: int, what: str, batch: Batch, call: Callable[[], T], kafka: bool = False
    ) -> T:
        """Run `call`, retrying transient errors with exponential backoff and full jitter, forever (until it
        succeeds or the writer is aborted). Non-transient errors stop the worker. Checks for an abort before
        every attempt, not only while sleeping. `kafka`: the call writes to Kafka (the dead-letter topic)."""

        def attempt() -> T:
            self._check(generation)
            return call()

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            target = "kafka_dead_letters" if kafka else "mongo"
            self.metrics.retries.labels(target).inc()
            if target == "mongo":
                self.health.mongo_ok = False
            where = "Kafka dead-letter topic" if target != "mongo" else "MongoDB"
            log.warning(
                f"{where} unavailable while {what}; retrying, nothing committed meanwhile",
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
            result = retrying(attempt)
        except (Aborted, PipelineError):
            raise
        except Exception as exc:
            where = "Kafka" if kafka else "MongoDB"
            raise FatalError(f"{where} error while {what}: {self.sink.redact(describe(exc))}") from None
        if not kafka:
            self.health.mongo_ok = True
        return result

    def _live(self, batch: Batch) -> set[TP]:
        """The batch's partitions still assigned under the epoch it consumed them in."""
        return {tp for tp, epoch in batch.epochs.items() if self.owns(tp, epoch)}

    def _process(self, batch: Batch, generation: int) -> Completion:
        completion = Completion(batch)
        refused: list[DeadLetter] = []
        for name, documents in batch.documents.items():
            plan = self.plan_for(name)
            self._retry(generation, f"preparing {name}", batch, partial(self.sink.ensure_collection, plan))
            self._verify_sources(generation, batch, name)
            rejected: set[int] = set()
            if plan.history:
                rejected = self._write_history(plan, documents, batch, generation, completion, refused)
            if plan.latest:
                live = self._live(batch)
                accepted = [
                    doc
                    for i, doc in enumerate(documents)
                    if i not in rejected and (doc["_id"]["topic"], doc["_id"]["partition"]) in live
                ]
                if accepted:
                    completion.latest_updates += self._retry(
                        generation,
                        "updating the latest ticks",
                        batch,
                        partial(self.sink.upsert_latest, accepted),
                    )
        if refused and self.tolerance == "none":
            first = min(refused, key=lambda r: (r.topic, r.partition, r.offset))
            completion.until = {}
            for letter in refused:
                tp = letter.tp
                completion.until[tp] = min(completion.until.get(tp, letter.offset), letter.offset)
            completion.error = PoisonMessageError(
                f"MongoDB cannot store the message at {first.topic}[{first.partition}]@{first.offset}: "
                f"{first.message} (errors.tolerance=none: not committing past it)"
            )
            return completion
        self._write_letters(batch.dead_letters + refused, batch, generation, completion)
        return completion

    def _verify_sources(self, generation: int, batch: Batch, collection: str) -> None:
        """Before a topic's first write to a collection (in this process, under its current identity): make
        sure the collection does not hold ticks of another topic of the same name."""
        if not self.verify_sources:
            return
        for topic in batch.topics[collection]:
            identity = self.identities.get(topic)
            if identity is None or (collection, topic, identity) in self._verified:
                continue
            self._retry(
                generation,
                f"checking which topic {collection} holds",
                batch,
                partial(self.sink.verify_source, collection, topic, identity),
            )
            self._verified.add((collection, topic, identity))

    def _write_history(
        self,
        plan: CollectionPlan,
        documents: list[dict[str, Any]],
        batch: Batch,
        generation: int,
        completion: Completion,
        refused: list[DeadLetter],
    ) -> set[int]:
        """Insert every document (unordered), retrying what failed transiently, and classify the rest.
        Returns the indexes of the documents that can't be stored (refused, or coordinates re-used)."""
        name = plan.name
        values = batch.values[name]
        rejected: set[int] = set()
        attempts: dict[int, int] = {}
        # Inserted by an earlier attempt whose write concern was not confirmed: theirs to count as stored.
        ours: set[int] = set()

        def topic_of(i: int) -> str:
            return str(documents[i]["_id"]["topic"])

        def tp_of(i: int) -> TP:
            _id = documents[i]["_id"]
            return (_id["topic"], _id["partition"])

        def reject(i: int, kind: str, reason: str) -> None:
            rejected.add(i)
            refused.append(letter_for_document(documents[i], values[i], kind, reason))

        pending = list(range(len(documents)))
        with self.sink.causal_session() if plan.deduplicate else _no_session() as session:
            while pending:

                def attempt(todo: list[int] = pending) -> tuple[list[int], dict[int, Mapping[str, Any]], Any]:
                    """One try: what is still owned, less what is stored already (time-series), inserted.
                    Returns (indexes sent, stored documents found at the others' coordinates, errors)."""
                    live = self._live(batch)
                    idx = todo if len(live) == len(batch.epochs) else [i for i in todo if tp_of(i) in live]
                    found: dict[int, Mapping[str, Any]] = {}
                    if plan.deduplicate and idx:
                        idx, found = self._drop_stored(name, documents, idx, session)
                    if not idx:
                        return idx, found, None
                    try:
                        return idx, found, self.sink.insert(name, [documents[i] for i in idx], session)
                    except Exception as exc:
                        inserted = getattr(exc, "inserted", None)
                        if inserted is not None:
                            ours.update(idx[j] for j in inserted)
                        raise

                subset_indexes, already, errors = self._retry(
                    generation, f"writing to {name}", batch, attempt
                )
                for i, stored_doc in already.items():
                    if same_message(stored_doc, documents[i]):
                        _count(completion.stored if i in ours else completion.duplicates, topic_of(i))
                    else:
                        reject(i, "coordinates_reused", _REUSED)
                if errors is None:
                    if len(subset_indexes) == len(documents):  # everything, at the first attempt
                        for topic, n in batch.topics[name].items():
                            _count(completion.stored, topic, n)
                    else:
                        for i in subset_indexes:
                            _count(completion.stored, topic_of(i))
                    break
                for j in errors.inserted:
                    _count(completion.stored, topic_of(subset_indexes[j]))
                for j in errors.duplicates:
                    i = subset_indexes[j]
                    _count(completion.stored if i in ours else completion.duplicates, topic_of(i))
                if errors.to_read_back:
                    candidates = [subset_indexes[j] for j in errors.to_read_back]
                    stored = self._retry(
                        generation,
                        f"reading back duplicate keys in {name}",
                        batch,
                        partial(self.sink.read_back, name, [documents[i]["_id"] for i in candidates]),
                    )
                    resolution = resolve_duplicates(candidates, documents, stored)
                    for i in resolution.duplicates:
                        _count(completion.stored if i in ours else completion.duplicates, topic_of(i))
                    for i in resolution.reused:
                        reject(i, "coordinates_reused", _REUSED)
                    for i in resolution.refused:
                        reject(i, "mongo_rejected", "MongoDB error 11000: duplicate key on a unique index")
                for j, code, message in errors.refused:
                    reject(subset_indexes[j], "mongo_rejected", f"MongoDB error {code}: {message}")
                pending = [subset_indexes[j] for j in errors.retry]
                for j, code, message in errors.unknown:
                    i = subset_indexes[j]
                    attempts[i] = attempts.get(i, 0) + 1
                    if attempts[i] >= UNKNOWN_CODE_ATTEMPTS:
                        reject(
                            i,
                            "mongo_rejected",
                            f"MongoDB error {code} (after {attempts[i]} attempts): {message}",
                        )
                    else:
                        pending.append(i)
                if pending:
                    self.metrics.retries.labels("mongo").inc()
                    self._sleep(generation, self.initial_backoff_s)
        return rejected

    def _drop_stored(
        self, name: str, documents: list[dict[str, Any]], indexes: list[int], session: Any
    ) -> tuple[list[int], dict[int, Mapping[str, Any]]]:
        """Collections without a unique _id: split `indexes` into those not stored yet and those stored (with
        the stored document), read in the writes' causal session so that it sees what an earlier attempt of
        this batch wrote."""
        stored = self.sink.stored_coordinates(name, [documents[i] for i in indexes], session)
        fresh: list[int] = []
        found: dict[int, Mapping[str, Any]] = {}
        for i in indexes:
            doc = stored.get(id_key(documents[i]["_id"]))
            if doc is None:
                fresh.append(i)
            else:
                found[i] = doc
        return fresh, found

    def _write_letters(
        self, letters: list[DeadLetter], batch: Batch, generation: int, completion: Completion
    ) -> None:
        live = self._live(batch)
        letters = [letter for letter in letters if letter.tp in live]
        if not letters:
            return
        self._retry(
            generation,
            "producing dead letters",
            batch,
            lambda: self.dead_letters.produce(letters),
            kafka=True,
        )
        self._retry(generation, "writing dead letters", batch, lambda: self.dead_letters.insert(letters))
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


_REUSED = (
    "a different message is stored at these coordinates (the topic was re-created, or this is another "
    "cluster): not stored, so that it is not taken for a re-delivery"
)


class _no_session:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
