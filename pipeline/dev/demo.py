"""The embedded demo: the whole pipeline on local test servers, no Docker and nothing else to install.

Starts a Kafka broker (Apache Kafka 4.4 when Java 17+ is here, else Tansu, the pip-only one: it says which)
and the SecantusDB MongoDB server on free local ports, creates petr4 and vale3 (3 partitions each), fills
one trading session of market time with ticks (the last complete B3 session, 10:00-17:00 America/Sao_Paulo,
before now: the simulator's market clock), runs the worker until every tick is stored and committed, prints
a per-symbol summary and a table of 5-minute OHLC bars computed by MongoDB, writes a candlestick chart of
the session (PNG, its path printed) and shuts everything down.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.cli.common import fail
from pipeline.cli.reading import zone_label
from pipeline.clients.admin import create_topics
from pipeline.clients.source import KafkaSource
from pipeline.core.errors import PipelineError
from pipeline.dev.servers import choose_broker, embedded_servers
from pipeline.dev.simulator import MarketClock, Session, TickProducer
from pipeline.ingest.worker import Worker
from pipeline.ops.config import Settings
from pipeline.ops.logs import setup_logging
from pipeline.read.query import Bar, ohlc, symbol_stats

# The session the demo fills: B3's regular hours (São Paulo has had no DST since 2019).
MARKET_ZONE = ZoneInfo("America/Sao_Paulo")
SESSION = Session.parse("10:00-17:00", MARKET_ZONE)
BAR_INTERVAL = "5m"


def demo(args: argparse.Namespace) -> int:
    console = Console()
    setup_logging("INFO" if args.verbose else "WARNING", "text")
    interrupted = threading.Event()

    def handle(_signum: int, _frame: FrameType | None) -> None:
        interrupted.set()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)
    broker, why_not_apache = choose_broker("auto")
    if broker == "apache":
        described = "Apache Kafka 4.4.0"
    else:
        described = f"Tansu, a pip-only Kafka-compatible broker (Apache Kafka needs {why_not_apache})"
    console.print(
        f"[bold]tickpipe demo[/bold]: starting a local Kafka broker ({described}) "
        "and MongoDB server (SecantusDB)"
    )
    with embedded_servers(broker=broker, log=lambda line: console.print(f"  {line}")) as (kafka, mongo):
        console.print(f"  Kafka   {kafka.bootstrap} ({kafka.name})\n  MongoDB {mongo.uri} ({mongo.name})")
        settings = Settings(
            kafka={
                "bootstrap_servers": kafka.bootstrap,
                "topics": args.topics,
                "group_id": "tickpipe-demo",
                "session_timeout_ms": 6000,
            },
            mongo={"uri": mongo.uri},
            metrics={"enabled": False},
            log={"format": "text", "level": "INFO" if args.verbose else "WARNING"},
        )
        created = create_topics(settings.kafka, args.topics, args.partitions)
        console.print(
            f"topics: {', '.join(f'{t} ({s}, {args.partitions} partitions)' for t, s in created.items())}"
        )
        opening = SESSION.last_complete_before(datetime.now(UTC))
        per_topic = max(1, args.count // len(args.topics))
        interval = max(timedelta(milliseconds=1), SESSION.length / per_topic)
        local = opening.astimezone(MARKET_ZONE)
        console.print(
            f"market time: one session, {local:%a %Y-%m-%d} {SESSION.open:%H:%M}-{SESSION.close:%H:%M} "
            f"{zone_label(MARKET_ZONE, opening)}, {per_topic:,} ticks per topic, one every "
            f"{interval.total_seconds():g} s"
        )
        clock = MarketClock(opening, interval, SESSION)
        producer = TickProducer(settings.kafka, args.topics, record_offsets=True, spread=True, clock=clock)
        report = producer.run(args.count)
        if not report.ok:
            return fail(f"producing failed: {report.first_error}")
        del producer  # destroy the client now, while the broker is still up
        console.print(f"produced {report.delivered} ticks in {report.seconds:.1f}s")
        worker = Worker(settings)
        outcome: dict[str, Any] = {}

        def run_worker() -> None:
            try:
                outcome["code"] = worker.run()
            except PipelineError as exc:
                outcome["error"] = str(exc)

        thread = threading.Thread(target=run_worker, name="worker")
        started = time.monotonic()
        thread.start()
        expected = {tp: max(offsets) + 1 for tp, offsets in report.offsets.items()}
        with Progress(
            TextColumn("storing"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("store", total=report.delivered)
            while thread.is_alive() and not interrupted.is_set():
                done = worker.totals.stored + worker.totals.duplicates + worker.totals.dead_lettered
                bar.update(task, completed=done)
                if done >= report.delivered and _committed(settings, expected):
                    break
                if time.monotonic() - started > args.timeout:
                    worker.request_stop()
                    thread.join()
                    return fail(f"timed out after {args.timeout:g}s with {done}/{report.delivered} stored")
                time.sleep(0.2)
        worker.request_stop()
        thread.join()
        if "error" in outcome or outcome.get("code"):
            return fail(outcome.get("error", "the worker stopped with an error"))
        elapsed = time.monotonic() - started
        console.print(
            f"stored and committed {worker.totals.stored} ticks in {elapsed:.1f}s "
            f"({worker.totals.stored / elapsed:.0f}/s, w=majority, j=true)"
        )
        _print_summary(console, settings)
        bars = _bars(settings)
        _print_bars(console, bars)
        chart = _chart(console, bars, Path(args.chart), opening)
    if chart is not None:
        console.print(f"chart of the session ({BAR_INTERVAL} bars): [bold]{chart}[/bold]")
    console.print("servers stopped. Run it for real: [bold]pipeline run --config config/pipeline.yaml[/bold]")
    return 130 if interrupted.is_set() else 0


def _committed(settings: Settings, expected: dict[tuple[str, int], int]) -> bool:
    """True once the group's committed offsets reach the end of what was produced."""
    source = KafkaSource(settings.kafka)
    try:
        committed = source.committed(list(expected), timeout_s=5)
    finally:
        source.close()
    return all(committed.get(tp, -1) >= end for tp, end in expected.items())


