"""Micro-benchmark: the cost per message of the tick decoder with a field mapping, a timestamp format and
exact (Decimal128) prices, against the default decoder, on the same ticks.

    python -m bench.decode_mapping                      # 20,000 ticks, 15 interleaved rounds
    python -m bench.decode_mapping --baseline 931bc38~  # also the decoder of that git revision
    python -m bench.decode_mapping --instructions --count 2000 --baseline 931bc38~
                                                        # instructions per message (valgrind): exact

Each variant decodes the same simulated ticks (the simulator's random walk; ~75-byte JSON objects), written
with the field names and timestamp format it expects. Rounds are interleaved (every variant once per round,
in a rotating order) so that a noisy machine slows all of them alike. Reported per variant: the best round
(the least disturbed one: what the code costs) and the median round, each relative to the first variant.
Time is this thread's CPU time (`time.thread_time`), so that waiting for a busy machine's cores is not
counted; on a shared machine it still varies by 10% or more between runs, so `--instructions` counts the
instructions per message under valgrind instead (the same on every run). Not a timed test: the numbers
are for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from pipeline.core.codec import Decoder, TickSchema, make_tick_decoder
from pipeline.core.timefmt import EPOCH, iso_utc
from pipeline.dev.simulator import RandomWalk

FEED_NAMES = {"symbol": "ticker", "price": "last", "volume": "qty", "ts": "time"}


@dataclass
class Variant:
    key: str
    name: str
    decode: Decoder
    values: list[bytes]


def _ticks(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    walks = [RandomWalk("PETR4", rng), RandomWalk("VALE3", rng)]
    start = datetime(2026, 11, 25, 13, tzinfo=UTC)
    ticks = []
    for i in range(count):
        walk = walks[i % 2]
        price, volume = walk.next()
        ticks.append({"symbol": walk.symbol, "price": price, "volume": volume, "at": start + timedelta(0, i)})
    return ticks


def _encode(ticks: list[dict[str, Any]], names: dict[str, str], ts: Callable[[datetime], Any]) -> list[bytes]:
    return [
        orjson.dumps(
            {
                names["symbol"]: t["symbol"],
                names["price"]: t["price"],
                names["volume"]: t["volume"],
                names["ts"]: ts(t["at"]),
            }
        )
        for t in ticks
    ]


def _nested(ticks: list[dict[str, Any]]) -> list[bytes]:
    return [
        orjson.dumps(
            {
                "instrument": {"code": t["symbol"]},
                "quote": {"last": t["price"], "qty": t["volume"]},
                "time": iso_utc(t["at"]),
            }
        )
        for t in ticks
    ]


def _epoch_ms(at: datetime) -> int:
    return (at - EPOCH) // timedelta(milliseconds=1)


def _baseline_decoder(revision: str) -> Decoder:
    """make_tick_decoder(TickSchema()) of pipeline/core/codec.py at a git revision (imported from a copy)."""
    source = subprocess.run(
        ["git", "show", f"{revision}:pipeline/core/codec.py"], capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="codec-baseline-")) / "codec_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("codec_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["codec_baseline"] = module
    spec.loader.exec_module(module)
    decoder: Decoder = module.make_tick_decoder(module.TickSchema())
    return decoder


def variants(count: int, seed: int, baseline: str | None) -> list[Variant]:
    ticks = _ticks(count, seed)
    plain = {name: name for name in FEED_NAMES}
    canonical = _encode(ticks, plain, iso_utc)
    out = [
        Variant(
            "default", "default (symbol/price/volume/ts, ISO ts)", make_tick_decoder(TickSchema()), canonical
        ),
        Variant(
            "mapped",
            "mapped: ticker/last/qty/time",
            make_tick_decoder(TickSchema(fields=FEED_NAMES)),
            _encode(ticks, FEED_NAMES, iso_utc),
        ),
        Variant(
            "mapped-epoch",
            "mapped + ts_format epoch_ms",
            make_tick_decoder(TickSchema(fields=FEED_NAMES, ts_format="epoch_ms")),
            _encode(ticks, FEED_NAMES, _epoch_ms),
        ),
        Variant(
            "nested",
            "mapped, nested paths (instrument.code, quote.last, quote.qty)",
            make_tick_decoder(
                TickSchema(
                    fields={
                        "symbol": "instrument.code",
                        "price": "quote.last",
                        "volume": "quote.qty",
                        "ts": "time",
                    }
                )
            ),
            _nested(ticks),
        ),
        Variant(
            "nested-extras",
            "default, with the same two nested objects as extra fields",
            make_tick_decoder(TickSchema()),
            [v[:-1] + b"," + n[1:] for v, n in zip(canonical, _nested(ticks), strict=True)],
        ),
        Variant(
            "decimal",
            "price_type decimal128",
            make_tick_decoder(TickSchema(price_type="decimal128")),
            canonical,
        ),
        Variant(
            "decimal-reparse",
            "price_type decimal128, re-parsed (a backslash in the value)",
            make_tick_decoder(TickSchema(price_type="decimal128")),
            [v[:-1] + b',"note":"a\\/b"}' for v in canonical],
        ),
    ]
    if baseline:
        out.insert(1, Variant("baseline", f"default at {baseline}", _baseline_decoder(baseline), canonical))
    return out


def _round(variant: Variant) -> float:
    decode = variant.decode
    started = time.thread_time()
    for value in variant.values:
        decode(value)
    return (time.thread_time() - started) / len(variant.values)


def run(count: int, rounds: int, seed: int, baseline: str | None) -> list[tuple[str, list[float]]]:
    """Per variant, the cost per message of each round (seconds)."""
    chosen = variants(count, seed, baseline)
    for variant in chosen:
        _round(variant)  # warm-up (and every value must decode: the accepting path is measured)
    samples: dict[str, list[float]] = {v.name: [] for v in chosen}
    for r in range(rounds):
        order = chosen[r % len(chosen) :] + chosen[: r % len(chosen)]
        for variant in order:
            samples[variant.name].append(_round(variant))
    return [(v.name, samples[v.name]) for v in chosen]


def instructions(args: argparse.Namespace) -> list[tuple[str, float]]:
    """Instructions per message of each variant, counted by valgrind's callgrind (deterministic: immune to
    a busy machine): this module run with --decode-only, once with 0 loops and once with `--loops`, the
    difference divided by the messages decoded."""
    if shutil.which("valgrind") is None:
        raise SystemExit("--instructions needs valgrind")
    keys = [v.key for v in variants(10, args.seed, args.baseline)]
    chosen = [k for k in keys if not args.only or k in args.only]
    out = []
    for key in chosen:
        counts = []
        for loops in (0, args.loops):
            command = [
                "valgrind",
                "--tool=callgrind",
                "--callgrind-out-file=/dev/null",
                sys.executable,
                "-m",
                "bench.decode_mapping",
                "--decode-only",
                key,
                "--loops",
                str(loops),
                "--count",
                str(args.count),
                "--seed",
                str(args.seed),
                *(["--baseline", args.baseline] if args.baseline else []),
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            match = re.search(r"Collected : (\d+)", result.stderr)
            assert match is not None, result.stderr[-500:]
            counts.append(int(match.group(1)))
        name = next(v.name for v in variants(10, args.seed, args.baseline) if v.key == key)
        out.append((name, (counts[1] - counts[0]) / (args.loops * args.count)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.decode_mapping", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--count", type=int, default=20_000, help="ticks per variant (default 20000)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--baseline", metavar="REV", help="also measure the default decoder of a git revision"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count instructions per message with valgrind instead of timing (slow, deterministic)",
    )
    parser.add_argument("--only", action="append", default=[], metavar="KEY", help="only these variants")
    parser.add_argument("--loops", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--decode-only", metavar="KEY", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.decode_only:  # (run under valgrind by --instructions)
        variant = next(v for v in variants(args.count, args.seed, args.baseline) if v.key == args.decode_only)
        for _ in range(args.loops):
            for value in variant.values:
                variant.decode(value)
        return 0
    if args.instructions:
        counted = instructions(args)
        print(
            "tick decoder instructions per message (valgrind callgrind, "
            f"{args.count:,} ticks x {args.loops}); Python {platform.python_version()} {platform.machine()}"
        )
        print(f"{'variant':<64} {'instr/msg':>10} {'vs first':>10}")
        for name, count in counted:
            print(f"{name:<64} {count:>10,.0f} {count / counted[0][1] - 1:>+10.1%}")
        return 0
    results = run(args.count, args.rounds, args.seed, args.baseline)
    if args.only:
        keys = {v.name: v.key for v in variants(10, args.seed, args.baseline)}
        results = [r for r in results if keys[r[0]] in args.only]
    best0, median0 = min(results[0][1]), statistics.median(results[0][1])
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(
        f"tick decoder cost per message: {args.count:,} ticks x {args.rounds} interleaved rounds; "
        f"Python {platform.python_version()} {platform.machine()}, {os.cpu_count()} CPUs"
        + (f", load average {load[0]:.2f}" if load else "")
    )
    print(f"{'variant':<64} {'best ns':>8} {'vs first':>10} {'median ns':>10} {'vs first':>10}")
    for name, rounds in results:
        best, median = min(rounds), statistics.median(rounds)
        print(
            f"{name:<64} {best * 1e9:>8.0f} {best / best0 - 1:>+10.1%} "
            f"{median * 1e9:>10.0f} {median / median0 - 1:>+10.1%}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
