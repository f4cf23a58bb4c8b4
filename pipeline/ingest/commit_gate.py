"""The commit rule, in one place (pure: no I/O; the worker passes in what it observed and the clock).

**A partition's offset is committed only when every message before it is durably accounted for**: stored,
dead-lettered or deliberately filtered out, under the assignment that consumed it. Everything here serves
that sentence:

- Each assignment of a partition gets a fresh *epoch*. Work consumed under an older epoch (the partition was
  revoked or lost meanwhile, even if it came back) never counts again, so it is never committed.
- A batch handed to the writer leaves one *segment* per partition, `[first, last]` of what it consumed
  there. Batches may become durable in any order (several writes are in flight); a partition's commit
  point only moves over the unbroken run of durable segments at its front, so a later batch that becomes
  durable first waits for the earlier ones.
- A batch that fails for good blocks its partitions at its first offset; a message that can never be stored
  with `errors.tolerance: none` blocks its partition at its offset. Nothing past a block is ever committed;
  the first error wins and later ones cannot move a block forward.
- Kafka gives some offsets no message (transaction markers, compacted or aborted records). When everything a
  partition has delivered is durable and nothing of it is pending, its commit point is the consumer's
  *position* (the next offset it would deliver), as Kafka's own consumers commit; so an idle group's lag is
  0 on transactional topics. Never while something of that partition is open, in flight or blocked.

The writer thread asks `owns(tp, epoch)` before each write attempt, so work for a partition that was revoked
is dropped rather than written after the partition moved (the only exception is a write already on the wire).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from pipeline.core.coordinates import TP

# A Kafka position that is not an offset (librdkafka's RD_KAFKA_OFFSET_INVALID and the logical offsets).
_NO_POSITION = -1


@dataclass(slots=True)
class _Segment:
    seq: int
    first: int
    last: int
    # None: not durable yet. Otherwise the offset after the durable part (last + 1 when all of it is).
    durable_until: int | None = None


@dataclass(slots=True)
class _Partition:
    epoch: int
    segments: deque[_Segment] = field(default_factory=deque)
    # Everything below this offset is durable (None: nothing has been made durable under this epoch).
    durable_until: int | None = None
    committed: int | None = None
    # Nothing at or past this offset may be committed (a failed batch or a message that stops the worker).
    blocked_at: int | None = None


class CommitGate:
    def __init__(self) -> None:
        self._parts: dict[TP, _Partition] = {}
        self._next_epoch = 1
        # Guards ownership only: the writer threads read it, the worker thread changes it.
        self._lock = threading.Lock()

    # ---- ownership ---------------------------------------------------------------------------------
    def assign(self, tps: Iterable[TP]) -> None:
        with self._lock:
            for tp in tps:
                self._parts[tp] = _Partition(self._next_epoch)
                self._next_epoch += 1

    def revoke(self, tps: Iterable[TP]) -> None:
        """The partitions are no longer ours: forget them; their in-flight work will never count."""
        with self._lock:
            for tp in tps:
                self._parts.pop(tp, None)

    def epoch(self, tp: TP) -> int | None:
        part = self._parts.get(tp)
        return part.epoch if part is not None else None

    def owns(self, tp: TP, epoch: int) -> bool:
        """Thread-safe: is `tp` still assigned under `epoch`?"""
        with self._lock:
            part = self._parts.get(tp)
            return part is not None and part.epoch == epoch

    @property
    def assigned(self) -> list[TP]:
        return list(self._parts)

    # ---- batches -------------------------------------------------------------------------------------
    def track(self, seq: int, spans: Mapping[TP, tuple[int, int]], epochs: Mapping[TP, int]) -> None:
        """A batch was handed to the writer: what it consumed of each partition, `(first, last)` offsets.
        Batches are tracked in the order they were consumed."""
        for tp, (first, last) in spans.items():
            part = self._owned(tp, epochs[tp])
            if part is not None:
                part.segments.append(_Segment(seq, first, last))

    def durable(self, seq: int, epochs: Mapping[TP, int], until: Mapping[TP, int] | None = None) -> list[TP]:
        """Batch `seq` is durable. `until` limits a partition to the part below an offset (the rest can never
        be stored: that partition is blocked there). Returns partitions ignored because they moved."""
        stale = []
        for tp, epoch in epochs.items():
            part = self._owned(tp, epoch)
            segment = self._segment(part, seq)
            if part is None or segment is None:
                stale.append(tp)
                continue
            end = segment.last + 1
            if until is not None and tp in until:
                end = min(end, until[tp])
                self._block(part, until[tp])
            segment.durable_until = max(segment.first, end)
            self._advance(part)
        return stale

    def failed(self, seq: int, epochs: Mapping[TP, int]) -> None:
        """Batch `seq` will never be durable: block each of its partitions at its first offset."""
        for tp, epoch in epochs.items():
            part = self._owned(tp, epoch)
            segment = self._segment(part, seq)
            if part is not None and segment is not None:
                self._block(part, segment.first)

    def stop_at(self, tp: TP, offset: int) -> None:
        """The message at `offset` can never be stored and must not be skipped (errors.tolerance: none)."""
        part = self._parts.get(tp)
        if part is not None:
            self._block(part, offset)

    def pending(self, tps: Iterable[TP]) -> bool:
        """Is any of these partitions' work handed to the writer and not yet accounted for?"""
        return any(tp in self._parts and self._parts[tp].segments for tp in tps)

    # ---- commits -------------------------------------------------------------------------------------
    def committable(
        self, positions: Mapping[TP, int] | None = None, open_tps: Collection[TP] = ()
    ) -> dict[TP, int]:
        """For each owned partition whose commit point moved since the last commit: the offset to commit.

        `positions`: the consumer's position per partition (what it will deliver next); used only where
        everything delivered is accounted for: nothing of the partition in the open batch (`open_tps`),
        in flight or blocked.
        """
        offsets = {}
        for tp, part in self._parts.items():
            target = part.durable_until
            if positions is not None and not part.segments and part.blocked_at is None and tp not in open_tps:
                position = positions.get(tp, _NO_POSITION)
                if position >= 0 and (target is None or position > target):
                    target = position
            if part.blocked_at is not None and target is not None:
                target = min(target, part.blocked_at)
            if target is not None and (part.committed is None or target > part.committed):
                offsets[tp] = target
        return offsets

    def committed(self, offsets: Mapping[TP, int]) -> None:
        for tp, offset in offsets.items():
            part = self._parts.get(tp)
            if part is not None and (part.committed is None or offset > part.committed):
                part.committed = offset

    def committed_offset(self, tp: TP) -> int | None:
        part = self._parts.get(tp)
        return part.committed if part is not None else None

    # ---- internals -----------------------------------------------------------------------------------
    def _owned(self, tp: TP, epoch: int) -> _Partition | None:
        part = self._parts.get(tp)
        return part if part is not None and part.epoch == epoch else None

    @staticmethod
    def _segment(part: _Partition | None, seq: int) -> _Segment | None:
        if part is None:
            return None
        for segment in part.segments:
            if segment.seq == seq:
                return segment
        return None

    @staticmethod
    def _block(part: _Partition, offset: int) -> None:
        # The first block wins: a later error can only move it down, never past what is already blocked.
        if part.blocked_at is None or offset < part.blocked_at:
            part.blocked_at = offset

    @staticmethod
    def _advance(part: _Partition) -> None:
        """Move the commit point over the durable segments at the front."""
        while part.segments and part.segments[0].durable_until is not None:
            segment = part.segments.popleft()
            until = segment.durable_until
            assert until is not None
            # (A partially durable segment has blocked its partition: the block caps every later commit.)
            part.durable_until = until if part.durable_until is None else max(part.durable_until, until)


@dataclass
class CommitBackoff:
    """When to try committing again after a failure (pure: the caller passes the clock)."""

    initial_s: float
    max_s: float
    next_at: float = 0.0
    delay_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.delay_s = self.initial_s

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def succeeded(self) -> None:
        self.delay_s = self.initial_s
        self.next_at = 0.0

    def failed(self, now: float) -> float:
        """A transient failure: wait, doubling up to max_s. Returns the wait."""
        wait = self.delay_s
        self.next_at = now + wait
        self.delay_s = min(self.delay_s * 2, self.max_s)
        return wait

    def rebalancing(self, now: float) -> None:
        """Refused because partitions are moving: the revoke callback commits; retry soon, without growing."""
        self.next_at = now + self.initial_s
