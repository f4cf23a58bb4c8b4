"""End to end in a real browser: Debian's headless Chromium, driven by Playwright (its own browser download
is never used: `executable_path` is /usr/bin/chromium), loads the page of `pipeline serve` over ticks the
real worker stored, checks that a candle is drawn for every bar of the stored ticks, then produces new
ticks while the worker runs and sees the page update by itself (server-sent events), and saves a
screenshot under the test's temporary directory.

Chromium comes from `scripts/install-chromium` (run by scripts/test, so by .ci/run). Without it the test
skips saying so, except under CI=true, where it fails. `TICKPIPE_SCREENSHOT=docs/http-page.png` also copies
the screenshot there (how the README's picture is made).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from pipeline.dev.process import free_port
from tests.harness import REPO, Scenario, thread_worker, wait_for
from tests.query_data import Sent, ends_of, produce_known, run_worker_until_committed, series

pytestmark = pytest.mark.servers

CHROMIUM = Path(os.environ.get("TICKPIPE_CHROMIUM", "/usr/bin/chromium"))
# What works on these machines (closed network, root): no sandbox, no GPU, no background connections.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INTERVAL = "5m"


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    if _ci():
        pytest.fail(f"CI=true: the browser test must run, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Any]:
    """A headless Chromium with a fresh profile (a Playwright browser context)."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is not installed (scripts/install-chromium installs Debian's chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (the dev extra: scripts/bootstrap dev)")
    profile = tmp_path / "chromium-profile"  # a fresh, empty profile
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_FLAGS,
            headless=True,
            viewport={"width": 1400, "height": 820},
        )
        try:
            yield context
        finally:
            context.close()


def bar_start(ts: datetime) -> datetime:
    return ts.replace(minute=ts.minute - ts.minute % 5, second=0, microsecond=0)


def expected_bars(sent: list[Sent]) -> dict[str, tuple[float, float, int]]:
    """bar start (ISO, as the API writes it) -> (open, close, trades), in the tick order."""
    bars: dict[datetime, list[Sent]] = {}
    for tick in sorted(sent, key=lambda t: (t.ts, t.partition, t.offset)):
        bars.setdefault(bar_start(tick.ts), []).append(tick)
    return {
        start.isoformat(timespec="milliseconds").replace("+00:00", "Z"): (ts[0].price, ts[-1].price, len(ts))
        for start, ts in sorted(bars.items())
    }


def later_series(after: datetime, count: int) -> list[Sent]:
    """New ticks, one a minute after the stored ones: new bars appear."""
    return [
        Sent(
            "PETR4", after + timedelta(minutes=1 + i, milliseconds=7 * i), round(41 + math.cos(i / 3), 2), 300
        )
        for i in range(count)
    ]


class Serve:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.handle = log.open("w")
        env = {**env, "PIPELINE_HTTP__PORT": str(self.port), "PIPELINE_HTTP__LIVE_POLL_S": "0.3"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline", "serve"], env=env, stdout=self.handle, stderr=subprocess.STDOUT
        )

    def wait(self) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return httpx.get(self.url + "/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(up, timeout=30, interval=0.2, what="pipeline serve")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)
        finally:
            self.handle.close()


def drawn(page: Any) -> dict[str, Any]:
    """What the chart shows: Plotly's data and the SVG candles it drew."""
    return dict(
        page.evaluate(
            """() => {
              const chart = document.getElementById('chart');
              const candles = chart.data[0];
              return {
                starts: candles.x, open: candles.open, close: candles.close,
                volume: chart.data[2].y,
                candlePaths: chart.querySelectorAll('.trace.boxes path').length,
                volumeBars: chart.querySelectorAll('.trace.bars path').length,
                renders: window.tickpipe.renders, events: window.tickpipe.events,
                live: document.getElementById('live').textContent,
                firstRow: document.querySelector('#ticks tbody tr td:nth-child(2)').textContent,
                rows: document.querySelectorAll('#ticks tbody tr').length,
              };
            }"""
        )
    )


def test_the_page_draws_the_stored_candles_and_follows_new_ticks(
    chromium: Any, make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(tickers=("petr4",), partitions=3)
    stored = produce_known(sc.servers.bootstrap, sc.topics[0], series("PETR4", 180, 29, 0, 38.0), 3)
    sc.ends.update(ends_of(stored))
    run_worker_until_committed(sc, sc.settings(), dict(sc.ends))
    want = expected_bars(stored)
    assert len(want) == 18

    serve = Serve(
        {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")} | sc.env(),
        tmp_path / "serve.log",
    )
    try:
        serve.wait()
        page = chromium.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{serve.url}/?symbol=petr4&interval={INTERVAL}")
        page.wait_for_function("document.body.dataset.state === 'ready'", timeout=30_000)
        page.wait_for_function("document.getElementById('live').textContent === 'live'", timeout=15_000)
        shown = drawn(page)
        # One candle per bar of the stored ticks, with the open and close of their first and last tick.
        assert shown["starts"] == list(want)
        assert [(o, c) for o, c in zip(shown["open"], shown["close"], strict=True)] == [
            (o, c) for o, c, _ in want.values()
        ]
        assert shown["candlePaths"] == len(want) and shown["volumeBars"] == len(want)
        newest = max(stored, key=lambda t: (t.ts, t.partition, t.offset))
        assert shown["firstRow"] == f"{newest.price:.2f}" and shown["rows"] == 20
        renders = shown["renders"]

        # New ticks while the worker runs: the page updates by itself.
        fresh = later_series(newest.ts, 16)
        with thread_worker(sc.settings()) as worker:
            placed = produce_known(sc.servers.bootstrap, sc.topics[0], fresh, 3)
            ends = ends_of(stored + placed)
            wait_for(
                lambda: sc.committed(list(ends)) == ends,
                timeout=120,
                interval=0.3,
                what="new ticks committed",
            )
            assert worker.stop() == 0
        after = expected_bars(stored + placed)
        assert len(after) > len(want)
        page.wait_for_function(f"window.tickpipe.bars.length === {len(after)}", timeout=30_000)
        shown = drawn(page)
        assert shown["starts"] == list(after)
        assert [(o, c) for o, c in zip(shown["open"], shown["close"], strict=True)] == [
            (o, c) for o, c, _ in after.values()
        ]
        assert shown["candlePaths"] == len(after)
        last = max(placed, key=lambda t: (t.ts, t.partition, t.offset))
        page.wait_for_function(
            f"document.querySelector('#ticks tbody tr td:nth-child(2)').textContent === '{last.price:.2f}'",
            timeout=10_000,
        )
        assert shown["renders"] > renders and shown["events"] >= 2 and shown["live"] == "live"
        assert errors == []
        screenshot = tmp_path / "http-page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 20_000
        target = os.environ.get("TICKPIPE_SCREENSHOT")
        if target:
            shutil.copyfile(screenshot, REPO / target)
    finally:
        code = serve.stop()
    assert code == 0, serve.log.read_text()
