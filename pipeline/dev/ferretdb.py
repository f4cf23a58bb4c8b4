"""FerretDB 1.24.2 (SQLite backend) as the second MongoDB-compatible test server.

Test-only. `servers/ferretdb/` is a small Go module (a wrapper `main` around FerretDB's embeddable
`ferretdb` package, pinned by go.mod/go.sum to `github.com/FerretDB/FerretDB v1.24.2`); it is built once
with `go build` from the Go module proxy into the cache outside the clone (`pipeline.dev.cache`,
`ferretdb-1.24.2/`, ~40 MB, ~80 s the first time). The server keeps its data in SQLite files under its
storage directory, so kill -9 and a restart on the same directory is a crash and restart.

Differences from MongoDB that matter here (TESTING.md): not a replica set (`hello` has no `setName`), a
duplicate-key error names neither the index nor the key, and it lacks some operators and commands (the
test-suite probes for them: tests/capabilities.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.core.errors import PipelineError
from pipeline.dev.cache import cache_root, ensure_entry, fingerprint, is_complete
from pipeline.dev.servers import MongoServer

FERRETDB_VERSION = "1.24.2"
SOURCE = Path(__file__).resolve().parent / "servers" / "ferretdb"
SOURCE_FILES = ("main.go", "go.mod", "go.sum")
CACHE_NAME = f"ferretdb-{FERRETDB_VERSION}"
BINARY = "tickpipe-ferretdb"


def go_command() -> str | None:
    found = shutil.which("go")
    if found:
        return found
    for candidate in (Path("/usr/local/go/bin/go"), Path.home() / "go" / "bin" / "go"):
        if candidate.exists():
            return str(candidate)
    return None


def _stamp() -> str:
    return fingerprint(*(SOURCE / name for name in SOURCE_FILES))


def missing_prerequisite() -> str | None:
    """Why FerretDB cannot run here (Go missing and the binary not built yet), or None."""
    if is_complete(cache_root() / CACHE_NAME, _stamp()):
        return None
    if go_command() is None:
        return "Go is not installed (no go on PATH) and the FerretDB test server is not built yet"
    return None


def ensure_ferretdb(log: Callable[[str], None] = lambda _m: None) -> Path:
    """The FerretDB test server binary, built with `go build` on first use."""

    def build(target: Path) -> None:
        go = go_command()
        if go is None:
            raise PipelineError("Go is needed once to build the FerretDB test server")
        log(f"building FerretDB {FERRETDB_VERSION} with go build into {cache_root() / CACHE_NAME} (once) ...")
        started = time.monotonic()
        # Build from a copy: the package directory may be read-only, and go.sum must never be rewritten.
        src = target / "src"
        shutil.copytree(SOURCE, src, ignore=shutil.ignore_patterns("__pycache__"))
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=readonly -buildvcs=false"}
        result = subprocess.run(
            [go, "build", "-trimpath", "-o", str(target / BINARY), "."],
            cwd=src,
            env=env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=1200,
        )
        shutil.rmtree(src, ignore_errors=True)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
            raise PipelineError(f"go build of the FerretDB test server failed:\n{tail}")
        log(f"FerretDB {FERRETDB_VERSION} built in {time.monotonic() - started:.0f}s")

    return ensure_entry(CACHE_NAME, _stamp(), build) / BINARY


class FerretDB(MongoServer):
    """One FerretDB process on 127.0.0.1 (same interface as servers.EmbeddedMongo)."""

    name = "FerretDB"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        storage: Path | None = None,
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        super().__init__(workdir, port, storage, "ferretdb")
        self.binary = ensure_ferretdb(log)

    @property
    def log_path(self) -> Path:
        return self.workdir / f"ferretdb-{self.port}.log"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "-listen",
            f"127.0.0.1:{self.port}",
            "-data",
            str(self.storage),
            "-log-level",
            "warn",
        ]
