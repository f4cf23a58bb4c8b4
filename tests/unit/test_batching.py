"""Unit tests for pipeline.core.batching: what a batch holds and when it is due (clock passed in)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pipeline.core.batching import Batch, BatchBuilder
from pipeline.core.deadletter import DeadLetter

P0 = ("petr4", 0)
P1 = ("petr4", 1)
V0 = ("vale3", 0)


def letter(tp: tuple[str, int], offset: int) -> DeadLetter:
    return DeadLetter(
        topic=tp[0],
        partition=tp[1],
        offset=offset,
        key=None,
        value=b"{bad",
        timestamp_ms=None,
        kind="invalid_json",
        message="value is not valid JSON",
        stage="decode",
        failed_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


def test_new_batch_is_empty() -> None:
    batch = Batch(seq=1, created=10.0)
    assert batch.size == 0
    assert batch.document_count() == 0
    assert batch.next_offsets() == {}
    assert batch.first_offsets == {}
    assert batch.epochs == {}


def test_add_document_groups_by_collection_and_keeps_values_parallel() -> None:
    batch = Batch(seq=1, created=0.0)
    d1, d2, d3 = {"n": 1}, {"n": 2}, {"n": 3}
    batch.add_document("petr4", d1, b"v1", P0, 10, epoch=1)
    batch.add_document("vale3", d2, None, V0, 5, epoch=2)
    batch.add_document("petr4", d3, b"v3", P0, 11, epoch=1)
    assert batch.documents == {"petr4": [d1, d3], "vale3": [d2]}
    assert batch.values == {"petr4": [b"v1", b"v3"], "vale3": [None]}
    assert batch.documents["petr4"][0] is d1  # kept by reference
    assert batch.document_count() == 3
    assert batch.size == 3
    assert batch.consumed == {"petr4": 2, "vale3": 1}


def test_dead_letters_and_filtered_messages_count_towards_size_but_not_documents() -> None:
    batch = Batch(seq=1, created=0.0)
    dl = letter(P0, 3)
    batch.add_dead_letter(dl, P0, 3, epoch=1)
    batch.add_filtered(P0, 4, epoch=1)
    batch.add_filtered(V0, 9, epoch=2)
    batch.add_document("petr4", {}, b"{}", P0, 5, epoch=1)
    assert batch.dead_letters == [dl]
    assert batch.filtered == {"petr4": 1, "vale3": 1}
    assert batch.document_count() == 1
    assert batch.size == 4
    assert batch.consumed == {"petr4": 3, "vale3": 1}
    assert batch.next_offsets() == {P0: 6, V0: 10}


def test_next_offsets_are_highest_offset_plus_one_per_partition() -> None:
    batch = Batch(seq=1, created=0.0)
    for offset in (100, 101, 102):
        batch.add_document("petr4", {}, None, P0, offset, epoch=1)
        batch.add_document("petr4", {}, None, P1, offset + 50, epoch=2)
    batch.add_dead_letter(letter(P0, 103), P0, 103, epoch=1)
    batch.add_filtered(P1, 153, epoch=2)
    assert batch.next_offsets() == {P0: 104, P1: 154}
    assert batch.first_offsets == {P0: 100, P1: 150}


def test_next_offsets_commit_past_a_trailing_filtered_message() -> None:
    batch = Batch(seq=1, created=0.0)
    batch.add_document("petr4", {}, None, P0, 0, epoch=1)
    batch.add_filtered(P0, 1, epoch=1)
    assert batch.next_offsets() == {P0: 2}


def test_first_offset_and_epoch_are_those_of_the_first_message_per_partition() -> None:
    batch = Batch(seq=1, created=0.0)
    batch.add_filtered(P0, 7, epoch=3)
    batch.add_document("petr4", {}, None, P0, 8, epoch=3)
    batch.add_dead_letter(letter(V0, 1), V0, 1, epoch=4)
    batch.add_document("vale3", {}, None, V0, 2, epoch=4)
    assert batch.first_offsets == {P0: 7, V0: 1}
    assert batch.epochs == {P0: 3, V0: 4}


def test_a_run_noted_after_the_letters_and_filtered_messages_inside_it_keeps_its_first_offset() -> None:
    # Converter.put books a run of documents when its partition changes, after the filtered messages and
    # dead letters that came between its documents.
    batch = Batch(seq=1, created=0.0)
    docs, values = batch.columns("petr4")
    docs.extend([{}, {}, {}])
    values.extend([None, None, None])
    batch.add_filtered(P0, 11, epoch=3)
    batch.add_dead_letter(letter(P0, 13), P0, 13, epoch=3)
    batch.note_run(P0, 3, 10, 14, 3, "petr4")
    assert batch.spans() == {P0: (10, 14)}
    assert batch.epochs == {P0: 3}
    assert batch.size == 5 and batch.consumed == {"petr4": 5}
    assert batch.topics == {"petr4": {"petr4": 3}}


# --- BatchBuilder -------------------------------------------------------------------------------------------


def test_open_returns_the_same_batch_until_taken() -> None:
    builder = BatchBuilder(max_messages=3, max_wait_s=1.0)
    assert builder.current is None
    first = builder.open(now=100.0)
    assert (first.seq, first.created) == (1, 100.0)
    assert builder.open(now=105.0) is first
    assert first.created == 100.0


def test_take_returns_none_for_no_or_empty_batch() -> None:
    builder = BatchBuilder(max_messages=3, max_wait_s=1.0)
    assert builder.take() is None
    builder.open(now=0.0)
    assert builder.take() is None
    assert builder.current is None


def test_take_hands_over_the_batch_and_the_next_one_gets_a_new_seq() -> None:
    builder = BatchBuilder(max_messages=3, max_wait_s=1.0)
    batch = builder.open(now=0.0)
    batch.add_filtered(P0, 0, epoch=1)
    assert builder.take() is batch
    assert builder.current is None
    assert builder.size == 0
    nxt = builder.open(now=2.0)
    assert nxt is not batch
    assert (nxt.seq, nxt.created, nxt.size) == (2, 2.0, 0)


def test_seq_increases_even_after_an_empty_take() -> None:
    builder = BatchBuilder(max_messages=3, max_wait_s=1.0)
    builder.open(now=0.0)
    builder.take()
    assert builder.open(now=1.0).seq == 2


def test_due_by_count() -> None:
    builder = BatchBuilder(max_messages=3, max_wait_s=60.0)
    batch = builder.open(now=0.0)
    for offset in range(2):
        batch.add_document("petr4", {}, None, P0, offset, epoch=1)
    assert not builder.due(now=0.0)
    assert not builder.full()
    assert builder.room() == 1
    batch.add_document("petr4", {}, None, P0, 2, epoch=1)
    assert builder.due(now=0.0)
    assert builder.full()
    assert builder.room() == 0
    assert builder.size == 3


def test_due_by_time_with_explicit_now() -> None:
    builder = BatchBuilder(max_messages=1000, max_wait_s=0.2)
    batch = builder.open(now=50.0)
    batch.add_filtered(P0, 0, epoch=1)
    assert not builder.due(now=50.0)
    assert not builder.due(now=50.19)
    assert builder.due(now=50.2)
    assert builder.due(now=99.0)


def test_empty_batch_is_never_due() -> None:
    builder = BatchBuilder(max_messages=1, max_wait_s=0.0)
    assert not builder.due(now=1e9)
    builder.open(now=0.0)
    assert not builder.due(now=1e9)


def test_seconds_until_due() -> None:
    builder = BatchBuilder(max_messages=10, max_wait_s=0.5)
    assert builder.seconds_until_due(now=0.0) is None
    batch = builder.open(now=10.0)
    assert builder.seconds_until_due(now=10.0) is None  # nothing to flush yet
    batch.add_filtered(P0, 0, epoch=1)
    assert builder.seconds_until_due(now=10.0) == pytest.approx(0.5)
    assert builder.seconds_until_due(now=10.3) == pytest.approx(0.2)
    assert builder.seconds_until_due(now=10.5) == 0.0
    assert builder.seconds_until_due(now=20.0) == 0.0  # never negative


def test_size_and_room_without_a_batch() -> None:
    builder = BatchBuilder(max_messages=5, max_wait_s=1.0)
    assert builder.size == 0
    assert builder.room() == 5
    assert not builder.full()
