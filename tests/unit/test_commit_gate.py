"""Unit tests for pipeline.ingest.commit_gate: the commit rule, without servers.

Each test states a situation the worker meets (out-of-order completion, failures, poison messages, revokes,
transaction markers) and checks that the only offsets offered for commit are ones below which everything is
durable under the current assignment.
"""

from __future__ import annotations

import pytest

from pipeline.ingest.commit_gate import CommitBackoff, CommitGate

A = ("petr4", 0)
B = ("petr4", 1)
C = ("vale3", 0)


def gate_with(*tps: tuple[str, int]) -> CommitGate:
    gate = CommitGate()
    gate.assign(tps)
    return gate


def epochs(gate: CommitGate, *tps: tuple[str, int]) -> dict[tuple[str, int], int]:
    out = {}
    for tp in tps:
        epoch = gate.epoch(tp)
        assert epoch is not None
        out[tp] = epoch
    return out


def test_nothing_is_committable_before_anything_is_durable() -> None:
    gate = gate_with(A)
    gate.track(1, {A: (0, 9)}, epochs(gate, A))
    assert gate.committable() == {}
    assert gate.pending([A])


def test_a_durable_batch_makes_next_offsets_committable_once() -> None:
    gate = gate_with(A, B)
    e = epochs(gate, A, B)
    gate.track(1, {A: (0, 9), B: (0, 4)}, e)
    assert gate.durable(1, e) == []
    assert gate.committable() == {A: 10, B: 5}
    gate.committed({A: 10, B: 5})
    assert gate.committable() == {}
    assert not gate.pending([A, B])


def test_a_later_batch_durable_first_waits_for_the_earlier_one() -> None:
    gate = gate_with(A, B)
    e = epochs(gate, A, B)
    gate.track(1, {A: (0, 9)}, {A: e[A]})
    gate.track(2, {A: (10, 19), B: (0, 9)}, e)
    gate.durable(2, e)
    # B had nothing in batch 1: its part of batch 2 is committable; A must wait for batch 1.
    assert gate.committable() == {B: 10}
    gate.committed({B: 10})
    gate.durable(1, {A: e[A]})
    assert gate.committable() == {A: 20}


def test_a_failed_batch_blocks_its_partitions_and_every_later_batch_of_them() -> None:
    gate = gate_with(A, B)
    e = epochs(gate, A, B)
    gate.track(1, {A: (0, 9)}, {A: e[A]})
    gate.track(2, {A: (10, 19), B: (0, 9)}, e)
    gate.track(3, {A: (20, 29)}, {A: e[A]})
    gate.durable(1, {A: e[A]})
    gate.failed(2, e)
    gate.durable(3, {A: e[A]})
    # A stops at the failed batch's first offset; B's only batch failed: nothing of B.
    assert gate.committable() == {A: 10}
    gate.committed({A: 10})
    assert gate.committable() == {}


def test_a_batch_finishing_after_a_failed_one_is_never_committed_past_the_failure() -> None:
    gate = gate_with(A)
    e = epochs(gate, A)
    gate.track(1, {A: (0, 9)}, e)
    gate.track(2, {A: (10, 19)}, e)
    gate.failed(1, e)
    gate.durable(2, e)
    assert gate.committable() == {}


def test_poison_at_write_time_commits_what_precedes_it_and_nothing_after() -> None:
    gate = gate_with(A, B)
    e = epochs(gate, A, B)
    gate.track(1, {A: (0, 9), B: (0, 9)}, e)
    gate.track(2, {A: (10, 19)}, {A: e[A]})
    # MongoDB refused A@5 (tolerance none): A is durable below 5 only; B entirely.
    gate.durable(1, e, until={A: 5})
    gate.durable(2, {A: e[A]})
    assert gate.committable() == {A: 5, B: 10}


def test_the_first_error_wins_and_a_later_one_cannot_move_the_block_forward() -> None:
    gate = gate_with(A)
    e = epochs(gate, A)
    gate.track(1, {A: (0, 9)}, e)
    gate.track(2, {A: (10, 19)}, e)
    gate.durable(1, e, until={A: 5})  # poison at 5
    gate.failed(2, e)  # a later failure at 10 must not lift the block at 5
    gate.stop_at(A, 12)
    assert gate.committable() == {A: 5}


def test_poison_at_decode_time_blocks_at_its_offset() -> None:
    gate = gate_with(A)
    e = epochs(gate, A)
    gate.track(1, {A: (0, 6)}, e)  # the open batch held 0..6; the message at 7 cannot be decoded
    gate.stop_at(A, 7)
    gate.durable(1, e)
    assert gate.committable(positions={A: 20}) == {A: 7}  # the position never lifts a block


