"""Showing the results: a live rich progress display, the results table, Markdown and JSON."""

from __future__ import annotations

import json
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

from bench.measures import Run
from bench.runner import KINDS, LABELS, BenchResults
from bench.workloads import median


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


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _runs(runs: list[Run], steady: bool = False) -> str:
    values = [r.steady_rate if steady else r.rate for r in runs]
    return " / ".join(_rate(v) for v in values)


def _cpu(runs: list[Run]) -> str:
    """Median cores used per component during the runs: MongoDB server, Kafka broker, clients, others."""
    if not runs or not runs[0].cpu:
        return "-"

    def med(key: str) -> float:
        return median([r.cpu.get(key, 0.0) for r in runs])

    clients = median([r.cpu.get("bench", 0.0) + r.cpu.get("children", 0.0) for r in runs])
    parts = []
    if "mongo_server" in runs[0].cpu:
        parts.append(f"mongod {med('mongo_server'):.2f}")
    if "kafka_server" in runs[0].cpu:
        parts.append(f"kafka {med('kafka_server'):.2f}")
    parts.append(f"client {clients:.2f}")
    parts.append(f"other {med('other'):.2f}")
    return ", ".join(parts)


def rows(results: BenchResults) -> list[dict[str, str]]:
    """One row per measurement kind: label, median rate, median steady rate, each round, CPU split."""
    out = []
    for kind in (*KINDS, "rss_backlog"):
        runs = results.of(kind)
        if not runs:
            continue
        steady = results.median_rate(kind, steady=True)
        out.append(
            {
                "measurement": LABELS[kind],
                "msgs/s": _rate(results.median_rate(kind)),
                "steady msgs/s": _rate(steady),
                "rounds": _runs(runs) + (f"  (steady {_runs(runs, True)})" if steady is not None else ""),
                "seconds": f"{median([r.seconds for r in runs]):.1f}",
                "messages": f"{runs[0].messages:,}",
                "cores used": _cpu(runs),
            }
        )
    return out


def derived(results: BenchResults) -> list[tuple[str, str]]:
    s = results.summary()
    lines: list[tuple[str, str]] = []
    if "tickpipe_steady_pct_of_ceiling" in s:
        lines.append(
            (
                "tickpipe vs min(A, B)",
                f"{s['tickpipe_steady_pct_of_ceiling']}% steady, {s['tickpipe_pct_of_ceiling']}% end-to-end "
                f"(the lower ceiling is {s['ceiling']})",
            )
        )
    if "tickpipe_steady_vs_naive" in s:
        lines.append(("tickpipe vs naive", f"{s['tickpipe_steady_vs_naive']}x (steady rate / naive rate)"))
    if "tickpipe_vs_peer" in s:
        steady = s.get("tickpipe_steady_vs_peer_steady")
        lines.append(
            (
                "tickpipe vs Quix Streams",
                f"{s['tickpipe_vs_peer']}x end-to-end" + (f", {steady}x steady" if steady else ""),
            )
        )
    elif not results.of("peer"):
        lines.append(("tickpipe vs Quix Streams", "peer not run"))
    if "tickpipe_peak_rss_mb" in s:
        lines.append(
            ("tickpipe peak RSS (VmHWM)", f"{s['tickpipe_peak_rss_mb']:.0f} MB over {_backlog(results)}")
        )
    if "rss_backlog_peak_rss_mb" in s:
        lines.append(
            (
                "tickpipe peak RSS, big backlog",
                f"{s['rss_backlog_peak_rss_mb']:.0f} MB draining {s['rss_backlog_messages']:,} messages",
            )
        )
    if "latency_durable_ms_p50" in s:
        lines.append(
            (
                f"latency at {s['latency_rate']:,.0f} msgs/s",
                f"produce→durable+committed p50 {s['latency_durable_ms_p50']:.0f} ms, "
                f"p99 {s['latency_durable_ms_p99']:.0f} ms; produce→decoded p50 "
                f"{s['latency_decode_ms_p50']:.0f} ms, p99 {s['latency_decode_ms_p99']:.0f} ms",
            )
        )
    return lines


def _backlog(results: BenchResults) -> str:
    n = results.backlog.get("messages")
    return f"{n:,} messages" if isinstance(n, int) else "the backlog"


def print_results(console: Console, results: BenchResults) -> None:
    table = Table(
        title=f"tickpipe bench: {_backlog(results)}, medians of {results.options.get('repeat')} rounds"
    )
    data = rows(results)
    columns = ["measurement", "msgs/s", "steady msgs/s", "rounds", "seconds", "cores used"]
    for column in columns:
        table.add_column(
            column, justify="right" if column in ("msgs/s", "steady msgs/s", "seconds") else "left"
        )
    for row in data:
        table.add_row(*(row[c] for c in columns))
    console.print(table)
    for name, value in derived(results):
        console.print(f"  {name}: {value}", highlight=False)
    for note in results.notes:
        console.print(f"  note: {note}", highlight=False)
    if results.profile:
        console.print(results.profile["text"], highlight=False)


def markdown(results: BenchResults, command: str = "") -> str:
    """The results as Markdown (what docs/benchmarks.md quotes)."""
    m = results.machine
    out = []
    if command:
        out += [f"Command: `{command}`", ""]
    out += [
        f"Run {results.started_at} → {results.finished_at} UTC; {m.get('cpus')} CPUs ({m.get('cpu_model')}), "
        f"{m.get('memory_gb')} GB; load average at start {m.get('loadavg_at_start')}, at end "
        f"{m.get('loadavg_at_end')}; backlog {_backlog(results)} over "
        f"{len(results.backlog.get('topics', []))} topics x {results.backlog.get('partitions')} partitions.",
        "",
        "| measurement | msgs/s (median) | steady msgs/s | rounds (msgs/s) | s | cores used (median) |",
        "|---|---:|---:|---|---:|---|",
    ]
    for row in rows(results):
        out.append(
            f"| {row['measurement']} | {row['msgs/s']} | {row['steady msgs/s']} | {row['rounds']} | "
            f"{row['seconds']} | {row['cores used']} |"
        )
    out.append("")
    for name, value in derived(results):
        out.append(f"- **{name}**: {value}")
    for note in results.notes:
        out.append(f"- note: {note}")
    return "\n".join(out) + "\n"


def write_json(results: BenchResults, path: Path, command: str = "") -> None:
    data: dict[str, Any] = results.as_dict()
    data["command"] = command
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
