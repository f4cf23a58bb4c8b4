"""Summaries of a `py-spy record --format raw --threads --gil` profile (collapsed stacks: `a;b;c count`).

py-spy samples the worker from outside the process (100 samples/s here); with --gil it keeps only the
thread holding the GIL at each sample, so the counts are the worker's Python CPU time, split by thread
(time spent waiting on sockets, in librdkafka's own threads or in sleeps is not in it).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_THREAD = re.compile(r"^thread \((?:0x)?[0-9A-Fa-f]+\)(?::\s*(?P<name>.*))?$")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass
class ProfileSummary:
    samples: int = 0
    by_thread: Counter[str] = field(default_factory=Counter)
    self_time: Counter[str] = field(default_factory=Counter)
    total_time: Counter[str] = field(default_factory=Counter)
    # The same, per thread: thread -> function -> samples.
    self_by_thread: dict[str, Counter[str]] = field(default_factory=dict)

    def top(
        self, which: str = "self", n: int = 15, thread: str | None = None
    ) -> list[tuple[str, int, float]]:
        if thread is not None:
            counter = self.self_by_thread.get(thread, Counter())
        else:
            counter = self.self_time if which == "self" else self.total_time
        return [(name, count, 100 * count / max(1, self.samples)) for name, count in counter.most_common(n)]

    def as_dict(self, n: int = 25) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "threads": {name: count for name, count in self.by_thread.most_common()},
            "top_self": [
                {"function": f, "samples": c, "percent": round(p, 1)} for f, c, p in self.top("self", n)
            ],
            "top_total": [
                {"function": f, "samples": c, "percent": round(p, 1)} for f, c, p in self.top("total", n)
            ],
        }


def _function(frame: str) -> str:
    """'insert_many (pymongo/collection.py:950)' -> 'insert_many (pymongo/collection.py)'."""
    match = _FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    return f"{match.group('func')} ({match.group('file')})"


def _thread_name(frame: str) -> str | None:
    match = _THREAD.match(frame.strip())
    if not match:
        return None
    name = match.group("name") or "thread"
    return name.strip()


def summarise(path: Path) -> ProfileSummary:
    summary = ProfileSummary()
    for raw in path.read_text(errors="replace").splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = _thread_name(frames[0])
        if thread is not None:
            frames = frames[1:]
        else:
            thread = "?"
        summary.samples += count
        summary.by_thread[thread] += count
        if not frames:
            continue
        leaf = _function(frames[-1])
        summary.self_time[leaf] += count
        summary.self_by_thread.setdefault(thread, Counter())[leaf] += count
        for name in {_function(frame) for frame in frames}:  # once per stack, even if recursive
            summary.total_time[name] += count
    return summary


def render(summary: ProfileSummary, n: int = 15) -> str:
    """Plain-text tables (for the terminal and for docs/benchmarks.md)."""
    total = max(1, summary.samples)
    lines = [f"{summary.samples} samples (100/s, GIL holder only); by thread:"]
    for name, count in summary.by_thread.most_common():
        lines.append(f"  {100 * count / total:5.1f}%  {name}")
    lines.append("")
    lines.append("top functions by self time (% of all samples):")
    for name, _count, percent in summary.top("self", n):
        lines.append(f"  {percent:5.1f}%  {name}")
    lines.append("")
    lines.append("top functions by total time (inclusive, % of all samples):")
    for name, _count, percent in summary.top("total", n):
        lines.append(f"  {percent:5.1f}%  {name}")
    for thread, counter in summary.self_by_thread.items():
        share = summary.by_thread[thread]
        if share * 20 < total:  # threads under 5% of the samples are not worth a table
            continue
        lines.append("")
        lines.append(f"thread {thread}: top self time (% of this thread's samples)")
        for name, count in counter.most_common(8):
            lines.append(f"  {100 * count / max(1, share):5.1f}%  {name}")
    return "\n".join(lines)
