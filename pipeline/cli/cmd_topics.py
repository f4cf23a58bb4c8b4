"""`pipeline topics create|list`: topic administration (what the seed did with kafka-topics.sh)."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_config_option, add_timeout_option, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "topics",
        help="create or list Kafka topics",
        description="Topic administration with the Kafka AdminClient. Kafka unreachable within --timeout: "
        "one line naming the server, exit 1.",
    )
    action = parser.add_subparsers(dest="action", metavar="ACTION")
    action.required = True

    create = action.add_parser(
        "create",
        help="create topics (existing ones are reported, not changed)",
        description="Create topics with the AdminClient. A topic that already exists is reported as such "
        "and left unchanged (exit 0).",
    )
    create.add_argument("names", nargs="+", metavar="TOPIC", help="e.g. petr4 vale3")
    create.add_argument("--partitions", type=positive_int, default=3, help="partitions per topic (default 3)")
    create.add_argument("--replication", type=positive_int, default=1, help="replication factor (default 1)")
    add_timeout_option(create, 30.0, "Kafka")
    add_config_option(create)
    create.set_defaults(func=topics_create)

    listing = action.add_parser(
        "list",
        help="list topics and their partition counts",
        description="List the topics of the cluster (kafka.bootstrap_servers) with their partition counts, "
        "internal topics only with --all.",
    )
    listing.add_argument("--all", action="store_true", help="include internal topics (__consumer_offsets...)")
    add_timeout_option(listing, 10.0, "Kafka")
    add_config_option(listing)
    listing.set_defaults(func=topics_list)


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def topics_create(args: argparse.Namespace) -> int:
    import time

    from pipeline.cli.common import settings_from, topic_names
    from pipeline.clients.admin import create_topics, list_topics

    names = topic_names(args.names)
    settings = settings_from(args, logging=False)
    # Reach the cluster first (bounded by --timeout, one line naming it): the creation itself would only
    # time out without a reason.
    started = time.monotonic()
    list_topics(settings.kafka, args.timeout)
    remaining = max(1.0, args.timeout - (time.monotonic() - started))
    result = create_topics(settings.kafka, names, args.partitions, args.replication, remaining)
    for name in names:
        state = result[name]
        detail = f"{plural(args.partitions, 'partition')}, replication {args.replication}"
        print(f"{state:8} {name}" + (f" ({detail})" if state == "created" else " (unchanged)"))
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
