"""The cache of built test servers (Apache Kafka's jars, the FerretDB binary), outside the clone.

`${TICKPIPE_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/tickpipe}`. Each entry is built once into a temporary
directory next to its final place and renamed into place when complete, under an exclusive file lock, so
concurrent test runs never see (or corrupt) a half-built entry. Test-only: the worker never uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

STAMP = ".tickpipe-complete"


def cache_root() -> Path:
    explicit = os.environ.get("TICKPIPE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tickpipe"


def fingerprint(*files: Path) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def is_complete(entry: Path, stamp: str) -> bool:
    try:
        return (entry / STAMP).read_text().strip() == stamp
    except OSError:
        return False


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_entry(name: str, stamp: str, build: Callable[[Path], None]) -> Path:
    """The cache entry `name` built by `build(tmpdir)` for this `stamp`, building it once if needed."""
    entry = cache_root() / name
    if is_complete(entry, stamp):
        return entry
    with locked(name):
        if is_complete(entry, stamp):  # another process built it while we waited for the lock
            return entry
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=cache_root()))
        try:
            build(tmp)
            (tmp / STAMP).write_text(stamp + "\n")
            if entry.exists():  # stale (its recipe changed): move it aside, then delete it
                old = Path(tempfile.mkdtemp(prefix=f".{name}.old-", dir=cache_root()))
                entry.rename(old / "entry")
                shutil.rmtree(old, ignore_errors=True)
            tmp.rename(entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return entry
