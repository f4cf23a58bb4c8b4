"""Replaying dead letters through the current configuration, exactly once.

Per batch of letters: each is decided (`decide`: the worker's route and document for its topic); the
documents that decode now are inserted into their collections under their original `_id` with the
configured write concern (`MongoSink`, as the worker writes them); only once that is acknowledged are the
letters marked (`replay.state: done`) or removed in `dead_letters`. A replay killed anywhere in between and
run again finds the documents it stored by their `_id`, reads them back and, when they are the same Kafka
message (timestamp and key: `same_message`), counts them as already stored and marks the letters then: each
message is stored once. A different message at that `_id` (`coordinates_reused`) is reported and never
overwritten. Letters that still fail keep their place, with the new reason.

Outcomes per letter: `stored`, `already_stored`, `filtered` (the topic's filter drops it now: nothing to
store; resolved like the worker's filtered offsets), `failed` (the new reason), `reused`, `skipped` (not
replayable: truncated value, unknown original timestamp, a topic this configuration does not consume, not
a valid dead letter). With `dry_run` nothing is written: `would_store` instead of `stored`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pipeline.clients.sink import MongoSink
from pipeline.core.errors import PipelineError
from pipeline.core.naming import is_topic_pattern
from pipeline.core.write_outcome import id_key, same_message
from pipeline.ingest.routing import Router
from pipeline.ops.config import Settings
from pipeline.ops.dlq.decide import Decision, decide
from pipeline.ops.dlq.letters import Letter
from pipeline.ops.dlq.store import DeadLetterStore, Mark

RESOLVED = frozenset({"stored", "already_stored", "filtered"})
REUSED_REASON = (
    "a different message is stored at these coordinates (the topic was re-created, or this is another "
    "cluster): not stored, never overwritten"
)


@dataclass(frozen=True)
class Result:
    letter: Letter
    outcome: str
    collection: str = ""
    detail: str = ""

    def row(self) -> dict[str, Any]:
        letter = self.letter
        return {
            "topic": letter.topic,
            "partition": letter.partition,
            "offset": letter.offset,
            "kind": letter.kind,
            "outcome": self.outcome,
            "collection": self.collection,
            "detail": self.detail,
        }


class ReplayStopped(PipelineError):
    """MongoDB did not take a write (unreachable, or a write concern not confirmed): the replay stops.
    Running it again is safe: what was stored is recognised by its `_id`."""


def subscription_matcher(topics: Iterable[str]) -> Callable[[str], bool]:
    """Does the configuration consume this topic (a plain name, or a `^` pattern: librdkafka's regex)?"""
    plain = {t for t in topics if not is_topic_pattern(t)}
    patterns = [re.compile(t) for t in topics if is_topic_pattern(t)]
    return lambda topic: topic in plain or any(p.search(topic) for p in patterns)


class Replayer:
    def __init__(
        self,
        settings: Settings,
        sink: MongoSink,
        store: DeadLetterStore | None,
        *,
        dry_run: bool = False,
        remove: bool = False,
    ) -> None:
        self.router = Router(settings)
        self.sink = sink
        self.store = store
        self.dry_run = dry_run
        self.remove = remove
        self.subscribed = subscription_matcher(settings.kafka.topics)

    def replay(self, letters: Iterable[Letter], batch_size: int = 500) -> Iterator[list[Result]]:
        """Results batch by batch (each batch stored, then marked, before the next is read)."""
        batch: list[Letter] = []
        seen: set[tuple[str, int, int]] = set()
        for letter in letters:
            if letter.coordinates in seen:
                continue  # (a cursor may return an updated document twice)
            seen.add(letter.coordinates)
            batch.append(letter)
            if len(batch) >= batch_size:
                yield self.batch(batch)
                batch = []
        if batch:
            yield self.batch(batch)

    def batch(self, letters: list[Letter]) -> list[Result]:
        now = datetime.now(UTC)
        decisions = [
            decide(letter, self.router.route(letter.topic), self.subscribed, now) for letter in letters
        ]
        results: dict[tuple[str, int, int], Result] = {}
        to_store: dict[str, list[Decision]] = {}
        for decision in decisions:
            letter = decision.letter
            if decision.verdict == "store":
                to_store.setdefault(decision.collection, []).append(decision)
            elif decision.verdict == "failed":
                detail = f"{decision.kind}: {decision.reason}"
                results[letter.coordinates] = Result(letter, "failed", decision.collection, detail)
            else:
                results[letter.coordinates] = Result(
                    letter, decision.verdict, decision.collection, decision.reason
                )
        for name, group in to_store.items():
            results.update(self._write(name, group))
        ordered = [results[d.letter.coordinates] for d in decisions]
        if not self.dry_run and self.store is not None:
            self.store.mark([m for m in map(self._mark, ordered) if m is not None], self.remove, now)
        return ordered

    # ---- writing ----------------------------------------------------------------------------------------
    def _write(self, name: str, group: list[Decision]) -> dict[tuple[str, int, int], Result]:
        plan = self.router.plan(name)
        out: dict[tuple[str, int, int], Result] = {}
        documents = [d.document for d in group if d.document is not None]
        if self.dry_run:
            stored = self._stored(name, documents, plan.deduplicate) if plan.history else {}
            for decision in group:
                assert decision.document is not None
                found = stored.get(id_key(decision.document["_id"]))
                out[decision.letter.coordinates] = self._found(decision, name, found, "would_store")
            return out
        self.sink.ensure_collection(plan)
        kept: list[Decision] = []
        if plan.history:
            fresh = group
            if plan.deduplicate:  # no unique _id (time-series): read which are stored before inserting
                stored = self._stored(name, documents, True)
                fresh = []
                for decision in group:
                    assert decision.document is not None
                    found = stored.get(id_key(decision.document["_id"]))
                    if found is None:
                        fresh.append(decision)
                    else:
                        out[decision.letter.coordinates] = self._found(decision, name, found, "stored")
            out.update(self._insert(name, fresh))
            kept = [d for d in group if out[d.letter.coordinates].outcome in ("stored", "already_stored")]
        else:
            kept = group
            for decision in group:
                out[decision.letter.coordinates] = Result(decision.letter, "stored", name, "latest tick only")
        if plan.latest and kept:
            self.sink.upsert_latest([d.document for d in kept if d.document is not None])
        return out

    def _stored(
        self, name: str, documents: list[dict[str, Any]], deduplicate: bool
    ) -> dict[Any, Mapping[str, Any]]:
        if deduplicate:
            return self.sink.stored_coordinates(name, documents, None)
        return self.sink.read_back(name, [doc["_id"] for doc in documents])

    def _found(self, decision: Decision, name: str, found: Mapping[str, Any] | None, fresh: str) -> Result:
        assert decision.document is not None
        if found is None:
            return Result(decision.letter, fresh, name)
        if same_message(found, decision.document):
            return Result(decision.letter, "already_stored", name, "this message is stored already")
        return Result(decision.letter, "reused", name, REUSED_REASON)

    def _insert(self, name: str, group: list[Decision]) -> dict[tuple[str, int, int], Result]:
        out: dict[tuple[str, int, int], Result] = {}
        if not group:
            return out
        documents = [d.document for d in group if d.document is not None]
        errors = self.sink.insert(name, documents)
        if errors is None:
            return {d.letter.coordinates: Result(d.letter, "stored", name) for d in group}
        for i in errors.inserted:
            out[group[i].letter.coordinates] = Result(group[i].letter, "stored", name)
        conflicts = errors.duplicates + errors.to_read_back
        if conflicts:
            stored = self.sink.read_back(name, [documents[i]["_id"] for i in conflicts])
            for i in conflicts:
                found = stored.get(id_key(documents[i]["_id"]))
                if found is None:  # a conflict on another unique index of the collection
                    detail = "mongo_rejected: MongoDB error 11000: duplicate key on a unique index"
                    out[group[i].letter.coordinates] = Result(group[i].letter, "failed", name, detail)
                else:
                    out[group[i].letter.coordinates] = self._found(group[i], name, found, "stored")
        for i, code, message in errors.refused:
            detail = f"mongo_rejected: MongoDB error {code}: {message}"
            out[group[i].letter.coordinates] = Result(group[i].letter, "failed", name, detail)
        retry = [i for i in errors.retry] + [i for i, _code, _message in errors.unknown]
        if retry:
            first = group[retry[0]].letter
            raise ReplayStopped(
                f"MongoDB did not take {len(retry)} document(s) of {name} (e.g. {first.where}) for now: "
                "stopped; run the replay again (what is stored is recognised by its _id)"
            )
        return out

    # ---- marking ----------------------------------------------------------------------------------------
    def _mark(self, result: Result) -> Mark | None:
        letter = result.letter
        if result.outcome in RESOLVED:
            return Mark(letter.coordinates, True, result.outcome, result.collection)
        if result.outcome in ("failed", "reused") and not (
            result.outcome == "reused" and letter.kind == "coordinates_reused"
        ):
            kind, _, reason = result.detail.partition(": ")
            if result.outcome == "reused":
                kind, reason = "coordinates_reused", REUSED_REASON
            stage = "write" if kind in ("mongo_rejected", "coordinates_reused") else "decode"
            original = {"kind": letter.kind, "message": letter.message, "stage": letter.stage}
            return Mark(
                letter.coordinates, False, result.outcome, result.collection, kind, reason, stage, original
            )
        return None  # skipped (and known coordinates_reused letters): left as they are


def summarize(results: Iterable[Result]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        counts[result.outcome] = counts.get(result.outcome, 0) + 1
    return counts
