"""Planning offset resets (pipeline/ops/offsets/plan.py)."""

from __future__ import annotations

import pytest

from pipeline.ops.offsets.plan import (
    PartitionOffsets,
    PlanError,
    Target,
    TopicSelection,
    parse_selection,
    plan_reset,
)

P = [PartitionOffsets("petr4", 0, 50, 10, 100), PartitionOffsets("petr4", 1, None, 0, 40)]


def test_targets() -> None:
    assert [(p.new, p.change) for p in plan_reset(P, Target("earliest"))] == [
        (10, "re-reads 40"),
        (0, "starts at 0 (nothing committed before)"),
    ]
    assert [p.new for p in plan_reset(P, Target("latest"))] == [100, 40]
    assert plan_reset(P, Target("latest"))[0].change == "skips 50"
    by_time = {("petr4", 0): 70, ("petr4", 1): None}
    assert [p.new for p in plan_reset(P, Target("time"), by_time)] == [70, 40]  # none after the time: the end
    assert [p.new for p in plan_reset(P[:1], Target("offset", offset=50))] == [50]
    assert plan_reset(P[:1], Target("offset", offset=50))[0].change == "unchanged"


@pytest.mark.parametrize("offset", [9, 101])
def test_an_explicit_offset_outside_the_retained_range_is_refused_not_clamped(offset: int) -> None:
    with pytest.raises(PlanError, match=rf"offset {offset} is outside petr4\[0\]'s retained range 10..100"):
        plan_reset(P[:1], Target("offset", offset=offset))


def test_selection() -> None:
    assert parse_selection("petr4") == TopicSelection("petr4")
    assert parse_selection("petr4:2,0,2") == TopicSelection("petr4", (0, 2))
    for bad in ("petr4:", "petr4:a", "a/b", "petr4:-1"):
        with pytest.raises(PlanError):
            parse_selection(bad)
    assert PlanError("x").exit_code == 2
