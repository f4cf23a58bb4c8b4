"""The Quix Streams peer: its own virtualenv (created on demand from PyPI) and its measurement.

quixstreams 3.28.1 requires confluent-kafka<2.13 while tickpipe allows newer, so the peer never shares
tickpipe's environment: `ensure_venv` creates `.venv-peer` with `python -m venv` and pip, and `peer` runs
bench/peer_app.py there as a subprocess. Nothing of Quix's code is part of this repository.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from bench.measures import Run
from bench.system import CpuMeter, cpu_seconds, memory
from bench.workloads import Backlog, BenchError, Target, prepare_database, stored_count, uid

QUIX_REQUIREMENT = "quixstreams[mongodb]==3.28.1"
PEER_APP = Path(__file__).with_name("peer_app.py")
_FLUSH = re.compile(rb"Sent update requests to MongoDB; messages_processed=(\d+)")


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def peer_ready(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    check = subprocess.run(
        [str(python), "-c", "import quixstreams, pymongo"], capture_output=True, timeout=120, check=False
    )
    return check.returncode == 0


def ensure_venv(venv: Path, log: Callable[[str], None] = print) -> Path:
    """The peer's virtualenv, created (python -m venv + pip install from PyPI) if missing. Its python."""
    if peer_ready(venv):
        return venv_python(venv)
    log(f"creating the Quix Streams peer's virtualenv in {venv} ({QUIX_REQUIREMENT}, from PyPI) ...")
    if not venv_python(venv).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    result = subprocess.run(
        [
            str(venv_python(venv)),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            QUIX_REQUIREMENT,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not peer_ready(venv):
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-10:])
        raise BenchError(f"cannot install {QUIX_REQUIREMENT} into {venv}:\n{tail}")
    return venv_python(venv)


class _Flushes(threading.Thread):
    """Reads the peer's output: each 'Sent update requests' line is one acknowledged bulk_write."""

    def __init__(self, stream: IO[bytes], log_path: Path) -> None:
        super().__init__(name="peer-output", daemon=True)
        self.stream = stream
        self.log_path = log_path
        self.events: list[tuple[float, int]] = []  # (monotonic time, messages written)
        self.started_at: float | None = None
        self.stored = 0

    def run(self) -> None:
        with self.log_path.open("wb") as log:
            for line in self.stream:
                now = time.monotonic()
                log.write(line)
                match = _FLUSH.search(line)
                if match:
                    n = int(match.group(1))
                    self.events.append((now, n))
                    self.stored += n
                elif self.started_at is None and b"now processing incoming messages" in line:
                    self.started_at = now


def peer(
    target: Target,
    backlog: Backlog,
    python: Path,
    session_timeout_ms: int,
    write_concern: str = "majority",
    progress: Callable[[int], None] = lambda _n: None,
    timeout_s: float = 1800,
    verify: bool = True,
) -> Run:
    """Quix Streams from process start until its sink has acknowledged writes for the whole backlog.

    Progress comes from the sink's own log line per bulk_write (its messages_processed), not from counting
    documents (a scan on the test server, which would slow down the very server being measured); the
    stored documents are counted once at the end. steady_rate: messages written after the first flush /
    time from the first flush to the last.
    """
    name = uid()
    database, group = f"bench_peer_{name}", f"bench-peer-{name}"
    prepare_database(target, database, backlog.topics)
    workdir = target.workdir / f"peer-{name}"
    workdir.mkdir(parents=True, exist_ok=True)
    host, port = target.mongo_address
    command = [
        str(python),
        str(PEER_APP),
        "--broker",
        target.bootstrap,
        "--mongo-host",
        host,
        "--mongo-port",
        str(port),
        "--db",
        database,
        "--topics",
        ",".join(backlog.topics),
        "--group",
        group,
        "--session-timeout-ms",
        str(session_timeout_ms),
        "--write-concern",
        write_concern,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIPELINE_", "PYTHON", "VIRTUAL_ENV"))}
    meter = CpuMeter(target.server_pids()).start()
    started = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    flushes = _Flushes(proc.stdout, target.workdir / f"peer-{name}.log")
    flushes.start()
    peak_rss = 0.0
    peer_cpu = 0.0
    try:
        while flushes.stored < backlog.count:
            progress(flushes.stored)
            mem = memory(proc.pid)
            if mem is not None:
                peak_rss = max(peak_rss, mem.hwm_mb)
                peer_cpu = cpu_seconds(proc.pid)
            if proc.poll() is not None:
                raise BenchError(f"the Quix peer exited with {proc.returncode}; see {flushes.log_path}")
            if time.monotonic() - started > timeout_s:
                raise BenchError(f"the Quix peer stored {flushes.stored}/{backlog.count} in {timeout_s:g}s")
            time.sleep(0.05)
        finished = flushes.events[-1][0]
        progress(flushes.stored)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        raise
    finally:
        flushes.join(10)
    cpu = meter.stop()
    seconds = finished - started
    first_at, first_n = flushes.events[0]
    steady = (backlog.count - first_n) / (finished - first_at) if finished > first_at else None
    details = {
        "write_concern": "w=majority,j=true" if write_concern == "majority" else "Quix default",
        "flushes": len(flushes.events),
        "first_flush_s": round(first_at - started, 3),
        "started_s": round(flushes.started_at - started, 3) if flushes.started_at else None,
        "peak_rss_mb": round(peak_rss, 1),
        "peer_cpu_cores": round(peer_cpu / seconds, 3),
        "sink_acknowledged": flushes.stored,
    }
    if verify:
        stored = stored_count(target, database, backlog.topics)
        details["verified_stored"] = stored
        if stored != backlog.count:
            raise BenchError(f"Quix peer: {stored} documents stored, expected {backlog.count}")
    return Run("peer", backlog.count, seconds, backlog.count / seconds, steady, cpu, details)
