"""`pipeline topics create|list`: topic administration (what the seed did with kafka-topics.sh)."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_config_option, fail, positive_float


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("topics", help="create or list Kafka topics")
    action = parser.add_subparsers(dest="action", metavar="ACTION")
    action.required = True

    create = action.add_parser(
        "create",
        help="create topics (existing ones are reported, not changed)",
        description="Create topics with the AdminClient. A topic that already exists is reported as such "
        "and left unchanged (exit 0).",
    )
    create.add_argument("names", nargs="+", metavar="TOPIC", help="e.g. petr4 vale3")
    create.add_argument(
        "--partitions", type=_positive_int, default=3, help="partitions per topic (default 3)"
    )
    create.add_argument("--replication", type=_positive_int, default=1, help="replication factor (default 1)")
    create.add_argument("--timeout", type=positive_float, default=30.0, metavar="SECONDS", help="default 30")
    add_config_option(create)
    create.set_defaults(func=topics_create)

    listing = action.add_parser("list", help="list topics and their partition counts")
    listing.add_argument("--all", action="store_true", help="include internal topics (__consumer_offsets...)")
    listing.add_argument("--timeout", type=positive_float, default=10.0, metavar="SECONDS", help="default 10")
    add_config_option(listing)
    listing.set_defaults(func=topics_list)


def topics_create(args: argparse.Namespace) -> int:
    from pipeline.cli.common import settings_from
    from pipeline.clients.admin import create_topics
    from pipeline.core.naming import NameError_, check_topic_name

    for name in args.names:
        try:
            check_topic_name(name)
        except NameError_ as exc:
            return fail(str(exc), 2)
    settings = settings_from(args, logging=False)
    names = list(dict.fromkeys(args.names))
    result = create_topics(settings.kafka, names, args.partitions, args.replication, args.timeout)
    for name in names:
        state = result[name]
        detail = f"{args.partitions} partitions, replication {args.replication}" if state == "created" else ""
        print(f"{state:8} {name}" + (f" ({detail})" if detail else " (unchanged)"))
    return 0


def topics_list(args: argparse.Namespace) -> int:
    from rich.table import Table

    from pipeline.cli.common import settings_from
    from pipeline.cli.reading import stdout_console
    from pipeline.clients.admin import list_topics

    settings = settings_from(args, logging=False)
    topics = list_topics(settings.kafka, args.timeout, include_internal=args.all)
    table = Table()
    table.add_column("topic", no_wrap=True)
    table.add_column("partitions", justify="right")
    for topic in topics:
        table.add_row(topic.name, str(topic.partitions))
    console = stdout_console()
    if topics:
        console.print(f"topics on {settings.kafka.bootstrap_servers}", markup=False, style="bold")
        console.print(table)
    else:
        console.print(f"no topics on {settings.kafka.bootstrap_servers}", markup=False)
    return 0
