"""Measuring a peer that reports its own acknowledged writes: the Quix Streams sink and the MongoDB Kafka
connector. Their progress is read from their output, one line per acknowledged bulk write (Quix:
"Sent update requests ... messages_processed=N"; the connector at DEBUG: "Mongodb bulk write result:
...insertedCount=N"), timed when the line arrives, instead of counting documents: a count is a scan on both
test servers (~0.5-2 s per 50,000 documents), which would load the very server being measured. The stored
documents are counted once, after the run.
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.system import CpuSample, cpu_usage, memory, meter_for
from bench.workloads import BenchError, Run, Target, kill_process, stop_process, timed_run


class AckLog(threading.Thread):
    """Copies a process's output to its log file; each line matching `pattern` is one acknowledged write of
    int(group 1) messages. `counters` count the lines matching other patterns (e.g. write errors)."""

    def __init__(
        self,
        stream: IO[bytes],
        log_path: Path,
        pattern: re.Pattern[bytes],
        counters: dict[str, re.Pattern[bytes]] | None = None,
    ) -> None:
        super().__init__(name=f"ack-log-{log_path.stem}", daemon=True)
        self.stream = stream
        self.log_path = log_path
        self.pattern = pattern
        self.patterns = dict(counters or {})
        self.counts: dict[str, int] = dict.fromkeys(self.patterns, 0)
        self.events: list[tuple[float, int]] = []  # (monotonic time, messages acknowledged by that write)
        self.acknowledged = 0

    def run(self) -> None:
        with self.log_path.open("ab") as log:
            for line in self.stream:
                now = time.monotonic()
                log.write(line)
                match = self.pattern.search(line)
                if match:
                    n = int(match.group(1))
                    self.events.append((now, n))
                    self.acknowledged += n
                for name, pattern in self.patterns.items():
                    self.counts[name] += len(pattern.findall(line))


@dataclass
class AckedProcess:
    """A measured process whose output an AckLog reads."""

    proc: subprocess.Popen[bytes]
    acks: AckLog
    started: float
    peak_rss_mb: float = 0.0
    rss_samples: list[float] = field(default_factory=list)

    @classmethod
    def spawn(
        cls,
        command: list[str],
        log_path: Path,
        pattern: re.Pattern[bytes],
        counters: dict[str, re.Pattern[bytes]] | None = None,
        **popen: Any,
    ) -> AckedProcess:
        started = time.monotonic()
        proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
        )
        assert proc.stdout is not None
        acks = AckLog(proc.stdout, log_path, pattern, counters)
        acks.start()
        return cls(proc, acks, started)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def sample_memory(self) -> None:
        mem = memory(self.proc.pid)
        if mem is not None:
            self.rss_samples.append(mem.rss_mb)
            self.peak_rss_mb = max(self.peak_rss_mb, mem.hwm_mb)

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (both peers then finish their current write and exit), SIGKILL after timeout_s."""
        stop_process(self.proc, timeout_s)
        self.acks.join(10)
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9."""
        kill_process(self.proc)
        self.acks.join(10)

    def wait_acknowledged(
        self,
        count: int,
        what: str,
        timeout_s: float,
        progress: Callable[[int], None] = lambda _n: None,
        on_first: Callable[[], None] = lambda: None,
    ) -> None:
        """Until `count` messages are acknowledged; `on_first` when the first write is seen."""
        seen_first = False
        next_sample = 0.0
        while self.acks.acknowledged < count:
            progress(self.acks.acknowledged)
            now = time.monotonic()
            if not seen_first and self.acks.events:
                seen_first = True
                on_first()
            if now >= next_sample:
                self.sample_memory()
                next_sample = now + 0.5
            if not self.alive():
                raise BenchError(f"{what} exited with {self.proc.returncode}; see {self.acks.log_path}")
            if now - self.started > timeout_s:
                raise BenchError(
                    f"{what} acknowledged {self.acks.acknowledged}/{count} in {timeout_s:g}s; "
                    f"see {self.acks.log_path}"
                )
            time.sleep(0.05)
        if not seen_first:
            on_first()
        progress(self.acks.acknowledged)


def measure_acked(
    kind: str,
    target: Target,
    count: int,
    what: str,
    start: Callable[[], AckedProcess],
    timeout_s: float,
    progress: Callable[[int], None] = lambda _n: None,
) -> tuple[Run, AckedProcess]:
    """Start the process, wait until it has acknowledged `count` messages, stop it (SIGTERM).

    rate = count / (process start → the last acknowledged write); steady_rate = messages acknowledged after
    the first write / time from the first write to the last (start-up, the JVM's or Python's, and the
    group join excluded). CPU of the process (all threads) over both intervals."""
    meter = meter_for(target.server_pids())
    before = meter.sample()
    process = start()
    meter.add("client", process.pid)
    steady: list[CpuSample] = []
    try:
        process.wait_acknowledged(count, what, timeout_s, progress, lambda: steady.append(meter.sample()))
        after = meter.sample()
        process.sample_memory()
        process.stop()
    except BaseException:
        process.kill()
        raise
    events = process.acks.events
    finished = events[-1][0]
    first_at, first_n = events[0]
    details: dict[str, Any] = {
        "writes": len(events),
        "first_write_s": round(first_at - process.started, 3),
        "acknowledged": process.acks.acknowledged,
        "peak_rss_mb": round(process.peak_rss_mb, 1),
    }
    run = timed_run(
        kind,
        count,
        process.started,
        finished,
        cpu_usage(before, after),
        (first_at, first_n),
        cpu_usage(steady[0], after),
        details,
    )
    return run, process