def _print_summary(console: Console, settings: Settings) -> None:
    from pipeline.clients.mongo import make_client

    router = settings.collection_router()
    client = make_client(settings.mongo)
    try:
        stats = symbol_stats(
            client[settings.mongo.database], [router.collection_for(t) for t in settings.kafka.topics]
        )
    finally:
        client.close()
    days = sorted({t.astimezone(MARKET_ZONE).date() for s in stats for t in (s.first_ts, s.last_ts)})
    span = " to ".join(sorted({days[0].isoformat(), days[-1].isoformat()})) if days else ""
    table = Table(
        title=f"ticks stored in MongoDB database {settings.mongo.database!r}, {span} ({MARKET_ZONE.key})"
    )
    for column in ("symbol", "collection", "count", "first", "last", "last price", "avg price"):
        table.add_column(
            column, justify="right" if column in ("count", "last price", "avg price") else "left"
        )
    for s in stats:
        table.add_row(
            s.symbol,
            s.collection,
            f"{s.count:,}",
            s.first_ts.astimezone(MARKET_ZONE).strftime("%H:%M:%S"),
            s.last_ts.astimezone(MARKET_ZONE).strftime("%H:%M:%S"),
            f"{s.last_price:.2f}",
            f"{s.avg_price:.2f}",
        )
    console.print(table)


def _bars(settings: Settings) -> dict[str, list[Bar]]:
    """symbol -> its 5-minute bars over the session, aligned to the market's zone (computed by MongoDB)."""
    from pipeline.clients.mongo import make_client
    from pipeline.dev.simulator import symbol_for_topic

    router = settings.collection_router()
    client = make_client(settings.mongo)
    try:
        db = client[settings.mongo.database]
        return {
            symbol_for_topic(topic): ohlc(
                db,
                symbol_for_topic(topic),
                BAR_INTERVAL,
                collections=[router.collection_for(topic)],
                align_tz=MARKET_ZONE,
            )
            for topic in settings.kafka.topics
        }
    finally:
        client.close()


def _print_bars(console: Console, bars: dict[str, list[Bar]]) -> None:
    """One row per bar start, the symbols side by side: open, high, low, close (volumes are in the chart)."""
    table = Table(
        title=f"{BAR_INTERVAL} OHLC bars computed by MongoDB ({MARKET_ZONE.key})",
        box=box.SIMPLE_HEAD,
        padding=(0, 1),
    )
    table.add_column("bar")
    for symbol in bars:
        for field in ("open", "high", "low", "close"):
            table.add_column(f"{symbol} {field}" if field == "open" else field, justify="right")
    by_start: dict[datetime, dict[str, Bar]] = {}
    for symbol, series in bars.items():
        for each in series:
            by_start.setdefault(each.start, {})[symbol] = each
    for start in sorted(by_start):
        cells = [start.astimezone(MARKET_ZONE).strftime("%H:%M")]
        for symbol in bars:
            bar = by_start[start].get(symbol)
            cells += (
                ["-"] * 4 if bar is None else [f"{p:.2f}" for p in (bar.open, bar.high, bar.low, bar.close)]
            )
        table.add_row(*cells)
    console.print(table)


def _chart(console: Console, bars: dict[str, list[Bar]], path: Path, opening: datetime) -> Path | None:
    """The session's candlesticks (one panel per symbol) as a PNG; None (with a note) without matplotlib."""
    try:
        import matplotlib  # noqa: F401

        from pipeline.read.chart import plot_ohlc_panels
    except ImportError:
        console.print("chart skipped: it needs matplotlib (pip install 'tickpipe[analytics]')")
        return None
    from pipeline.read.query import interval_delta

    path = path.expanduser().resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    day = opening.astimezone(MARKET_ZONE)
    titled = {
        f"{symbol}  {BAR_INTERVAL} bars  {day:%Y-%m-%d} {SESSION.open:%H:%M}-{SESSION.close:%H:%M}": series
        for symbol, series in bars.items()
        if series
    }
    return plot_ohlc_panels(
        titled,
        path,
        interval=interval_delta(BAR_INTERVAL),
        zone=MARKET_ZONE,
        zone_label=zone_label(MARKET_ZONE, opening),
    )
