"""Unit tests for pipeline.core.offsets.OffsetTracker: commit only what is durable and still owned."""

from __future__ import annotations

from pipeline.core.offsets import OffsetTracker

A = ("petr4", 0)
B = ("petr4", 1)
C = ("vale3", 0)


def epoch_of(tracker: OffsetTracker, tp: tuple[str, int]) -> int:
    epoch = tracker.epoch(tp)
    assert epoch is not None
    return epoch


def tracker_with(*tps: tuple[str, int]) -> OffsetTracker:
    tracker = OffsetTracker()
    tracker.assign(tps)
    return tracker


def test_assign_gives_each_partition_a_new_distinct_epoch() -> None:
    tracker = tracker_with(A, B)
    ea, eb = epoch_of(tracker, A), epoch_of(tracker, B)
    assert ea is not None and eb is not None
    assert ea != eb
    assert tracker.assigned == [A, B]
    assert tracker.owns(A, ea)
    assert not tracker.owns(A, eb)
    assert tracker.epoch(C) is None


def test_reassign_gives_a_new_epoch() -> None:
    tracker = tracker_with(A)
    old = epoch_of(tracker, A)
    tracker.assign([A])
    new = epoch_of(tracker, A)
    assert new is not None and new != old
    assert not tracker.owns(A, old)


def test_record_durable_makes_offsets_pending() -> None:
    tracker = tracker_with(A, B)
    assert not tracker.has_pending()
    stale = tracker.record_durable({A: 10, B: 3}, {A: epoch_of(tracker, A), B: epoch_of(tracker, B)})
    assert stale == []
    assert tracker.has_pending()
    assert tracker.take_pending() == {A: 10, B: 3}
    assert not tracker.has_pending()
    assert tracker.take_pending() == {}


def test_pending_keeps_the_highest_offset() -> None:
    tracker = tracker_with(A)
    epochs = {A: epoch_of(tracker, A)}
    tracker.record_durable({A: 10}, epochs)
    tracker.record_durable({A: 7}, epochs)  # an older batch completing late must not move the commit back
    assert tracker.take_pending() == {A: 10}
    tracker.record_durable({A: 12}, epochs)
    assert tracker.take_pending() == {A: 12}


def test_record_durable_ignores_and_returns_stale_epochs() -> None:
    tracker = tracker_with(A, B)
    stale = tracker.record_durable({A: 5, B: 6}, {A: epoch_of(tracker, A), B: 999})
    assert stale == [B]
    assert tracker.take_pending() == {A: 5}


def test_record_durable_for_partition_never_owned_is_stale() -> None:
    tracker = tracker_with(A)
    assert tracker.record_durable({C: 5}, {C: 1}) == [C]
    assert not tracker.has_pending()


def test_revoke_drops_ownership_pending_and_committed() -> None:
    tracker = tracker_with(A, B)
    epoch_a = epoch_of(tracker, A)
    tracker.record_durable({A: 5, B: 6}, {A: epoch_a, B: epoch_of(tracker, B)})
    tracker.mark_committed({A: 4})
    tracker.revoke([A])
    assert tracker.assigned == [B]
    assert tracker.epoch(A) is None
    assert A not in tracker.committed
    assert tracker.take_pending() == {B: 6}
    # completions for the revoked partition are now stale
    assert tracker.record_durable({A: 9}, {A: epoch_a}) == [A]
    assert not tracker.has_pending()


def test_revoke_of_unknown_partition_is_harmless() -> None:
    tracker = tracker_with(A)
    tracker.revoke([C])
    assert tracker.assigned == [A]


def test_reassign_after_revoke_makes_old_epoch_completions_stale() -> None:
    tracker = tracker_with(A)
    old = epoch_of(tracker, A)
    tracker.revoke([A])
    tracker.assign([A])
    new = epoch_of(tracker, A)
    assert new != old
    assert tracker.record_durable({A: 50}, {A: old}) == [A]
    assert not tracker.has_pending()
    assert tracker.record_durable({A: 20}, {A: new}) == []
    assert tracker.take_pending() == {A: 20}


def test_assign_clears_pending_and_committed_for_that_partition() -> None:
    tracker = tracker_with(A, B)
    tracker.record_durable({A: 5, B: 5}, {A: epoch_of(tracker, A), B: epoch_of(tracker, B)})
    tracker.mark_committed({A: 3, B: 3})
    tracker.assign([A])
    assert tracker.take_pending() == {B: 5}
    assert tracker.committed == {B: 3}


def test_restore_after_failed_commit_only_for_owned_partitions() -> None:
    tracker = tracker_with(A, B)
    tracker.record_durable({A: 5, B: 6}, {A: epoch_of(tracker, A), B: epoch_of(tracker, B)})
    taken = tracker.take_pending()
    tracker.revoke([B])
    tracker.restore(taken)
    assert tracker.take_pending() == {A: 5}


def test_restore_keeps_newer_pending_offsets() -> None:
    tracker = tracker_with(A, B)
    epochs = {A: epoch_of(tracker, A), B: epoch_of(tracker, B)}
    tracker.record_durable({A: 5, B: 5}, epochs)
    taken = tracker.take_pending()
    tracker.record_durable({A: 8}, epochs)  # became durable while the commit was failing
    tracker.restore(taken)
    assert tracker.take_pending() == {A: 8, B: 5}


def test_mark_committed_only_for_owned_partitions() -> None:
    tracker = tracker_with(A)
    tracker.mark_committed({A: 10, C: 4})
    assert tracker.committed == {A: 10}
    tracker.mark_committed({A: 12})
    assert tracker.committed == {A: 12}
    assert not tracker.has_pending()