def test_work_of_a_revoked_partition_never_counts_even_if_it_comes_back() -> None:
    gate = gate_with(A, B)
    old = epochs(gate, A, B)
    gate.track(1, {A: (0, 9), B: (0, 9)}, old)
    gate.revoke([A])
    assert not gate.owns(A, old[A])
    assert gate.owns(B, old[B])
    gate.assign([A])
    new = epochs(gate, A)
    assert new[A] != old[A]
    assert gate.durable(1, old) == [A]  # A's part is stale
    assert gate.committable() == {B: 10}
    gate.track(2, {A: (0, 4)}, new)  # re-delivered from the committed offset under the new epoch
    gate.durable(2, new)
    assert gate.committable() == {A: 5, B: 10}


def test_incremental_revoke_keeps_the_other_partitions_of_a_batch() -> None:
    """Cooperative rebalancing: A moves, B stays; a batch holding both still commits B when durable."""
    gate = gate_with(A, B)
    e = epochs(gate, A, B)
    gate.track(1, {A: (0, 9), B: (0, 9)}, e)
    gate.track(2, {B: (10, 19)}, {B: e[B]})
    gate.revoke([A])
    gate.durable(2, {B: e[B]})
    assert gate.committable() == {}  # B waits for batch 1
    assert gate.durable(1, e) == [A]
    assert gate.committable() == {B: 20}


def test_position_is_committed_past_transaction_markers_when_everything_is_durable() -> None:
    gate = gate_with(A)
    e = epochs(gate, A)
    gate.track(1, {A: (0, 99)}, e)
    # While the batch is in flight, the position (past the commit marker at 100) is not used.
    assert gate.committable(positions={A: 101}) == {}
    gate.durable(1, e)
    assert gate.committable(positions={A: 101}) == {A: 101}


def test_position_is_not_used_while_the_partition_has_open_or_in_flight_work() -> None:
    gate = gate_with(A, B)
    e = epochs(gate, A, B)
    gate.track(1, {A: (0, 9), B: (0, 9)}, e)
    gate.durable(1, e)
    gate.track(2, {B: (11, 19)}, {B: e[B]})
    positions = {A: 31, B: 21}
    # A has messages 20..30 in the open batch; B has batch 2 in flight.
    assert gate.committable(positions=positions, open_tps={A}) == {A: 10, B: 10}
    assert gate.committable(positions=positions) == {A: 31, B: 10}


def test_gaps_from_compaction_or_aborted_records_commit_the_durable_end() -> None:
    gate = gate_with(A)
    e = epochs(gate, A)
    # Compacted: offsets 0, 7, 42 survive; an aborted transaction left 43..60 undelivered.
    gate.track(1, {A: (0, 7)}, e)
    gate.track(2, {A: (42, 42)}, e)
    gate.durable(2, e)
    assert gate.committable(positions={A: 61}) == {}
    gate.durable(1, e)
    assert gate.committable() == {A: 43}
    assert gate.committable(positions={A: 61}) == {A: 61}


def test_a_position_that_is_not_an_offset_is_ignored() -> None:
    gate = gate_with(A)
    assert gate.committable(positions={A: -1001}) == {}
    assert gate.committable(positions={A: 5}) == {A: 5}


def test_a_commit_failure_changes_nothing_so_the_same_offsets_are_offered_again() -> None:
    gate = gate_with(A)
    e = epochs(gate, A)
    gate.track(1, {A: (0, 9)}, e)
    gate.durable(1, e)
    assert gate.committable() == {A: 10}
    # (the commit failed: nothing recorded)
    assert gate.committable() == {A: 10}
    gate.committed({A: 10})
    gate.committed({A: 7})  # an older commit confirmation never moves it back
    assert gate.committed_offset(A) == 10


def test_durable_for_an_unknown_partition_or_batch_is_reported_stale() -> None:
    gate = gate_with(A)
    assert gate.durable(9, {C: 1}) == [C]


def test_commit_backoff_doubles_to_the_maximum_and_resets_on_success() -> None:
    backoff = CommitBackoff(initial_s=0.1, max_s=0.35)
    assert backoff.due(0.0)
    assert backoff.failed(10.0) == pytest.approx(0.1)
    assert not backoff.due(10.05) and backoff.due(10.1)
    assert backoff.failed(10.1) == pytest.approx(0.2)
    assert backoff.failed(10.3) == pytest.approx(0.35)
    assert backoff.failed(10.65) == pytest.approx(0.35)
    backoff.succeeded()
    assert backoff.due(0.0)
    assert backoff.failed(20.0) == pytest.approx(0.1)


def test_commit_refused_by_a_rebalance_retries_soon_without_growing_the_backoff() -> None:
    backoff = CommitBackoff(initial_s=0.1, max_s=10)
    backoff.failed(0.0)
    backoff.failed(0.1)  # 0.2 next
    backoff.rebalancing(1.0)
    assert backoff.due(1.1)
    assert backoff.failed(2.0) == pytest.approx(0.4)
