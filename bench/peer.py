"""The Quix Streams peer: its own virtualenv (created on demand from PyPI) and its measurement.

quixstreams 3.28.1 requires confluent-kafka<2.13 while tickpipe allows newer, so the peer never shares
tickpipe's environment: `ensure_venv` creates `.venv-peer` with `python -m venv` and pip, and `peer` runs
bench/peer_app.py there as a subprocess. Nothing of Quix's code is part of this repository.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.acked import AckedProcess, measure_acked
from bench.workloads import Backlog, BenchError, Run, Target, check_stored, prepare_database, uid

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
    """Quix Streams from process start until its sink has acknowledged writes for the whole backlog
    (bench/acked.py: progress from the sink's own log line per bulk_write, its messages_processed). Its
    commit, at the next checkpoint, is not waited for: in the peer's favour."""
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
    log_path = target.workdir / f"peer-{name}.log"

    def start() -> AckedProcess:
        return AckedProcess.spawn(command, log_path, _FLUSH, cwd=workdir, env=env)

    run, _process = measure_acked("peer", target, backlog.count, "the Quix peer", start, timeout_s, progress)
    run.details["write_concern"] = "w=majority,j=true" if write_concern == "majority" else "Quix default"
    if verify:
        run.details["verified_stored"] = check_stored(
            target, database, backlog.topics, backlog.count, "Quix peer"
        )
    return run
