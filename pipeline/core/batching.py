"""Batch accumulation by count and time (pure: the clock is passed in).

A batch groups what one flush makes durable: documents per collection, dead letters, and the highest
offset handled per partition (stored, dead-lettered or filtered alike: all three are committed once durable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.core.coordinates import TP
from pipeline.core.deadletter import DeadLetter


@dataclass(slots=True)
class Batch:
    seq: int
    created: float
    documents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The raw value of each document, parallel to `documents`, kept by reference for dead-lettering
    # documents that MongoDB rejects at write time (original bytes preserved).
    values: dict[str, list[bytes | None]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    first_offsets: dict[TP, int] = field(default_factory=dict)
    last_offsets: dict[TP, int] = field(default_factory=dict)
    # Assignment epoch of each partition when its messages were consumed (see the commit gate).
    epochs: dict[TP, int] = field(default_factory=dict)
    consumed: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    # collection -> topic -> documents (so the writer counts per topic without a pass over documents)
    topics: dict[str, dict[str, int]] = field(default_factory=dict)
    size: int = 0

    def _note(self, tp: TP, offset: int, epoch: int) -> None:
        self._note_span(tp, epoch, offset, offset, 1)

    def _note_span(self, tp: TP, epoch: int, first: int, last: int, count: int) -> None:
        """`count` messages of one partition, offsets `first`..`last` (increasing), handled in this batch.
        Spans of one partition may be noted in any order (a run of documents is noted after the filtered
        messages and dead letters among them): the first offset is the lowest noted."""
        known = self.first_offsets.get(tp)
        if known is None:
            self.first_offsets[tp] = first
            self.epochs[tp] = epoch
        elif first < known:
            self.first_offsets[tp] = first
        if last > self.last_offsets.get(tp, -1):
            self.last_offsets[tp] = last
        topic = tp[0]
        self.consumed[topic] = self.consumed.get(topic, 0) + count
        self.size += count

    def add_document(
        self, collection: str, document: dict[str, Any], value: bytes | None, tp: TP, offset: int, epoch: int
    ) -> None:
        docs = self.documents.get(collection)
        if docs is None:
            docs = self.documents[collection] = []
            self.values[collection] = []
            self.topics[collection] = {}
        docs.append(document)
        self.values[collection].append(value)
        counts = self.topics[collection]
        counts[tp[0]] = counts.get(tp[0], 0) + 1
        self._note(tp, offset, epoch)

    def columns(self, collection: str) -> tuple[list[dict[str, Any]], list[bytes | None]]:
        """The documents and values lists of a collection, to append to directly (then `note_run`)."""
        docs = self.documents.get(collection)
        if docs is None:
            docs = self.documents[collection] = []
            self.values[collection] = []
            self.topics[collection] = {}
        return docs, self.values[collection]

    def note_run(self, tp: TP, epoch: int, first: int, last: int, count: int, collection: str) -> None:
        """`count` documents of one partition, offsets `first`..`last` (increasing), appended to
        `collection`'s `columns`: `add_document`'s book-keeping once per run instead of once per message."""
        self._note_span(tp, epoch, first, last, count)
        counts = self.topics[collection]
        counts[tp[0]] = counts.get(tp[0], 0) + count

    def add_dead_letter(self, letter: DeadLetter, tp: TP, offset: int, epoch: int) -> None:
        self.dead_letters.append(letter)
        self._note(tp, offset, epoch)

    def add_filtered(self, tp: TP, offset: int, epoch: int) -> None:
        self.filtered[tp[0]] = self.filtered.get(tp[0], 0) + 1
        self._note(tp, offset, epoch)

    def document_count(self) -> int:
        return sum(len(docs) for docs in self.documents.values())

    def next_offsets(self) -> dict[TP, int]:
        """Offset+1 of the highest message per partition."""
        return {tp: offset + 1 for tp, offset in self.last_offsets.items()}

    def spans(self) -> dict[TP, tuple[int, int]]:
        """(first, last) offset of what this batch holds of each partition: what the commit gate tracks."""
        return {tp: (first, self.last_offsets[tp]) for tp, first in self.first_offsets.items()}


class BatchBuilder:
    """Accumulates one batch at a time; `due` says when to hand it to the writer."""

    def __init__(self, max_messages: int, max_wait_s: float) -> None:
        self.max_messages = max_messages
        self.max_wait_s = max_wait_s
        self._seq = 0
        self.current: Batch | None = None

    def open(self, now: float) -> Batch:
        """The batch to add to (a new one if none is open)."""
        if self.current is None:
            self._seq += 1
            self.current = Batch(seq=self._seq, created=now)
        return self.current

    @property
    def size(self) -> int:
        return self.current.size if self.current is not None else 0

    def room(self) -> int:
        return self.max_messages - self.size

    def full(self) -> bool:
        return self.size >= self.max_messages

    def due(self, now: float) -> bool:
        batch = self.current
        if batch is None or batch.size == 0:
            return False
        return batch.size >= self.max_messages or now - batch.created >= self.max_wait_s

    def seconds_until_due(self, now: float) -> float | None:
        batch = self.current
        if batch is None or batch.size == 0:
            return None
        return max(0.0, batch.created + self.max_wait_s - now)

    def take(self) -> Batch | None:
        batch, self.current = self.current, None
        if batch is None or batch.size == 0:
            return None
        return batch
