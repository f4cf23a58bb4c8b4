"""Showing the results: a live rich progress display, the results table, Markdown and JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from bench.runner import KINDS, LABELS, BenchResults
from bench.servers import MONGO_SERVERS
from bench.workloads import Run, median


class RichUI:
    """Two bars: the steps of the whole benchmark, and the messages of the current step."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._overall: TaskID | None = None
        self._current: TaskID | None = None

    def __enter__(self) -> RichUI:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def plan(self, steps: int) -> None:
        self._overall = self.progress.add_task("benchmark steps", total=steps)

    def step(self, title: str, total: int | None) -> None:
        if self._current is not None:
            self.progress.remove_task(self._current)
            if self._overall is not None:
                self.progress.advance(self._overall)
        self._current = self.progress.add_task(title, total=total)

    def update(self, done: int) -> None:
        if self._current is not None:
            self.progress.update(self._current, completed=done)

    def note(self, text: str) -> None:
        self.progress.console.print(text, highlight=False)


@dataclass
class Section:
    """One table of the report and the lines under it (rendered by rich and as Markdown alike)."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


RATE_COLUMNS = ["measurement", "msgs/s", "steady msgs/s", "rounds (msgs/s)", "CPU µs/msg", "cores used"]
NUMERIC = {"msgs/s", "steady msgs/s", "CPU µs/msg", "produced", "stored", "missing", "duplicates"}
ROLES = (("client", "client"), ("mongo_server", "mongod"), ("kafka_server", "kafka"), ("bench", "bench"))


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _rounds(runs: list[Run]) -> str:
    text = " / ".join(_rate(r.rate) for r in runs)
    if any(r.steady_rate is not None for r in runs):
        text += f"  (steady {' / '.join(_rate(r.steady_rate) for r in runs)})"
    return text


def _cpu_per_message(runs: list[Run]) -> str:
    """Median CPU-µs per message of the client process(es): steady (whole run, start-up included)."""
    whole = [r.cpu_us_per_msg for r in runs if r.cpu_us_per_msg is not None]
    steady = [r.steady_cpu_us_per_msg for r in runs if r.steady_cpu_us_per_msg is not None]
    if not whole:
        return "-"
    if steady:
        return f"{median(steady):.1f} (whole {median(whole):.1f})"
    return f"{median(whole):.1f}"


def cores_used(runs: list[Run]) -> str:
    """Median cores used per process during the runs: the client, the MongoDB server, the broker, this
    bench process (when the client is another process), and the rest of the machine."""
    if not runs or not runs[0].cpu:
        return "-"
    parts = []
    for role, label in ROLES:
        if role in runs[0].cpu:
            parts.append(f"{label} {median([r.cpu.get(role, 0.0) for r in runs]):.2f}")
    parts.append(f"other {median([r.cpu.get('other', 0.0) for r in runs]):.2f}")
    return ", ".join(parts)


def _rate_row(label: str, runs: list[Run]) -> list[str]:
    steady = [r.steady_rate for r in runs if r.steady_rate is not None]
    return [
        label,
        _rate(median([r.rate for r in runs])),
        _rate(median(steady)) if steady else "-",
        _rounds(runs),
        _cpu_per_message(runs),
        cores_used(runs),
    ]


def sections(results: BenchResults) -> list[Section]:
    out: list[Section] = []
    a = results.of("raw_consume")
    if a:
        kafka = Section("Kafka only (no MongoDB server)", RATE_COLUMNS, [_rate_row(LABELS["raw_consume"], a)])
        out.append(kafka)
    summary = results.summary()["servers"]
    for server in results.mongo_servers():
        section = Section(
            f"on {MONGO_SERVERS.get(server, server)} (a fresh server per measurement)", RATE_COLUMNS
        )
        for kind in (*KINDS, "latency", "rss_backlog"):
            runs = results.of(kind, server)
            if runs and kind != "raw_consume":
                section.rows.append(_rate_row(LABELS[kind], runs))
        section.lines = derived(summary.get(server, {}), results, server)
        out.append(section)
    crash = crash_section(results)
    if crash is not None:
        out.append(crash)
    return out


def derived(s: dict[str, Any], results: BenchResults, server: str) -> list[str]:
    lines: list[str] = []
    if "raw_insert_rounds" in s:
        rounds = " / ".join(_rate(v) for v in s["raw_insert_rounds"])
        lines.append(f"ceiling B per round: {rounds} (spread {s['raw_insert_spread_pct']}% of the median)")
    if "tickpipe_steady_pct_of_b" in s:
        lines.append(
            f"tickpipe vs ceiling B: {s['tickpipe_steady_pct_of_b']}% steady, "
            f"{s['tickpipe_pct_of_b']}% end to end"
        )
    names = {"ceiling_c": "ceiling C", "connector": "the connector", "peer": "Quix Streams", "naive": "naive"}
    ratios = []
    if "tickpipe_steady_vs_c" in s:
        ratios.append(f"{s['tickpipe_steady_vs_c']}x ceiling C")
    for peer in ("connector", "peer", "naive"):
        if f"tickpipe_steady_vs_{peer}" in s:
            ratios.append(f"{s[f'tickpipe_steady_vs_{peer}']}x {names[peer]}")
    if ratios:
        lines.append(
            "tickpipe steady rate = " + ", ".join(ratios) + " (each at its steady rate, if it has one)"
        )
    if "scale_out_vs_one_process" in s:
        lines.append(
            f"scale-out: 2 processes in one group over {_partitions(results)} partitions reach "
            f"{s['scale_out_vs_one_process']}x one process (steady)"
        )
    if "tickpipe_steady_us_by_thread" in s:
        groups = {
            "main": "main thread",
            "librdkafka": "librdkafka",
            "python_other": "writer and other threads",
        }
        parts = [f"{groups.get(g, g)} {v}" for g, v in s["tickpipe_steady_us_by_thread"].items()]
        lines.append("tickpipe steady CPU µs/msg by thread: " + ", ".join(parts))
    if "tickpipe_write_concurrency" in s:
        rounds = " / ".join(str(c) for c in s["tickpipe_write_concurrency"])
        lines.append(f"tickpipe writes in flight at the end of each round: {rounds}")
    if "tickpipe_peak_rss_mb" in s:
        lines.append(
            f"tickpipe peak RSS (VmHWM): {s['tickpipe_peak_rss_mb']:.0f} MB over {_backlog(results)}"
        )
    if "rss_backlog_peak_rss_mb" in s:
        lines.append(
            f"tickpipe peak RSS, big backlog: {s['rss_backlog_peak_rss_mb']:.0f} MB draining "
            f"{s['rss_backlog_messages']:,} messages"
        )
    if "latency_durable_ms_p50" in s:
        lines.append(
            f"latency at {s['latency_rate']:,.0f} msgs/s: produce→durable+committed p50 "
            f"{s['latency_durable_ms_p50']:.0f} ms, p99 {s['latency_durable_ms_p99']:.0f} ms; "
            f"produce→decoded p50 {s['latency_decode_ms_p50']:.0f} ms, "
            f"p99 {s['latency_decode_ms_p99']:.0f} ms"
        )
    return lines


CRASH_COLUMNS = [
    "server",
    "process",
    "produced",
    "stored",
    "missing",
    "duplicates",
    "re-deliveries seen",
    "restart → all stored",
]


def crash_section(results: BenchResults) -> Section | None:
    runs = results.of("crash_tickpipe") + results.of("crash_connector")
    if not runs:
        return None
    section = Section("crash comparison: kill -9 mid-stream, restart at once", CRASH_COLUMNS)
    for run in sorted(runs, key=lambda r: (results.mongo_servers().index(r.server or ""), r.kind)):
        d = run.details
        recovered = d.get("restart_to_all_stored_s")
        section.rows.append(
            [
                MONGO_SERVERS.get(run.server or "", "-"),
                "tickpipe" if run.kind == "crash_tickpipe" else "connector",
                f"{d['produced']:,}",
                f"{d['stored_documents']:,}",
                f"{d['missing']:,}",
                f"{d['duplicates']:,}",
                f"{d['redeliveries_seen']:,} ({d['redeliveries_means']})"
                if d["redeliveries_seen"] is not None
                else "-",
                f"{recovered:.1f} s"
                if recovered is not None
                else f"not all stored after {d.get('seconds')} s",
            ]
        )
    first = runs[0].details
    section.lines = [
        f"{first['rate']:,.0f} ticks/s for {first['seconds']:g} s into fresh topics; killed once half was "
        "produced and the process had made progress; missing = produced offsets with no document, "
        "duplicates = documents beyond one per offset",
        "what they store differs: tickpipe's _id is {topic, partition, offset} and ts a date; the "
        'connector\'s _id is the string "topic#partition#offset" and ts stays a string',
    ]
    return section


def _partitions(results: BenchResults) -> int:
    return len(results.backlog.get("end_offsets", {})) or 0


def _backlog(results: BenchResults) -> str:
    n = results.backlog.get("messages")
    return f"{n:,} messages" if isinstance(n, int) else "the backlog"


def title(results: BenchResults) -> str:
    rounds = results.options.get("repeat")
    return f"tickpipe bench: {_backlog(results)}, medians of {rounds} round{'s' if rounds != 1 else ''}"


def print_results(console: Console, results: BenchResults, smoke: bool = False) -> None:
    console.print(title(results) + (" — SMOKE RUN, not a result" if smoke else ""), highlight=False)
    for section in sections(results):
        table = Table(title=section.title)
        for column in section.columns:
            table.add_column(column, justify="right" if column in NUMERIC else "left")
        for row in section.rows:
            table.add_row(*row)
        console.print(table)
        for line in section.lines:
            console.print(f"  {line}", highlight=False)
    for note in results.notes:
        console.print(f"  note: {note}", highlight=False)
    console.print(f"  wall time: {results.wall_seconds:.0f} s", highlight=False)
    if results.profile:
        console.print(results.profile["text"], highlight=False)


def markdown(results: BenchResults, command: str = "", smoke: bool = False) -> str:
    """The results as Markdown (what docs/benchmarks.md quotes)."""
    m = results.machine
    out = []
    if smoke:
        out += ["**Smoke run (`--quick`): checks that every measurement runs, not a result.**", ""]
    if command:
        out += [f"Command: `{command}`", ""]
    out += [
        f"Run {results.started_at} → {results.finished_at} UTC ({results.wall_seconds:.0f} s); "
        f"{m.get('cpus')} CPUs ({m.get('cpu_model')}), {m.get('memory_gb')} GB; load average at start "
        f"{m.get('loadavg_at_start')}, at end {m.get('loadavg_at_end')}; "
        f"broker {results.servers.get('broker')}; "
        f"backlog {_backlog(results)} over {len(results.backlog.get('topics', []))} topics x "
        f"{results.backlog.get('partitions')} partitions; {title(results).split(', ', 1)[1]}.",
    ]
    for section in sections(results):
        out += ["", f"**{section.title}**", ""]
        out.append("| " + " | ".join(section.columns) + " |")
        out.append("|" + "|".join("---:" if c in NUMERIC else "---" for c in section.columns) + "|")
        for row in section.rows:
            out.append("| " + " | ".join(row) + " |")
        if section.lines:
            out.append("")
            out += [f"- {line}" for line in section.lines]
    if results.notes:
        out.append("")
        out += [f"- note: {note}" for note in results.notes]
    return "\n".join(out) + "\n"


def write_json(results: BenchResults, path: Path, command: str = "") -> None:
    data: dict[str, Any] = results.as_dict()
    data["command"] = command
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
