"""`pipeline bench`: every measurement, side by side, in one run on the same servers and the same backlog.

Order: the backlog is produced once; then `repeat` rounds of (ceiling A, ceiling B, naive, peer, tickpipe),
interleaved so that a change of machine load affects every measurement alike; then the paced latency runs
(at `latency_load` x tickpipe's median steady rate), the big-backlog RSS run and the profile run, if asked.
The headline of each measurement is the median of its rounds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bench import measures
from bench.measures import Run
from bench.system import loadavg, machine_info
from bench.workloads import Backlog, BenchError, Target, drop_bench_databases, median, preload

Progress = Callable[[int], None]

REPO = Path(__file__).resolve().parent.parent
KINDS = ("raw_consume", "raw_insert", "naive", "peer", "tickpipe")
LABELS = {
    "raw_consume": "ceiling A: raw consume (confluent-kafka, assign)",
    "raw_insert": "ceiling B: raw insert_many (pymongo, 1000/call)",
    "naive": "naive: poll 1 / insert_one / auto-commit",
    "peer": "peer: Quix Streams MongoDBSink",
    "tickpipe": "tickpipe: pipeline run",
    "latency": "tickpipe at paced load",
    "rss_backlog": "tickpipe draining the big backlog",
}


@dataclass
class BenchOptions:
    count: int = 200_000
    repeat: int = 3
    naive_count: int = 5_000
    insert_batch: int = 1_000
    latency_seconds: float = 20.0
    latency_load: float = 0.5
    rss_backlog: int = 0
    peer: bool = True
    peer_venv: Path = REPO / ".venv-peer"
    peer_write_concern: str = "majority"
    profile_to: Path | None = None
    session_timeout_ms: int = 6_000
    tickers: tuple[str, ...] = ("petr4", "vale3")
    partitions: int = 3
    verify: bool = True
    timeout_s: float = 1800.0
    # Extra PIPELINE_* variables for every tickpipe run (to compare a setting; recorded in the results).
    worker_env: dict[str, str] = field(default_factory=dict)


class UI(Protocol):
    def plan(self, steps: int) -> None: ...
    def step(self, title: str, total: int | None) -> None: ...
    def update(self, done: int) -> None: ...
    def note(self, text: str) -> None: ...


class QuietUI:
    def plan(self, steps: int) -> None:
        return None

    def step(self, title: str, total: int | None) -> None:
        return None

    def update(self, done: int) -> None:
        return None

    def note(self, text: str) -> None:
        return None


@dataclass
class BenchResults:
    options: dict[str, Any]
    machine: dict[str, Any]
    started_at: str
    finished_at: str = ""
    backlog: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[Run]:
        return [run for run in self.runs if run.kind == kind]

    def median_rate(self, kind: str, steady: bool = False) -> float | None:
        runs = self.of(kind)
        values = [r.steady_rate if steady else r.rate for r in runs]
        present = [v for v in values if v is not None]
        return median(present) if present else None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in (*KINDS, "latency", "rss_backlog"):
            if self.of(kind):
                out[f"{kind}_rate"] = _round(self.median_rate(kind))
                steady = self.median_rate(kind, steady=True)
                if steady is not None:
                    out[f"{kind}_steady_rate"] = _round(steady)
        a, b = self.median_rate("raw_consume"), self.median_rate("raw_insert")
        tp, tp_steady = self.median_rate("tickpipe"), self.median_rate("tickpipe", steady=True)
        if a and b and tp_steady:
            out["ceiling"] = "A, raw consume" if a < b else "B, raw insert"
            out["tickpipe_steady_pct_of_ceiling"] = round(100 * tp_steady / min(a, b), 1)
        if a and b and tp:
            out["tickpipe_pct_of_ceiling"] = round(100 * tp / min(a, b), 1)
        naive = self.median_rate("naive")
        if naive and tp_steady:
            out["tickpipe_steady_vs_naive"] = round(tp_steady / naive, 1)
        peer, peer_steady = self.median_rate("peer"), self.median_rate("peer", steady=True)
        if peer and tp:
            out["tickpipe_vs_peer"] = round(tp / peer, 2)
        if peer_steady and tp_steady:
            out["tickpipe_steady_vs_peer_steady"] = round(tp_steady / peer_steady, 2)
        rss = [r.details["peak_rss_mb"] for r in self.of("tickpipe") if "peak_rss_mb" in r.details]
        if rss:
            out["tickpipe_peak_rss_mb"] = max(rss)
        latency = self.of("latency")
        if latency:
            for key in ("durable_ms", "decode_ms"):
                for q in ("p50", "p99"):
                    out[f"latency_{key}_{q}"] = _round(median([r.details[key][q] for r in latency]))
            out["latency_rate"] = _round(median([r.rate for r in latency]))
        big = self.of("rss_backlog")
        if big:
            out["rss_backlog_messages"] = big[0].messages
            out["rss_backlog_peak_rss_mb"] = max(r.details.get("peak_rss_mb", 0.0) for r in big)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "machine": self.machine,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "backlog": self.backlog,
            "summary": self.summary(),
            "runs": [run.as_dict() for run in self.runs],
            "profile": self.profile,
            "notes": self.notes,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@contextlib.contextmanager
def embedded_target(workdir: Path | None = None) -> Iterator[Target]:
    """Start the Tansu broker and the SecantusDB server on free ports (stopped, data deleted, on exit)."""
    from pipeline.dev.servers import embedded_servers

    with embedded_servers(workdir) as (kafka, mongo):
        assert kafka.server is not None and kafka.server.proc is not None
        assert mongo.server is not None and mongo.server.proc is not None
        yield Target(kafka.bootstrap, mongo.uri, kafka.workdir, kafka.server.proc.pid, mongo.server.proc.pid)


def plan_steps(opts: BenchOptions) -> int:
    per_round = len(KINDS) - (0 if opts.peer else 1)
    steps = 1 + opts.repeat * per_round
    steps += opts.repeat if opts.latency_seconds > 0 else 0
    steps += 2 if opts.rss_backlog else 0
    steps += 1 if opts.profile_to else 0
    return steps


def run_bench(opts: BenchOptions, target: Target | None = None, ui: UI | None = None) -> BenchResults:
    """Run every measurement. With no `target`, starts the embedded test servers for the duration."""
    ui = ui or QuietUI()
    results = BenchResults(
        options={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
        machine=machine_info(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    peer_python = None
    if opts.peer:
        from bench.peer import ensure_venv

        peer_python = ensure_venv(opts.peer_venv, log=ui.note)  # before anything is timed
    else:
        results.notes.append("Quix Streams peer not run (disabled)")
    with contextlib.ExitStack() as stack:
        if target is None:
            ui.note("starting the test servers (Tansu Kafka broker, SecantusDB MongoDB server) ...")
            target = stack.enter_context(embedded_target())
            results.notes.append(
                "servers: Tansu (memory storage) and SecantusDB (--sync-on-commit) started by the bench on "
                "127.0.0.1, sharing the machine with the clients"
            )
        _run_all(opts, target, results, ui, peer_python)
    results.machine["loadavg_at_end"] = loadavg()
    results.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def _run_all(
    opts: BenchOptions, target: Target, results: BenchResults, ui: UI, peer_python: Path | None
) -> None:
    ui.plan(plan_steps(opts))
    results.notes.append(
        "each measurement writes into a fresh database, verified after the run and then dropped, so every "
        "measurement starts on a server holding the same data"
    )
    ui.step(f"preloading {opts.count:,} ticks", opts.count)
    backlog = preload(target, opts.count, opts.tickers, opts.partitions, progress=ui.update)
    results.backlog = {
        "topics": backlog.topics,
        "partitions": opts.partitions,
        "messages": backlog.count,
        "produce_seconds": round(backlog.produce_seconds, 2),
        "end_offsets": {f"{t}[{p}]": end for (t, p), end in sorted(backlog.ends.items())},
    }
    session = opts.session_timeout_ms

    def ceiling_a(p: Progress) -> Run:
        return measures.raw_consume(target, backlog, p)

    def ceiling_b(p: Progress) -> Run:
        return measures.raw_insert(target, backlog.topics, backlog.count, opts.insert_batch, p)

    def naive(p: Progress) -> Run:
        return measures.naive(target, backlog, opts.naive_count, p)

    def quix(p: Progress) -> Run:
        from bench.peer import peer

        assert peer_python is not None
        return peer(
            target, backlog, peer_python, session, opts.peer_write_concern, p, opts.timeout_s, opts.verify
        )

    def tickpipe(p: Progress) -> Run:
        return measures.tickpipe(
            target,
            backlog,
            session,
            p,
            timeout_s=opts.timeout_s,
            verify=opts.verify,
            extra_env=opts.worker_env,
        )

    for round_ in range(1, opts.repeat + 1):
        tag = f"[{round_}/{opts.repeat}]"
        _measure(results, ui, f"{tag} ceiling A: raw consume", backlog.count, ceiling_a, target)
        _measure(results, ui, f"{tag} ceiling B: raw insert", backlog.count, ceiling_b, target)
        _measure(results, ui, f"{tag} naive", min(opts.naive_count, backlog.count), naive, target)
        if peer_python is not None:
            _measure(results, ui, f"{tag} Quix Streams peer", backlog.count, quix, target)
        _measure(results, ui, f"{tag} tickpipe", backlog.count, tickpipe, target)
    if opts.latency_seconds > 0:
        max_rate = results.median_rate("tickpipe", steady=True) or results.median_rate("tickpipe") or 100.0
        rate = opts.latency_load * max_rate
        count = max(1, round(rate * opts.latency_seconds))

        def paced(p: Progress) -> Run:
            return measures.latency(
                target,
                rate,
                opts.latency_seconds,
                session,
                opts.tickers,
                opts.partitions,
                progress=p,
                extra_env=opts.worker_env,
            )

        for round_ in range(1, opts.repeat + 1):
            _measure(results, ui, f"[{round_}/{opts.repeat}] latency at {rate:,.0f}/s", count, paced, target)
    if opts.rss_backlog:
        ui.step(f"preloading {opts.rss_backlog:,} ticks for the RSS run", opts.rss_backlog)
        big = preload(target, opts.rss_backlog, opts.tickers, opts.partitions, progress=ui.update, seed=9)
        results.backlog["rss_backlog_produce_seconds"] = round(big.produce_seconds, 2)

        def drain(p: Progress) -> Run:
            timeout = max(opts.timeout_s, big.count / 200)
            return measures.tickpipe(
                target,
                big,
                session,
                p,
                timeout_s=timeout,
                verify=opts.verify,
                kind="rss_backlog",
                extra_env=opts.worker_env,
            )

        _measure(results, ui, f"RSS: tickpipe draining {big.count:,}", big.count, drain, target)
    if opts.profile_to is not None:
        results.profile = _profile(target, backlog, opts, ui)


def _measure(
    results: BenchResults,
    ui: UI,
    title: str,
    total: int,
    call: Callable[[Callable[[int], None]], Run],
    target: Target,
) -> Run:
    ui.step(title, total)
    run = call(ui.update)
    drop_bench_databases(target)  # verified by the measurement; the next one starts on the same server state
    run.details.setdefault("loadavg_1m_after", loadavg()[0])
    results.runs.append(run)
    steady = f", steady {run.steady_rate:,.0f}/s" if run.steady_rate else ""
    ui.note(f"{title}: {run.messages:,} in {run.seconds:.1f}s = {run.rate:,.0f}/s{steady}")
    return run


def _profile(target: Target, backlog: Backlog, opts: BenchOptions, ui: UI) -> dict[str, Any]:
    """One more tickpipe run over the same backlog, under py-spy (not part of the measured rounds)."""
    from bench.profiling import render, summarise

    assert opts.profile_to is not None
    opts.profile_to.parent.mkdir(parents=True, exist_ok=True)
    opts.profile_to.unlink(missing_ok=True)
    ui.step("profile: tickpipe under py-spy", backlog.count)
    run = measures.tickpipe(
        target,
        backlog,
        opts.session_timeout_ms,
        ui.update,
        profile_to=opts.profile_to,
        timeout_s=opts.timeout_s,
        verify=False,
        kind="profiled",
        extra_env=opts.worker_env,
    )
    deadline = time.monotonic() + 30  # py-spy writes its file once the worker has exited
    while not opts.profile_to.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not opts.profile_to.exists():
        raise BenchError(f"py-spy wrote no profile to {opts.profile_to}")
    summary = summarise(opts.profile_to)
    profiled_s = run.seconds - float(run.details.get("first_commit_s", 0.0))
    gil = summary.samples / (100 * profiled_s) if profiled_s > 0 else None
    ui.note(f"profile: {summary.samples} samples in {opts.profile_to}")
    text = render(summary)
    if gil is not None:
        text = f"profiled {profiled_s:.1f}s (first commit to last); GIL held {100 * gil:.0f}% of it\n" + text
    return {
        "profiled_seconds": round(profiled_s, 2),
        "gil_busy_fraction": None if gil is None else round(gil, 3),
        "raw_file": str(opts.profile_to),
        "command": measures.PY_SPY_COMMAND,
        "run": run.as_dict(),
        "summary": summary.as_dict(),
        "text": text,
    }
