"""Planning a reset of the group's committed offsets (pure, no I/O).

A reset moves each chosen partition's committed offset to `earliest` (its first retained offset), `latest`
(its end: nothing before it is read again), the first offset whose timestamp is at or after a time (the
end when there is none), or an explicit offset, which must lie within the partition's retained range
(never moved silently to the nearest bound). The plan says, per partition, the current and the new offset
and what the next `pipeline run` does about it: re-read messages (stored already: recognised by their `_id`
and counted as duplicates) or skip them (never stored, unless a later reset goes back).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pipeline.core.errors import PipelineError
from pipeline.core.naming import NameError_, check_topic_name

TargetKind = Literal["earliest", "latest", "time", "offset"]
_SELECTION = re.compile(r"^(?P<topic>[^:]+)(?::(?P<partitions>\d+(?:,\d+)*))?$")


class PlanError(PipelineError, ValueError):
    """Bad input to a reset: a topic or partition that is not there, an offset outside the retained range
    (one line, exit code 2)."""

    exit_code = 2


@dataclass(frozen=True)
class TopicSelection:
    topic: str
    partitions: tuple[int, ...] = ()  # empty: every partition


def parse_selection(text: str) -> TopicSelection:
    """`petr4` (every partition) or `petr4:0,2`."""
    match = _SELECTION.match(text.strip())
    if match is None:
        raise PlanError(f"{text!r} is not TOPIC or TOPIC:PARTITION[,PARTITION...] (e.g. petr4:0,2)")
    try:
        check_topic_name(match["topic"])
    except NameError_ as exc:
        raise PlanError(str(exc)) from None
    parts = tuple(sorted({int(p) for p in match["partitions"].split(",")})) if match["partitions"] else ()
    return TopicSelection(match["topic"], parts)


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    time: datetime | None = None
    offset: int | None = None

    def describe(self) -> str:
        if self.kind == "time":
            assert self.time is not None
            return f"the first offset at or after {self.time.isoformat()}"
        if self.kind == "offset":
            return f"offset {self.offset}"
        return self.kind


@dataclass(frozen=True)
class PartitionOffsets:
    """What the broker says about one partition: the group's committed offset (None: nothing committed)
    and the retained range [earliest, latest)."""

    topic: str
    partition: int
    committed: int | None
    earliest: int
    latest: int

    @property
    def lag(self) -> int | None:
        return None if self.committed is None else max(0, self.latest - self.committed)


@dataclass(frozen=True)
class PartitionPlan:
    topic: str
    partition: int
    current: int | None
    new: int
    earliest: int
    latest: int

    @property
    def change(self) -> str:
        """What the next run does: re-reads N, skips N, or nothing changes."""
        current = self.current
        if current is None:
            # Without a committed offset the group starts at kafka.auto_offset_reset; from now on, at `new`.
            return f"starts at {self.new:,} (nothing committed before)"
        if self.new == current:
            return "unchanged"
        if self.new < current:
            return f"re-reads {current - self.new:,}"
        return f"skips {self.new - current:,}"


def plan_reset(
    partitions: list[PartitionOffsets],
    target: Target,
    by_time: dict[tuple[str, int], int | None] | None = None,
) -> list[PartitionPlan]:
    """The new offset of every partition. `by_time`: for a time target, the broker's answer per partition
    (the first offset with a timestamp at or after the time; None or negative: no such message)."""
    plans = []
    for p in partitions:
        if target.kind == "earliest":
            new = p.earliest
        elif target.kind == "latest":
            new = p.latest
        elif target.kind == "time":
            found = (by_time or {}).get((p.topic, p.partition))
            new = p.latest if found is None or found < 0 else found
        else:
            assert target.offset is not None
            new = target.offset
            if not p.earliest <= new <= p.latest:
                raise PlanError(
                    f"offset {new} is outside {p.topic}[{p.partition}]'s retained range "
                    f"{p.earliest}..{p.latest} (first retained .. end): choose an offset in it, or "
                    "--to-earliest / --to-latest"
                )
        plans.append(PartitionPlan(p.topic, p.partition, p.committed, new, p.earliest, p.latest))
    return plans
