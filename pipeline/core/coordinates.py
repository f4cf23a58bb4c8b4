"""A message's Kafka coordinates: what identifies it, what its document's `_id` is, and how logs name it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

TP = tuple[str, int]  # (topic, partition)


def document_id(topic: str, partition: int, offset: int) -> dict[str, Any]:
    """The stored document's `_id`: the same message always gets the same `_id`, so inserts are idempotent.
    (Field order matters to MongoDB's equality on embedded documents: always topic, partition, offset.)"""
    return {"topic": topic, "partition": partition, "offset": offset}


def format_partitions(tps: Iterable[TP]) -> str:
    """petr4[0],petr4[1],vale3[0]"""
    return ",".join(f"{t}[{p}]" for t, p in sorted(tps))
