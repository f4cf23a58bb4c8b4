"""`pipeline status`'s arithmetic without servers: lag, and end offsets that a broker reports below a
committed offset (impossible on a correct broker; the Tansu test broker does it)."""

from __future__ import annotations

import pytest

from pipeline.read.status import GroupStatus, TopicStatus, partition_status


def test_lag_is_end_minus_committed_and_absent_without_a_commit() -> None:
    p = partition_status(0, 40, 100)
    assert (p.committed, p.end_offset, p.lag, p.end_offset_reliable) == (40, 100, 60, True)
    assert partition_status(1, 100, 100).lag == 0
    none = partition_status(2, -1001, 100)  # librdkafka's OFFSET_INVALID: nothing committed
    assert (none.committed, none.lag, none.end_offset_reliable) == (None, None, True)


def test_an_end_offset_below_the_committed_offset_is_flagged_not_clamped() -> None:
    p = partition_status(0, 42_130, 32_133)
    assert (p.committed, p.end_offset, p.lag, p.end_offset_reliable) == (42_130, 32_133, None, False)


def test_totals_do_not_hide_an_unreliable_partition() -> None:
    reliable = TopicStatus("a", True, "a", 10, [partition_status(0, 5, 8), partition_status(1, -1, 4)])
    assert (reliable.lag_total, reliable.end_offsets_reliable) == (3, True)
    flagged = TopicStatus("b", True, "b", 10, [partition_status(0, 5, 8), partition_status(1, 9, 4)])
    assert (flagged.lag_total, flagged.end_offsets_reliable) == (None, False)
    data = GroupStatus("g", "k:1", "mongodb://h/", "db", [reliable, flagged]).as_dict()
    assert data["end_offsets_reliable"] is False
    assert [t["end_offsets_reliable"] for t in data["topics"]] == [True, False]
    assert data["topics"][1]["partitions"][1] == {
        "partition": 1,
        "committed": 9,
        "end_offset": 4,
        "lag": None,
        "end_offset_reliable": False,
    }


def test_the_table_flags_the_unreliable_end_offset(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import cmd_status

    flagged = TopicStatus("b", True, "b", 10, [partition_status(0, 5, 8), partition_status(1, 9, 4)])
    cmd_status._table(GroupStatus("g", "k:1", "mongodb://h/", "db", [flagged]))
    text = capsys.readouterr().out
    rows = {
        line.split("│")[2].strip(): [c.strip() for c in line.split("│")[3:6]]
        for line in text.splitlines()
        if line.count("│") >= 6 and line.split("│")[1].strip() in ("b",)
    }
    assert rows["0"] == ["5", "8", "3"]
    assert rows["1"] == ["9", "4 (< committed)", "?"]
    assert rows["total"] == ["14", "12", "?"]
    assert "?: the broker reports an end offset below the committed offset" in " ".join(text.split())


def test_the_group_description_names_the_protocol_state_and_members() -> None:
    from confluent_kafka import ConsumerGroupState, ConsumerGroupType

    from pipeline.read.status import GroupDescription, group_description

    class Description:  # the fields of confluent-kafka's ConsumerGroupDescription that are read
        def __init__(self, kind: ConsumerGroupType, state: ConsumerGroupState, members: int) -> None:
            self.type, self.state, self.members = kind, state, [object()] * members

    consumer = Description(ConsumerGroupType.CONSUMER, ConsumerGroupState.STABLE, 2)
    assert group_description(consumer) == GroupDescription("consumer", "stable", 2)
    classic = Description(ConsumerGroupType.CLASSIC, ConsumerGroupState.EMPTY, 0)
    assert group_description(classic) == GroupDescription("classic", "empty", 0)
    # A group the broker does not know (no members, no offsets) is reported dead, typed classic: no protocol.
    dead = Description(ConsumerGroupType.CLASSIC, ConsumerGroupState.DEAD, 0)
    assert group_description(dead) == GroupDescription(None, "dead", 0)
    unknown = Description(ConsumerGroupType.UNKNOWN, ConsumerGroupState.STABLE, 1)
    assert group_description(unknown) == GroupDescription(None, "stable", 1)


def test_the_table_and_json_show_the_group_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import cmd_status
    from pipeline.read.status import GroupDescription

    topic = TopicStatus("b", True, "b", 10, [partition_status(0, 5, 5)])
    result = GroupStatus("g", "k:1", "mongodb://h/", "db", [topic], GroupDescription("consumer", "stable", 2))
    result.configured_protocol = "consumer"
    data = result.as_dict()
    assert (data["group_protocol"], data["group_state"], data["group_members"]) == ("consumer", "stable", 2)
    assert data["group_protocol_configured"] == "consumer" and data["group_description_error"] is None
    cmd_status._table(result)
    text = " ".join(capsys.readouterr().out.split())
    assert "consumer group 'g' (protocol consumer, stable, 2 members)" in text
    assert "kafka.group_protocol" not in text

    result.configured_protocol = "classic"  # members use another protocol than this configuration
    cmd_status._table(result)
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "the group's members use the consumer protocol; this configuration's workers would use classic"
        in text
    )

    cmd_status._table(GroupStatus("g", "k:1", "m", "db", [topic], GroupDescription(None, "dead", 0)))
    assert "no such group on the broker" in " ".join(capsys.readouterr().out.split())
    failed = GroupDescription.failed("Broker: Group authorization failed [x]")
    cmd_status._table(GroupStatus("g", "k:1", "m", "db", [topic], failed))
    text = " ".join(capsys.readouterr().out.split())
    assert (
        "protocol unknown (the broker did not describe the group: Broker: Group authorization failed [x])"
        in text
    )
