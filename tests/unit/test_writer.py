"""Unit tests for pipeline.ingest.writer.WritePool with a scripted sink (no servers): how the writer reads
what the server replied. The same paths run against the real test servers in the integration tests; these pin
the cases a server cannot be made to produce on demand (a write-concern error after a partial insert, an
abort between two calls, a partition revoked while its batch retries).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.clients.sink import WriteConcernFailed
from pipeline.core.batching import Batch
from pipeline.core.codec import make_document
from pipeline.core.errors import PoisonMessageError, TransientError
from pipeline.core.storage import CollectionPlan
from pipeline.core.write_outcome import BulkErrors
from pipeline.ingest.writer import Completion, WritePool
from pipeline.ops.metrics import Health, Metrics

TP0 = ("petr4", 0)
TP1 = ("petr4", 1)
NOW = datetime(2026, 12, 1, 10, tzinfo=UTC)


class ScriptedSink:
    """Answers each insert with the next scripted reply: None (all inserted), BulkErrors, or an exception."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = list(replies)
        self.inserts: list[list[dict[str, Any]]] = []
        self.latest: list[list[Mapping[str, Any]]] = []
        self.on_insert: Callable[[], None] | None = None

    def redact(self, text: str) -> str:
        return text

    def ensure_collection(self, plan: CollectionPlan) -> None:
        pass

    def verify_source(self, *args: Any) -> None:
        pass

    @contextlib.contextmanager
    def causal_session(self) -> Iterator[None]:
        yield None

    def insert(
        self, name: str, documents: Sequence[dict[str, Any]], session: Any = None
    ) -> BulkErrors | None:
        self.inserts.append(list(documents))
        if self.on_insert is not None:
            self.on_insert()
        reply = self.replies.pop(0) if self.replies else None
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def read_back(self, name: str, ids: Sequence[Any]) -> dict[Any, Mapping[str, Any]]:
        return {}

    def upsert_latest(self, documents: Sequence[Mapping[str, Any]]) -> int:
        self.latest.append(list(documents))
        return len(documents)


class NoDeadLetters:
    def __init__(self) -> None:
        self.letters: list[Any] = []

    def produce(self, letters: Sequence[Any]) -> None:
        self.letters.extend(letters)

    def insert(self, letters: Sequence[Any]) -> None:
        pass


def batch_of(*spans: tuple[tuple[str, int], int, int], epoch: int = 1) -> Batch:
    batch = Batch(seq=1, created=0.0)
    for tp, first, last in spans:
        for offset in range(first, last + 1):
            doc = make_document(
                {"symbol": "PETR4", "price": 1.0, "volume": 1, "ts": NOW}, tp[0], tp[1], offset, 0, b"k", NOW
            )
            batch.add_document("petr4", doc, b"{}", tp, offset, epoch)
    return batch


def pool(
    sink: ScriptedSink,
    owns: Callable[[tuple[str, int], int], bool] = lambda tp, e: True,
    tolerance: str = "data",
    latest: bool = False,
) -> tuple[WritePool, NoDeadLetters]:
    letters = NoDeadLetters()
    writer = WritePool(
        sink,  # type: ignore[arg-type]
        letters,  # type: ignore[arg-type]
        plan_for=lambda name: CollectionPlan(name, latest=latest),
        owns=owns,
        tolerance=tolerance,  # type: ignore[arg-type]
        initial_backoff_s=0.001,
        max_backoff_s=0.002,
        max_in_flight=2,
        concurrency=1,
        metrics=Metrics(),
        health=Health(),
    )
    writer.start()
    return writer, letters


def run(writer: WritePool, batch: Batch) -> Completion:
    writer.submit(batch)
    assert writer.wait_idle(10), "the writer did not finish"
    (completion,) = writer.take_completed()
    writer.stop(2)
    return completion


def test_a_clean_insert_counts_everything_stored() -> None:
    sink = ScriptedSink([None])
    completion = run(pool(sink)[0], batch_of((TP0, 0, 9)))
    assert completion.stored == {"petr4": 10} and not completion.duplicates and completion.error is None


def test_after_a_write_concern_error_the_documents_it_inserted_count_as_stored_not_duplicates() -> None:
    # First attempt: the server inserted all 4 but could not confirm the write concern. The retry then finds
    # them all as duplicate keys: they are this batch's own documents, stored once.
    dup_all = BulkErrors(duplicates=[0, 1, 2, 3], inserted=[])
    sink = ScriptedSink([WriteConcernFailed("wtimeout", inserted=[0, 1, 2, 3]), dup_all])
    completion = run(pool(sink)[0], batch_of((TP0, 0, 3)))
    assert completion.stored == {"petr4": 4} and completion.duplicates == {}
    assert len(sink.inserts) == 2


def test_real_duplicates_stay_duplicates() -> None:
    sink = ScriptedSink([BulkErrors(duplicates=[0, 1], inserted=[2])])
    completion = run(pool(sink)[0], batch_of((TP0, 0, 2)))
    assert completion.stored == {"petr4": 1} and completion.duplicates == {"petr4": 2}


