"""`pipeline produce`: the ticker simulator."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from pipeline.cli.common import (
    add_config_option,
    csv_list,
    fail,
    non_negative_int,
    positive_float,
    settings_from,
)
from pipeline.core.naming import NameError_, check_topic_name
from pipeline.ops.logs import get_logger

log = get_logger("pipeline.dev.simulator")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "produce",
        help="produce simulated market ticks (random walk per symbol) to Kafka",
        description="Send COUNT ticks spread evenly over the topics, keyed by symbol (petr4 -> PETR4). "
        "Exits non-zero if any message is not acknowledged.",
    )
    add_config_option(parser)
    parser.add_argument(
        "--topics", type=csv_list, default=["petr4", "vale3"], help="comma-separated (default: petr4,vale3)"
    )
    parser.add_argument(
        "--count", type=non_negative_int, default=1000, help="total ticks; 0 = until stopped (default 1000)"
    )
    parser.add_argument(
        "--rate", type=positive_float, default=None, help="ticks per second (default: as fast as possible)"
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed for reproducible series")
    parser.add_argument(
        "--spread",
        action="store_true",
        help="spread ticks round-robin over each topic's partitions (default: partition by the symbol key)",
    )
    parser.set_defaults(func=produce)


def produce(args: argparse.Namespace) -> int:
    for topic in args.topics:
        try:
            check_topic_name(topic)
        except NameError_ as exc:
            return fail(str(exc), 2)
    from pipeline.dev.simulator import TickProducer

    settings = settings_from(args)
    producer = TickProducer(settings.kafka, args.topics, seed=args.seed, spread=args.spread)
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)

    def progress(n: int) -> None:
        if n and n % 10_000 == 0:
            log.info("produced", sent=n, delivered=producer.report.delivered)

    report = producer.run(args.count, args.rate, stop, progress)
    rate = report.delivered / report.seconds if report.seconds else 0.0
    summary = (
        f"produced {report.delivered}/{report.sent} ticks to {','.join(args.topics)} "
        f"in {report.seconds:.1f}s ({rate:.0f}/s)"
    )
    if not report.ok:
        print(f"{summary}; {report.failed} failed: {report.first_error}", file=sys.stderr)
        return 1
    print(summary)
    return 0
