"""`pipeline offsets show|reset`: the consumer group's committed offsets (see pipeline/ops/offsets)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from pipeline.cli.common import add_config_option, add_timeout_option, non_negative_int, settings_from

if TYPE_CHECKING:
    from pipeline.ops.offsets.group import GroupInfo, GroupOffsets
    from pipeline.ops.offsets.plan import PartitionOffsets, PartitionPlan

TIME_HELP = "ISO-8601 (naive = UTC), now, or relative to now (-15m, -1h, -2d)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "offsets",
        help="the consumer group's committed offsets: show them, reset them (re-read or skip messages)",
        description="The committed offsets of kafka.group_id per topic and partition. `reset` moves them "
        "(only while the group has no active member: stop the workers first); re-read messages are "
        "recognised by their _id and counted as duplicates, never stored twice. Read with an admin "
        "client: never joins the group. Bad input exits 2, Kafka unreachable 1, an active group 1.",
    )
    action = parser.add_subparsers(dest="action", metavar="ACTION")
    action.required = True

    show = action.add_parser(
        "show",
        help="committed offset, first and end offset, lag per partition; the group's state and members",
        description="Per partition: the group's committed offset (the next it reads), the first retained "
        "offset, the end offset and the lag; and whether the group has active members.",
    )
    _common(show)
    show.set_defaults(func=offsets_show)

    reset = action.add_parser(
        "reset",
        help="move the committed offsets to earliest, latest, a time or an offset (group must be idle)",
        description="Reset the committed offsets of the chosen partitions (default: every partition of "
        "the configured topics). Refused in one line while the group has active members. --dry-run prints "
        "the plan (current -> new offset and what the next run re-reads or skips) and changes nothing.",
    )
    where = reset.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--to-earliest", dest="to", action="store_const", const="earliest", help="the first retained offset"
    )
    where.add_argument(
        "--to-latest", dest="to", action="store_const", const="latest", help="the end: skip everything before"
    )
    where.add_argument(
        "--to-time", metavar="TIME", help="the first offset with a timestamp at or after TIME; " + TIME_HELP
    )
    where.add_argument(
        "--to-offset",
        type=non_negative_int,
        metavar="N",
        help="this offset (within each partition's retained range)",
    )
    reset.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    _common(reset)
    reset.set_defaults(func=offsets_reset)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--topic",
        dest="topics",
        action="append",
        default=[],
        metavar="TOPIC[:P,P...]",
        help="a topic, or some of its partitions (repeatable; default: the configured kafka.topics)",
    )
    parser.add_argument("--format", choices=("table", "json", "csv"), default="table", help="default: table")
    add_timeout_option(parser, 10.0, "Kafka")
    add_config_option(parser)


def _group(args: argparse.Namespace) -> tuple[GroupOffsets, list[tuple[str, int]]]:
    from pipeline.ops.offsets.group import GroupOffsets
    from pipeline.ops.offsets.plan import parse_selection

    selections = [parse_selection(text) for text in args.topics]  # PlanError (exit 2) before any I/O
    settings = settings_from(args, logging=False)
    group = GroupOffsets(settings.kafka, args.timeout)
    return group, group.select(selections)


def _members(info: GroupInfo) -> str:
    if not info.members:
        return f"group {info.group!r}: {info.state}, no active member"
    shown = ", ".join(info.members[:5]) + (", ..." if len(info.members) > 5 else "")
    return f"group {info.group!r}: {info.state}, {len(info.members)} active member(s): {shown}"


def offsets_show(args: argparse.Namespace) -> int:
    from zoneinfo import ZoneInfo

    from pipeline.cli.reading import Column, emit

    group, tps = _group(args)
    info = group.info()
    rows: list[dict[str, Any]] = []
    for p in group.partitions(tps):
        rows.append(_offsets_row(p))
    columns = [
        Column("topic", "topic"),
        Column("partition", "partition", "int"),
        Column("committed", "committed", "int"),
        Column("earliest", "first offset", "int"),
        Column("latest", "end offset", "int"),
        Column("lag", "lag", "int"),
    ]
    emit(rows, columns, args.format, ZoneInfo("UTC"), f"committed offsets of {_members(info)}")
    return 0


def _offsets_row(p: PartitionOffsets) -> dict[str, Any]:
    return {
        "topic": p.topic,
        "partition": p.partition,
        "committed": p.committed,
        "earliest": p.earliest,
        "latest": p.latest,
        "lag": p.lag,
    }


def offsets_reset(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from pipeline.core.timefmt import EPOCH
    from pipeline.ops.offsets.group import GroupActive
    from pipeline.ops.offsets.plan import Target, plan_reset
    from pipeline.read.query import parse_time

    if args.to_time is not None:
        target = Target("time", time=parse_time(args.to_time))
    elif args.to_offset is not None:
        target = Target("offset", offset=args.to_offset)
    else:
        target = Target(args.to)
    group, tps = _group(args)
    info = group.info()
    if info.active and not args.dry_run:
        raise GroupActive(
            f"not resetting: {_members(info)}; stop its workers first (they commit their own offsets), then "
            "run the reset again (nothing was changed)"
        )
    partitions = group.partitions(tps)
    by_time = None
    if target.time is not None:
        by_time = group.offsets_for_time(tps, (target.time - EPOCH) // timedelta(milliseconds=1))
    plans = plan_reset(partitions, target, by_time)
    changes = {(p.topic, p.partition): p.new for p in plans}
    if not args.dry_run:
        group.alter(changes)
    _print_plan(args, plans, target.describe(), info, applied=not args.dry_run)
    return 0


def _print_plan(
    args: argparse.Namespace, plans: list[PartitionPlan], target: str, info: GroupInfo, applied: bool
) -> None:
    from zoneinfo import ZoneInfo

    from pipeline.cli.reading import Column, emit

    rows = [
        {
            "topic": p.topic,
            "partition": p.partition,
            "current": p.current,
            "new": p.new,
            "change": p.change,
            "earliest": p.earliest,
            "latest": p.latest,
        }
        for p in plans
    ]
    columns = [
        Column("topic", "topic"),
        Column("partition", "partition", "int"),
        Column("current", "current", "int"),
        Column("new", "new", "int"),
        Column("change", "next run"),
        Column("earliest", "first offset", "int"),
        Column("latest", "end offset", "int"),
    ]
    verb = "reset" if applied else "dry run, nothing changed: would reset"
    title = f"{verb} group {info.group!r} to {target}"
    emit(rows, columns, args.format, ZoneInfo("UTC"), title)
    stream = sys.stdout if args.format == "table" else sys.stderr
    if applied:
        print(f"committed {len(plans)} offset(s) for group {info.group!r}", file=stream)
    elif info.active:
        print(f"note: {_members(info)}: the reset itself would be refused until they stop", file=stream)