def test_transient_per_document_errors_resend_only_those_documents() -> None:
    sink = ScriptedSink([BulkErrors(retry=[1], inserted=[0, 2]), None])
    completion = run(pool(sink)[0], batch_of((TP0, 0, 2)))
    assert [d["_id"]["offset"] for d in sink.inserts[1]] == [1]
    assert completion.stored == {"petr4": 3}


def test_an_unknown_code_is_retried_a_few_times_then_dead_lettered() -> None:
    unknown = BulkErrors(unknown=[(0, 99999, "new error")], inserted=[])
    sink = ScriptedSink([unknown, unknown, unknown])
    writer, letters = pool(sink)
    completion = run(writer, batch_of((TP0, 0, 0)))
    assert len(sink.inserts) == 3
    assert completion.dead_lettered == {("petr4", "mongo_rejected"): 1}
    assert "99999" in letters.letters[0].message


def test_a_refused_document_with_tolerance_none_bounds_the_durable_part_of_its_partition() -> None:
    sink = ScriptedSink([BulkErrors(refused=[(2, 121, "validation")], inserted=[0, 1, 3, 4, 5])])
    writer, letters = pool(sink, tolerance="none")
    completion = run(writer, batch_of((TP0, 0, 3), (TP1, 0, 1)))
    assert completion.until == {TP0: 2}
    assert isinstance(completion.error, PoisonMessageError) and "petr4[0]@2" in str(completion.error)
    assert not letters.letters


def test_a_revoked_partition_is_dropped_before_the_next_attempt() -> None:
    owned = {TP0: True, TP1: True}
    sink = ScriptedSink([TransientError("primary stepped down"), None])

    def revoke_tp1_after_first_attempt() -> None:
        owned[TP1] = False

    sink.on_insert = revoke_tp1_after_first_attempt
    completion = run(pool(sink, owns=lambda tp, e: owned[tp])[0], batch_of((TP0, 0, 1), (TP1, 0, 1)))
    assert len(sink.inserts[0]) == 4
    assert [d["_id"]["partition"] for d in sink.inserts[1]] == [0, 0]  # TP1's documents left out
    assert completion.stored == {"petr4": 2}


def test_abort_is_checked_before_every_call_not_only_while_sleeping() -> None:
    """After abort(), the writer must not start its next call (here: the latest upsert after the insert)."""
    sink = ScriptedSink([None])
    writer, _ = pool(sink, latest=True)
    sink.on_insert = writer.abort
    completion = run(writer, batch_of((TP0, 0, 1)))
    assert completion.dropped
    assert sink.latest == []


def test_a_transient_failure_is_retried_until_it_succeeds() -> None:
    sink = ScriptedSink([TransientError("down"), TransientError("down"), None])
    completion = run(pool(sink)[0], batch_of((TP0, 0, 0)))
    assert completion.stored == {"petr4": 1} and len(sink.inserts) == 3


def test_batches_complete_out_of_order_with_several_writes_in_flight() -> None:
    """Two writes at once: a later batch may finish first (the commit gate handles the order)."""
    release = threading.Event()
    replies: list[Any] = []
    sink = ScriptedSink(replies)
    first_started = threading.Event()

    def slow_first() -> None:
        if not first_started.is_set():
            first_started.set()
            assert release.wait(10)

    sink.on_insert = slow_first
    writer = WritePool(
        sink,  # type: ignore[arg-type]
        NoDeadLetters(),  # type: ignore[arg-type]
        plan_for=CollectionPlan,
        owns=lambda tp, e: True,
        tolerance="data",
        initial_backoff_s=0.001,
        max_backoff_s=0.002,
        max_in_flight=2,
        concurrency=2,
        metrics=Metrics(),
        health=Health(),
    )
    writer.start()
    one, two = batch_of((TP0, 0, 0)), batch_of((TP0, 1, 1))
    two.seq = 2
    writer.submit(one)
    assert first_started.wait(10)
    writer.submit(two)
    assert writer.wait_for_completion(10)
    done = writer.take_completed()
    assert [c.batch.seq for c in done] == [2]
    release.set()
    assert writer.wait_idle(10)
    assert [c.batch.seq for c in writer.take_completed()] == [1]
    writer.stop(2)


@pytest.mark.parametrize("concurrency", [1, 3])
def test_the_fixed_concurrency_is_the_limit(concurrency: int) -> None:
    writer = WritePool(
        ScriptedSink([]),  # type: ignore[arg-type]
        NoDeadLetters(),  # type: ignore[arg-type]
        plan_for=CollectionPlan,
        owns=lambda tp, e: True,
        tolerance="data",
        initial_backoff_s=0.001,
        max_backoff_s=0.002,
        max_in_flight=4,
        concurrency=concurrency,
        metrics=Metrics(),
        health=Health(),
    )
    assert writer.limit == concurrency and writer.tuner is None
