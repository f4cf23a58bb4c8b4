"""`pipeline bench`: every measurement, side by side, in one run on the same broker and the same backlog, each
on a freshly started MongoDB-compatible server with an empty data directory (bench/servers.py).

Order: the broker is started and the backlog produced once; then `repeat` rounds of
ceiling A, and per MongoDB-compatible server (`mongo`, e.g. SecantusDB then FerretDB): ceiling B, ceiling C,
naive, the MongoDB Kafka connector, the Quix peer (SecantusDB only: its upserts crawl on FerretDB), tickpipe,
and tickpipe scale-out (2 processes in one group) — interleaved so that a change of machine load affects
every measurement alike. Then, per server: the paced latency runs (at `latency_load` x tickpipe's median
steady rate on that server) and the crash comparison (tickpipe and the connector, kill -9 mid-stream);
then the big-backlog RSS run and the profile run, if asked, on the first server. The headline of each
measurement is the median of its rounds.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bench import measures
from bench.crash import CrashOptions
from bench.servers import BROKERS, MONGO_SERVERS, broker, broker_missing, fresh_mongo, mongo_missing
from bench.system import loadavg, machine_info
from bench.workloads import Backlog, BenchError, BenchUnavailable, Progress, Run, Target, median, preload

REPO = Path(__file__).resolve().parent.parent
# Measurement kinds in the order of a round and of the report.
KINDS = ("raw_consume", "raw_insert", "ceiling_c", "naive", "connector", "peer", "tickpipe", "scale_out")
AFTER_ROUNDS = ("latency", "rss_backlog", "crash_tickpipe", "crash_connector")
LABELS = {
    "raw_consume": "ceiling A: raw consume (confluent-kafka, assign)",
    "raw_insert": "ceiling B: raw insert_many (pymongo, 1000/call)",
    "ceiling_c": "ceiling C: consume 1000 → insert_many → sync commit",
    "naive": "naive: poll 1 / insert_one / auto-commit",
    "connector": "MongoDB Kafka connector 2.0.1 (Connect 4.4)",
    "peer": "peer: Quix Streams MongoDBSink",
    "tickpipe": "tickpipe: pipeline run",
    "scale_out": "tickpipe: 2 processes, one group",
    "latency": "tickpipe at paced load",
    "rss_backlog": "tickpipe draining the big backlog",
    "crash_tickpipe": "crash: tickpipe",
    "crash_connector": "crash: connector",
}
PEER_SERVER = "secantus"  # Quix's sink upserts: ~55 docs/s on FerretDB


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
    connector: bool = True
    scale_out: bool = True
    crash: bool = True
    crash_seconds: float = 20.0
    crash_rate: float = 2_000.0
    # False: the latency runs and the crash comparison on the first server only (--quick).
    after_rounds_on_every_server: bool = True
    # Measurement kinds of the rounds run on the first server only (the smoke test keeps CI quick this way).
    first_server_only: tuple[str, ...] = ()
    profile_to: Path | None = None
    session_timeout_ms: int = 6_000
    tickers: tuple[str, ...] = ("petr4", "vale3")
    partitions: int = 3
    broker: str = "apache"
    mongo: tuple[str, ...] = ("secantus", "ferretdb")
    verify: bool = True
    timeout_s: float = 1800.0
    keep_workdir: bool = False
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
    servers: dict[str, Any] = field(default_factory=dict)
    backlog: dict[str, Any] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    def of(self, kind: str, server: str | None = None) -> list[Run]:
        return [r for r in self.runs if r.kind == kind and (server is None or r.server == server)]

    def median_of(self, kind: str, server: str | None, value: Callable[[Run], float | None]) -> float | None:
        present = [v for v in (value(r) for r in self.of(kind, server)) if v is not None]
        return median(present) if present else None

    def median_rate(self, kind: str, server: str | None = None, steady: bool = False) -> float | None:
        return self.median_of(kind, server, lambda r: r.steady_rate if steady else r.rate)

    def mongo_servers(self) -> list[str]:
        return [k for k in self.options.get("mongo", ()) if any(r.server == k for r in self.runs)]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"raw_consume_rate": _round(self.median_rate("raw_consume"))}
        out["servers"] = {server: self.server_summary(server) for server in self.mongo_servers()}
        return out

    def server_summary(self, server: str) -> dict[str, Any]:
        s: dict[str, Any] = {}
        for kind in (*KINDS, "latency", "rss_backlog"):
            if not self.of(kind, server):
                continue
            s[f"{kind}_rate"] = _round(self.median_rate(kind, server))
            steady = self.median_rate(kind, server, steady=True)
            if steady is not None:
                s[f"{kind}_steady_rate"] = _round(steady)
            for key in ("cpu_us_per_msg", "steady_cpu_us_per_msg"):
                value = self.median_of(kind, server, lambda r, k=key: getattr(r, k))  # type: ignore[misc]
                if value is not None:
                    s[f"{kind}_{key}"] = _round(value)
        b_rounds = [r.rate for r in self.of("raw_insert", server)]
        if b_rounds:
            s["raw_insert_rounds"] = [round(v, 1) for v in b_rounds]
            s["raw_insert_spread_pct"] = round(100 * (max(b_rounds) - min(b_rounds)) / median(b_rounds), 1)
        b, c = s.get("raw_insert_rate"), s.get("ceiling_c_rate")
        tp, tp_steady = s.get("tickpipe_rate"), s.get("tickpipe_steady_rate")
        if b and tp_steady:
            s["tickpipe_steady_pct_of_b"] = round(100 * tp_steady / b, 1)
        if b and tp:
            s["tickpipe_pct_of_b"] = round(100 * tp / b, 1)
        if c and tp_steady:
            s["tickpipe_steady_vs_c"] = round(tp_steady / c, 2)
        for peer in ("connector", "peer", "naive"):
            other = s.get(f"{peer}_steady_rate") or s.get(f"{peer}_rate")
            if other and tp_steady:
                s[f"tickpipe_steady_vs_{peer}"] = round(tp_steady / other, 2)
        scale, single = s.get("scale_out_steady_rate"), tp_steady
        if scale and single:
            s["scale_out_vs_one_process"] = round(scale / single, 2)
        rss = [r.details["peak_rss_mb"] for r in self.of("tickpipe", server) if "peak_rss_mb" in r.details]
        if rss:
            s["tickpipe_peak_rss_mb"] = max(rss)
        concurrency = [r.details.get("write_concurrency") for r in self.of("tickpipe", server)]
        if concurrency and all(c is not None for c in concurrency):
            s["tickpipe_write_concurrency"] = concurrency
        by_thread = [
            r.details["steady_us_per_message_by_thread"]
            for r in self.of("tickpipe", server)
            if "steady_us_per_message_by_thread" in r.details
        ]
        if by_thread:
            s["tickpipe_steady_us_by_thread"] = {
                group: _round(median([t[group] for t in by_thread])) for group in by_thread[0]
            }
        latency = self.of("latency", server)
        if latency:
            for key in ("durable_ms", "decode_ms"):
                for q in ("p50", "p99"):
                    s[f"latency_{key}_{q}"] = _round(median([r.details[key][q] for r in latency]))
        big = self.of("rss_backlog", server)
        if big:
            s["rss_backlog_messages"] = big[0].messages
            s["rss_backlog_peak_rss_mb"] = max(r.details.get("peak_rss_mb", 0.0) for r in big)
        for kind in ("crash_tickpipe", "crash_connector"):
            for run in self.of(kind, server):
                s[kind] = {
                    k: run.details.get(k)
                    for k in (
                        "produced",
                        "missing",
                        "duplicates",
                        "redeliveries_seen",
                        "restart_to_all_stored_s",
                    )
                }
        return s

    def as_dict(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "machine": self.machine,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "wall_seconds": round(self.wall_seconds, 1),
            "servers": self.servers,
            "backlog": self.backlog,
            "summary": self.summary(),
            "runs": [run.as_dict() for run in self.runs],
            "profile": self.profile,
            "notes": self.notes,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass
class Step:
    """One measurement of the plan: `server` None = Kafka only, else a fresh server of that kind."""

    title: str
    kind: str
    server: str | None
    total: int | None
    call: Callable[[Target, Progress], Run]
    round: int | None = None


def check_options(opts: BenchOptions) -> list[str]:
    """What cannot run here, one line each (an explicit error, never a silent substitute)."""
    problems: list[str] = []
    if opts.broker not in BROKERS:
        problems.append(f"--broker {opts.broker}: use one of {', '.join(BROKERS)}")
    elif (why := broker_missing(opts.broker)) is not None:
        other = " (or --broker tansu, the pip-only fallback)" if opts.broker == "apache" else ""
        problems.append(f"{BROKERS[opts.broker]} cannot run here: {why}{other}")
    if not opts.mongo:
        problems.append("--mongo: name at least one of " + ", ".join(MONGO_SERVERS))
    for kind in opts.mongo:
        if kind not in MONGO_SERVERS:
            problems.append(f"--mongo {kind}: use {', '.join(MONGO_SERVERS)}")
        elif (why := mongo_missing(kind)) is not None:
            problems.append(f"{MONGO_SERVERS[kind]} cannot run here: {why} (leave it out of --mongo)")
    if opts.connector:
        from bench.connector import missing

        if (why := missing()) is not None:
            problems.append(f"the MongoDB Kafka connector cannot run here: {why} (or --no-connector)")
    return problems


def plan(
    opts: BenchOptions,
    backlog: Backlog,
    results: BenchResults,
    peer_python: Path | None,
    jars: Any,
) -> list[Step]:
    """Every measurement, in order (the latency steps read tickpipe's rate when they run)."""
    session = opts.session_timeout_ms
    crash_opts = CrashOptions(opts.crash_seconds, opts.crash_rate, tickers=opts.tickers)
    steps: list[Step] = []
    n = backlog.count

    def add(
        title: str, kind: str, server: str | None, total: int | None, call: Any, round_: int | None
    ) -> None:
        if round_ and server not in (None, opts.mongo[0]) and kind in opts.first_server_only:
            return
        where = f" on {MONGO_SERVERS[server]}" if server else ""
        tag = f"[{round_}/{opts.repeat}] " if round_ else ""
        steps.append(Step(f"{tag}{title}{where}", kind, server, total, call, round_))

    for round_ in range(1, opts.repeat + 1):
        add(
            "ceiling A: raw consume",
            "raw_consume",
            None,
            n,
            lambda t, p: measures.raw_consume(t, backlog, p),
            round_,
        )
        for server in opts.mongo:
            add(
                "ceiling B: raw insert",
                "raw_insert",
                server,
                n,
                lambda t, p: measures.raw_insert(t, backlog.topics, n, opts.insert_batch, p),
                round_,
            )
            add(
                "ceiling C",
                "ceiling_c",
                server,
                n,
                lambda t, p: measures.ceiling_c(t, backlog, 1000, p),
                round_,
            )
            add(
                "naive",
                "naive",
                server,
                min(opts.naive_count, n),
                lambda t, p: measures.naive(t, backlog, opts.naive_count, p),
                round_,
            )
            if jars is not None and opts.connector:
                from bench.connector import connector

                add(
                    "MongoDB Kafka connector",
                    "connector",
                    server,
                    n,
                    lambda t, p: connector(t, backlog, jars, session, p, opts.timeout_s, opts.verify),
                    round_,
                )
            if peer_python is not None and server == PEER_SERVER:
                from bench.peer import peer

                add(
                    "Quix Streams peer",
                    "peer",
                    server,
                    n,
                    lambda t, p: peer(
                        t,
                        backlog,
                        peer_python,
                        session,
                        opts.peer_write_concern,
                        p,
                        opts.timeout_s,
                        opts.verify,
                    ),
                    round_,
                )
            add("tickpipe", "tickpipe", server, n, lambda t, p: _tickpipe(opts, t, backlog, p), round_)
            if opts.scale_out:
                add(
                    "tickpipe x2 (scale-out)",
                    "scale_out",
                    server,
                    n,
                    lambda t, p: _tickpipe(opts, t, backlog, p, kind="scale_out", workers=2),
                    round_,
                )
    for server in opts.mongo if opts.after_rounds_on_every_server else opts.mongo[:1]:
        if opts.latency_seconds > 0:
            for round_ in range(1, opts.repeat + 1):
                add("latency", "latency", server, None, _latency(opts, results, server), round_)
        if opts.crash:
            from bench.crash import crash

            for kind in ("tickpipe", "connector") if jars is not None and opts.connector else ("tickpipe",):
                add(
                    f"crash: kill -9 of {kind} mid-stream",
                    f"crash_{kind}",
                    server,
                    crash_opts.count,
                    lambda t, p, k=kind: crash(k, t, crash_opts, session, jars, p),
                    None,
                )
    first = opts.mongo[0]
    if opts.rss_backlog:
        add(
            f"RSS: tickpipe draining {opts.rss_backlog:,}",
            "rss_backlog",
            first,
            opts.rss_backlog,
            _big(opts),
            None,
        )
    if opts.profile_to is not None:
        add("profile: tickpipe under py-spy", "profiled", first, n, _profile(opts, backlog, results), None)
    return steps


def _tickpipe(opts: BenchOptions, target: Target, backlog: Backlog, p: Progress, **overrides: Any) -> Run:
    """`pipeline run` with the run's options (`overrides`: kind, workers, profile_to, verify, timeout_s)."""
    arguments: dict[str, Any] = {
        "timeout_s": opts.timeout_s,
        "verify": opts.verify,
        "extra_env": opts.worker_env,
        **overrides,
    }
    return measures.tickpipe(target, backlog, opts.session_timeout_ms, p, **arguments)


def _latency(opts: BenchOptions, results: BenchResults, server: str) -> Callable[[Target, Progress], Run]:
    def paced(target: Target, p: Progress) -> Run:
        steady = results.median_rate("tickpipe", server, steady=True) or results.median_rate(
            "tickpipe", server
        )
        rate = opts.latency_load * (steady or 100.0)
        return measures.latency(
            target,
            rate,
            opts.latency_seconds,
            opts.session_timeout_ms,
            opts.tickers,
            opts.partitions,
            progress=p,
            extra_env=opts.worker_env,
        )

    return paced


def _big(opts: BenchOptions) -> Callable[[Target, Progress], Run]:
    def drain(target: Target, p: Progress) -> Run:
        big = preload(target, opts.rss_backlog, opts.tickers, opts.partitions, seed=9)
        timeout = max(opts.timeout_s, big.count / 200)
        run = _tickpipe(opts, target, big, p, timeout_s=timeout, kind="rss_backlog")
        run.details["produce_seconds"] = round(big.produce_seconds, 2)
        return run

    return drain


def _profile(
    opts: BenchOptions, backlog: Backlog, results: BenchResults
) -> Callable[[Target, Progress], Run]:
    """One more tickpipe run over the same backlog, under py-spy (not part of the measured rounds)."""

    def profiled(target: Target, p: Progress) -> Run:
        from bench.profiling import render, summarise

        assert opts.profile_to is not None
        opts.profile_to.parent.mkdir(parents=True, exist_ok=True)
        opts.profile_to.unlink(missing_ok=True)
        run = _tickpipe(opts, target, backlog, p, profile_to=opts.profile_to, verify=False, kind="profiled")
        deadline = time.monotonic() + 30  # py-spy writes its file once the worker has exited
        while not opts.profile_to.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not opts.profile_to.exists():
            raise BenchError(f"py-spy wrote no profile to {opts.profile_to}")
        summary = summarise(opts.profile_to)
        profiled_s = run.seconds - float(run.details.get("first_commit_s", 0.0))
        gil = summary.samples / (100 * profiled_s) if profiled_s > 0 else None
        text = render(summary)
        if gil is not None:
            text = (
                f"profiled {profiled_s:.1f}s (first commit to last); GIL held {100 * gil:.0f}% of it\n" + text
            )
        results.profile = {
            "server": target.mongo_kind,
            "profiled_seconds": round(profiled_s, 2),
            "gil_busy_fraction": None if gil is None else round(gil, 3),
            "raw_file": str(opts.profile_to),
            "command": measures.PY_SPY_COMMAND,
            "summary": summary.as_dict(),
            "text": text,
        }
        return run

    return profiled


@contextlib.contextmanager
def _workdir(opts: BenchOptions, given: Path | None, ui: UI) -> Iterator[Path]:
    if given is not None:
        yield given
        return
    path = Path(tempfile.mkdtemp(prefix="tickpipe-bench-"))
    ok = False
    try:
        yield path
        ok = True
    finally:
        if ok and not opts.keep_workdir:
            shutil.rmtree(path, ignore_errors=True)
        else:
            ui.note(f"server and process logs kept in {path}")


def run_bench(opts: BenchOptions, target: Target | None = None, ui: UI | None = None) -> BenchResults:
    """Run every measurement. With no `target`, starts the broker (`opts.broker`) for the duration; the
    MongoDB-compatible servers are always the bench's own, one fresh process per measurement."""
    ui = ui or QuietUI()
    wall = time.monotonic()
    problems = check_options(opts) if target is None else check_options_for_target(opts)
    if problems:
        raise BenchUnavailable(problems)
    results = BenchResults(
        options={
            k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in vars(opts).items()
        },
        machine=machine_info(),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    peer_python = None
    if opts.peer and PEER_SERVER in opts.mongo:
        from bench.peer import ensure_venv

        peer_python = ensure_venv(opts.peer_venv, log=ui.note)  # before anything is timed
    elif opts.peer:
        results.notes.append(
            "Quix Streams peer not run: it runs on SecantusDB only (its upserts crawl on FerretDB)"
        )
    else:
        results.notes.append("Quix Streams peer not run (disabled)")
    jars = None
    if opts.connector:
        from bench.connector import ensure_jars

        jars = ensure_jars(ui.note)  # before anything is timed
    if not opts.connector:
        results.notes.append("MongoDB Kafka connector not run (disabled), nor its crash run")
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(_workdir(opts, target.workdir if target else None, ui))
        if target is None:
            ui.note(f"starting the broker ({BROKERS[opts.broker]}) ...")
            target = stack.enter_context(broker(opts.broker, workdir, ui.note))
        results.servers = {
            "broker": BROKERS.get(target.broker, f"the broker at {target.bootstrap}"),
            "mongo": {kind: MONGO_SERVERS[kind] for kind in opts.mongo},
            "fresh_mongo_per_measurement": True,
        }
        results.notes.append(
            f"broker: {results.servers['broker']}, for the whole run; every measurement on a "
            "MongoDB-compatible test server process started for it on an empty data directory, then killed "
            "and its data deleted"
        )
        _run_all(opts, target, results, ui, peer_python, jars)
    results.machine["loadavg_at_end"] = loadavg()
    results.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    results.wall_seconds = time.monotonic() - wall
    return results


def check_options_for_target(opts: BenchOptions) -> list[str]:
    """With a broker given by the caller, only the servers the bench starts itself are checked."""
    problems = [p for p in check_options(opts) if not p.startswith(("--broker", *BROKERS.values()))]
    return problems


def _run_all(
    opts: BenchOptions, target: Target, results: BenchResults, ui: UI, peer_python: Path | None, jars: Any
) -> None:
    ui.step(f"preloading {opts.count:,} ticks", opts.count)
    backlog = preload(target, opts.count, opts.tickers, opts.partitions, progress=ui.update)
    results.backlog = {
        "topics": backlog.topics,
        "partitions": opts.partitions,
        "messages": backlog.count,
        "produce_seconds": round(backlog.produce_seconds, 2),
        "end_offsets": {f"{t}[{p}]": end for (t, p), end in sorted(backlog.ends.items())},
    }
    steps = plan(opts, backlog, results, peer_python, jars)
    ui.plan(len(steps) + 1)
    for step in steps:
        _measure(results, ui, step, target)


def _measure(results: BenchResults, ui: UI, step: Step, target: Target) -> Run:
    ui.step(step.title, step.total)
    started = time.monotonic()
    if step.server is None:
        run = step.call(target, ui.update)
    else:
        with fresh_mongo(step.server, target.workdir) as server:
            run = step.call(target.on(server), ui.update)
            run.details["mongo_server"] = {
                "kind": server.kind,
                "pid": server.pid,
                "fresh_data_directory": str(server.storage),
            }
    run.server, run.round = step.server, step.round
    run.details.setdefault("loadavg_1m_after", loadavg()[0])
    run.details["step_wall_s"] = round(time.monotonic() - started, 1)
    results.runs.append(run)
    ui.note(_line(step.title, run))
    return run


def _line(title: str, run: Run) -> str:
    if run.kind.startswith("crash_"):
        d = run.details
        return (
            f"{title}: produced {d['produced']:,}, missing {d['missing']}, duplicates {d['duplicates']}, "
            f"re-deliveries seen {d['redeliveries_seen']}"
        )
    steady = f", steady {run.steady_rate:,.0f}/s" if run.steady_rate else ""
    cpu = f", {run.steady_cpu_us_per_msg or run.cpu_us_per_msg:.1f} µs CPU/msg" if run.cpu_us_per_msg else ""
    return f"{title}: {run.messages:,} in {run.seconds:.1f}s = {run.rate:,.0f}/s{steady}{cpu}"
