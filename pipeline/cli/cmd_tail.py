"""`pipeline tail TOPIC...`: print ticks live as they arrive (a console consumer; see pipeline/read/tail)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from pipeline.cli.common import add_config_option, add_timeout_option, positive_int


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "tail",
        help="print ticks from Kafka live, like kafka-console-consumer",
        description="Print the messages of TOPIC(s) as they arrive (Ctrl-C stops, exit 0). Without --group "
        "nothing is committed anywhere; with --group G, G's offsets advance past the printed messages and "
        "tails sharing G split the partitions. Messages that are not ticks are printed escaped after '!!'. "
        "A missing topic, or a pattern that matches none, exits 2; Kafka unreachable within --timeout "
        "exits 1.",
    )
    parser.add_argument(
        "topics",
        nargs="*",
        metavar="TOPIC",
        help="topics, or a regex starting with ^ (default: the configured kafka.topics)",
    )
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the oldest message (with --group: only when G has no committed offset)",
    )
    parser.add_argument("--group", metavar="G", help="consume as consumer group G and commit G's offsets")
    parser.add_argument("--format", choices=("text", "json"), default="text", help="default: text")
    parser.add_argument("--max", type=positive_int, metavar="N", help="exit after N messages")
    parser.add_argument("--tz", default="UTC", metavar="ZONE", help="show times in this IANA zone")
    add_timeout_option(parser, 10.0, "Kafka")
    add_config_option(parser)
    parser.set_defaults(func=tail)


def tail(args: argparse.Namespace) -> int:
    from pipeline.cli.common import settings_from
    from pipeline.cli.reading import quiet_stdout
    from pipeline.read.query import parse_zone

    zone = parse_zone(args.tz)
    from rich.console import Console
    from rich.text import Text

    from pipeline.core.errors import PipelineError
    from pipeline.read.tail import ConsoleTail, TextFormatter, decoders, describe_message, format_json

    settings = settings_from(args, logging=False)
    topics = args.topics or list(settings.kafka.topics)
    consumer = ConsoleTail(settings, topics, args.group, args.from_beginning)

    stop = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)

    def announce(assigned: list[tuple[str, int]]) -> None:
        parts = ", ".join(f"{t}[{p}]" for t, p in assigned) or "none"
        print(f"tail: partitions {parts}", file=sys.stderr, flush=True)

    decode = decoders(settings)
    text = TextFormatter(zone)
    console = Console(highlight=False, soft_wrap=True) if sys.stdout.isatty() else None
    printed = 0
    try:
        consumer.start(timeout_s=args.timeout, on_assign=announce)
        while not stop.is_set() and (args.max is None or printed < args.max):
            room = 500 if args.max is None else min(500, args.max - printed)
            for message in consumer.consume(room, 0.5):
                error = message.error()
                if error is not None:
                    if error.fatal():
                        raise PipelineError(f"Kafka at {settings.kafka.bootstrap_servers}: {error.str()}")
                    print(f"tail: Kafka: {error.str()}", file=sys.stderr, flush=True)
                    continue
                shown = describe_message(message, settings, decode)
                if args.format == "json":
                    sys.stdout.write(format_json(shown, zone) + "\n")
                elif console is not None:
                    line, style = text(shown)
                    console.print(Text(line, style=style))
                else:
                    sys.stdout.write(text(shown)[0] + "\n")
                consumer.done(message)
                printed += 1
            sys.stdout.flush()
    except BrokenPipeError:  # `pipeline tail ... | head`
        quiet_stdout()
    finally:
        consumer.close()
    print(f"tail: {printed} message(s)", file=sys.stderr)
    return 0
