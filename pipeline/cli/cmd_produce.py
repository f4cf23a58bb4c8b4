"""`pipeline produce`: the ticker simulator."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

from pipeline.cli.common import (
    add_config_option,
    add_timeout_option,
    csv_list,
    non_negative_int,
    positive_float,
    positive_int,
    settings_from,
)
from pipeline.ops.logs import get_logger

if TYPE_CHECKING:
    from pipeline.dev.simulator import MarketClock
    from pipeline.ops.config import KafkaConfig

log = get_logger("pipeline.dev.simulator")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "produce",
        help="produce simulated market ticks (random walk per symbol) to Kafka",
        description="Send COUNT ticks spread evenly over the topics, keyed by symbol (petr4 -> PETR4). "
        "The topics must exist (`pipeline topics create`): like the worker, produce never creates one. "
        "Kafka unreachable within --timeout: one line naming the server, exit 1. Exits non-zero if any "
        "message is not acknowledged.",
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
    market = parser.add_argument_group(
        "market time",
        "stamp ticks in market time instead of the wall clock (the Kafka records keep wall-clock "
        "timestamps), so that a backlog can represent a trading session",
    )
    market.add_argument(
        "--start",
        metavar="TIME",
        help="market time of the first ticks: ISO-8601 (naive = UTC), now, or relative (-1d); "
        "default with --tick-interval-ms or --session: now",
    )
    market.add_argument(
        "--tick-interval-ms",
        type=positive_int,
        metavar="N",
        help="market time between two ticks of a symbol (default with --start: 1000)",
    )
    market.add_argument(
        "--session",
        metavar="HH:MM-HH:MM",
        help="trading hours on weekdays: ticks stay within them (a close jumps to the next open)",
    )
    market.add_argument(
        "--session-tz",
        metavar="ZONE",
        default="UTC",
        help="the zone of --session (default UTC), e.g. America/Sao_Paulo",
    )
    add_timeout_option(parser, 10.0, "Kafka")
    parser.set_defaults(func=produce)


def market_clock(args: argparse.Namespace) -> MarketClock | None:
    """The market clock the options ask for (None: the wall clock); bad values raise UsageError/QueryError
    (one line, exit 2) before anything is sent."""
    from datetime import UTC, datetime, timedelta

    from pipeline.cli.errors import UsageError
    from pipeline.dev.simulator import MarketClock, Session
    from pipeline.read.query import parse_time, parse_zone

    if args.start is None and args.tick_interval_ms is None and args.session is None:
        if args.session_tz != "UTC":
            raise UsageError("--session-tz needs --session")
        return None
    start = parse_time(args.start) if args.start is not None else datetime.now(UTC)
    session = None
    if args.session is not None:
        try:
            session = Session.parse(args.session, parse_zone(args.session_tz))
        except ValueError as exc:
            raise UsageError(f"--session: {exc}") from None
    elif args.session_tz != "UTC":
        raise UsageError("--session-tz needs --session")
    return MarketClock(start, timedelta(milliseconds=args.tick_interval_ms or 1000), session)


def check_topics_exist(kafka: KafkaConfig, topics: list[str], timeout_s: float) -> None:
    """Kafka answers within `timeout_s` (else PipelineError, exit 1, naming the server) and every topic
    exists (else UsageError, exit 2): producing to a missing topic would make a broker that auto-creates
    topics create it with its defaults, silently."""
    from pipeline.cli.errors import UsageError
    from pipeline.clients.admin import list_topics

    existing = {t.name for t in list_topics(kafka, timeout_s, include_internal=True)}
    missing = [t for t in topics if t not in existing]
    if missing:
        names = " ".join(missing)
        raise UsageError(
            f"topic {missing[0]!r} does not exist on {kafka.bootstrap_servers}: create it first "
            f"(pipeline topics create {names}); produce never creates topics"
        )


def produce(args: argparse.Namespace) -> int:
    from pipeline.cli.common import topic_names
    from pipeline.dev.simulator import TickProducer
    from pipeline.ops.logs import setup_logging

    topics = topic_names(args.topics)
    clock = market_clock(args)
    settings = settings_from(args, logging=False)
    check_topics_exist(settings.kafka, topics, args.timeout)
    setup_logging(settings.log.level, settings.log.format)
    producer = TickProducer(settings.kafka, topics, seed=args.seed, spread=args.spread, clock=clock)
    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)

    def progress(n: int) -> None:
        if n and n % 10_000 == 0:
            log.info("produced", sent=n, delivered=producer.report.delivered)

    first_tick = clock.current if clock is not None else None
    report = producer.run(args.count, args.rate, stop, progress)
    rate = report.delivered / report.seconds if report.seconds else 0.0
    summary = (
        f"produced {report.delivered}/{report.sent} ticks to {','.join(topics)} "
        f"in {report.seconds:.1f}s ({rate:.0f}/s)"
    )
    if clock is not None and first_tick is not None and report.sent:
        from pipeline.core.timefmt import iso_utc

        last = clock.current - clock.interval
        summary += f", market time {iso_utc(first_tick)} to {iso_utc(last)}"
    if not report.ok:
        print(f"{summary}; {report.failed} failed: {report.first_error}", file=sys.stderr)
        return 1
    print(summary)
    return 0
