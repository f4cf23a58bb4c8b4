"""`pipeline demo`: the whole pipeline on embedded Kafka and MongoDB test servers (see pipeline/demo.py)."""

from __future__ import annotations

import argparse

from pipeline.cli.common import csv_list, positive_float, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the whole pipeline on embedded Kafka and MongoDB test servers",
        description="Start local test servers (a Kafka broker and a MongoDB-compatible server) on free "
        "ports, create the topics, produce COUNT ticks filling one trading session of market time (the last "
        "complete B3 session, 10:00-17:00 America/Sao_Paulo), run the worker until every tick is stored and "
        "committed, print a per-symbol summary and a table of 5-minute OHLC bars, write a candlestick chart "
        "(PNG) and stop everything. Needs the `embedded` extra (and `analytics` for the chart).",
    )
    parser.add_argument(
        "--count", type=positive_int, default=6000, help="ticks to produce over the session (default 6000)"
    )
    parser.add_argument(
        "--chart",
        metavar="PNG",
        default=".data/demo-ohlc-5m.png",
        help="where to write the chart of the session (default .data/demo-ohlc-5m.png)",
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
