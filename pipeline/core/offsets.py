"""Offset bookkeeping (pure): which offsets may be committed, and never for a partition we no longer own.

Every assignment of a partition gets a fresh epoch. A batch remembers the epoch under which its messages were
consumed; when it becomes durable its offsets are only eligible for commit if the partition is still owned
under that same epoch. So work that finishes after a revoke (or after the partition came back) is never
committed by mistake.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

TP = tuple[str, int]


class OffsetTracker:
    def __init__(self) -> None:
        self._epochs: dict[TP, int] = {}
        self._next_epoch = 1
        self._pending: dict[TP, int] = {}
        self.committed: dict[TP, int] = {}

    def assign(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._epochs[tp] = self._next_epoch
            self._next_epoch += 1
            self._pending.pop(tp, None)
            self.committed.pop(tp, None)

    def revoke(self, tps: Iterable[TP]) -> None:
        for tp in tps:
            self._epochs.pop(tp, None)
            self._pending.pop(tp, None)
            self.committed.pop(tp, None)

    def epoch(self, tp: TP) -> int | None:
        return self._epochs.get(tp)

    def owns(self, tp: TP, epoch: int) -> bool:
        return self._epochs.get(tp) == epoch

    @property
    def assigned(self) -> list[TP]:
        return list(self._epochs)

    def record_durable(self, next_offsets: Mapping[TP, int], epochs: Mapping[TP, int]) -> list[TP]:
        """Mark offsets as committable. Returns partitions ignored because ownership changed meanwhile."""
        stale = []
        for tp, offset in next_offsets.items():
            if self.owns(tp, epochs[tp]):
                if offset > self._pending.get(tp, -1):
                    self._pending[tp] = offset
            else:
                stale.append(tp)
        return stale

    def has_pending(self) -> bool:
        return bool(self._pending)

    def take_pending(self) -> dict[TP, int]:
        pending, self._pending = self._pending, {}
        return pending

    def restore(self, offsets: Mapping[TP, int]) -> None:
        """Put back offsets whose commit failed transiently (only for partitions still owned)."""
        for tp, offset in offsets.items():
            if tp in self._epochs and offset > self._pending.get(tp, -1):
                self._pending[tp] = offset

    def mark_committed(self, offsets: Mapping[TP, int]) -> None:
        for tp, offset in offsets.items():
            if tp in self._epochs:
                self.committed[tp] = offset
