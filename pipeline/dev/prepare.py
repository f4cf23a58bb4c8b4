"""`python -m pipeline.dev.prepare`: fetch and build the test servers once, before the test-suite runs.

Apache Kafka's jars (Maven, ~10 s) and the FerretDB binary (go build, ~80 s the first time) go into the cache
outside the clone (pipeline/dev/cache.py), in parallel; later runs find them there and take no time. What
cannot be prepared here (no Java 17+, no Maven, no Go) is said in one line each: the suite then falls back
(tests/conftest.py), except under CI=true, where this exits 1 at once.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable

from pipeline.core.errors import PipelineError


def _say(message: str) -> None:
    print(f"test servers: {message}", file=sys.stderr, flush=True)


def main() -> int:
    from pipeline.dev import apache_kafka, ferretdb

    ci = os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")
    jobs: list[tuple[str, Callable[[], object]]] = []
    missing = {
        "Apache Kafka": apache_kafka.missing_prerequisite(),
        "FerretDB": ferretdb.missing_prerequisite(),
    }
    for name, reason in missing.items():
        if reason is not None:
            if ci:
                _say(f"error: CI=true and {name} cannot be prepared: {reason}")
                return 1
            _say(f"{name} skipped: {reason} (the suite falls back; CI would fail)")
    if missing["Apache Kafka"] is None:
        jobs.append(("Apache Kafka", lambda: apache_kafka.ensure_kafka(_say)))
    if missing["FerretDB"] is None:
        jobs.append(("FerretDB", lambda: ferretdb.ensure_ferretdb(_say)))
    failures: list[str] = []

    def run(name: str, job: Callable[[], object]) -> None:
        try:
            job()
        except (PipelineError, OSError) as exc:
            failures.append(f"{name}: {exc}")

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for failure in failures:
        _say(f"error: {failure}")
    if failures:
        return 1
    _say(f"ready ({', '.join(name for name, _ in jobs) or 'none'}; {time.monotonic() - started:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
