"""`pipeline status`: the consumer group's protocol, state and members as the broker describes them; per topic
and partition its committed offset, the end offset and the lag, and the documents stored in MongoDB.
Read-only: it never joins the group (no rebalance)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pipeline.cli.common import add_config_option, add_timeout_option, settings_from

if TYPE_CHECKING:
    from pipeline.read.status import GroupDescription, GroupStatus, PartitionStatus

# Table width when stdout is not a terminal (pipes, files): wide enough that nothing is cut.
PIPE_WIDTH = 160


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "status",
        help="group protocol, committed offsets, end offsets, lag and stored documents of the consumer group",
        description="For the configured consumer group: its group protocol (classic, or consumer for "
        "KIP-848 groups), state and number of members as the broker describes them; and for its topics: per "
        "partition the committed offset, the "
        "end offset (the high watermark as reported by the broker) and the lag; per topic the number of "
        "documents in its MongoDB collection (estimated count: collection metadata, no scan). An end offset "
        "below the committed offset means the broker's end offsets are wrong: it is flagged and no lag is "
        "shown. Read-only: it does not join the group. Exit 1 with one line if Kafka or MongoDB cannot be "
        "reached.",
    )
    add_config_option(parser)
    parser.add_argument(
        "--format", choices=("table", "json"), default="table", help="output (default: table)"
    )
    add_timeout_option(parser, 10.0, "Kafka or MongoDB")
    parser.set_defaults(func=status)


def status(args: argparse.Namespace) -> int:
    import orjson

    from pipeline.read.status import collect

    settings = settings_from(args, logging=False)
    result = collect(settings, args.timeout)
    if args.format == "json":
        sys.stdout.write(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _table(result)
    return 0


def _num(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _end(partition: PartitionStatus) -> str:
    return _num(partition.end_offset) + ("" if partition.end_offset_reliable else " [yellow](< committed)[/]")


def _lag(lag: int | None, reliable: bool) -> str:
    return _num(lag) if reliable else "[yellow]?[/]"


def _group(description: GroupDescription) -> str:
    """The title's words about the group itself."""
    from rich.markup import escape

    if description.error is not None:
        return f"protocol unknown (the broker did not describe the group: {escape(description.error)})"
    if description.protocol is None:
        return "no such group on the broker (no members, nothing committed)"
    members = "member" if description.members == 1 else "members"
    return f"protocol {description.protocol}, {description.state}, {description.members} {members}"


def _protocol_note(result: GroupStatus) -> str | None:
    d = result.description
    if d.protocol is not None and d.members and d.protocol != result.configured_protocol:
        return (
            f"the group's members use the {d.protocol} protocol; this configuration's workers would use "
            f"{result.configured_protocol} (kafka.group_protocol)"
        )
    return None


def _table(result: GroupStatus) -> None:
    from rich.console import Console
    from rich.table import Table

    from pipeline.read.status import END_OFFSET_SOURCE, UNRELIABLE_END_OFFSET

    console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
    caption = (
        f"end offset: the {END_OFFSET_SOURCE}; lag = end offset - committed offset; "
        "stored documents: estimated count of the topic's collection"
    )
    if not result.end_offsets_reliable:
        caption += f"\n[yellow]?[/]: {UNRELIABLE_END_OFFSET}"
    note = _protocol_note(result)
    if note is not None:
        caption += f"\n[yellow]{note}[/]"
    table = Table(
        title=f"consumer group {result.group!r} ({_group(result.description)}) · Kafka {result.kafka} · "
        f"MongoDB {result.mongo} (database {result.database!r})",
        caption=caption,
    )
    table.add_column("topic")
    table.add_column("partition", justify="right")
    table.add_column("committed offset", justify="right")
    table.add_column("end offset (broker)", justify="right")
    table.add_column("lag", justify="right")
    table.add_column("stored documents", justify="right")
    for topic in result.topics:
        if not topic.exists:
            stored = _num(topic.stored_documents)
            table.add_row(topic.topic, "[yellow]no such topic[/]", "-", "-", "-", stored, end_section=True)
            continue
        for p in topic.partitions:
            table.add_row(
                topic.topic,
                str(p.partition),
                _num(p.committed),
                _end(p),
                _lag(p.lag, p.end_offset_reliable),
                "",
            )
        stored = _num(topic.stored_documents)
        if topic.collection and topic.collection != topic.topic:
            stored = f"{stored} ({topic.collection})"
        table.add_row(
            f"[bold]{topic.topic}[/]",
            "[bold]total[/]",
            _num(topic.committed_total),
            _num(topic.end_total),
            _lag(topic.lag_total, topic.end_offsets_reliable),
            f"[bold]{stored}[/]",
            end_section=True,
        )
    console.print(table)
