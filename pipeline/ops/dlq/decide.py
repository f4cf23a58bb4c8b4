"""What the current configuration makes of one dead letter (pure: no I/O).

The message goes through exactly what the worker does with it: its topic's route (`Router`: collection,
decoder built from the current `tick.*` settings, filter) and `make_document`, so a replay stores the same
document the worker would store now, under the message's original `_id` {topic, partition, offset}. Whether
that `_id` is free, holds this very message already, or holds another one is for the writer to find out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pipeline.core.codec import DataError, check_size, make_document
from pipeline.ingest.routing import Route
from pipeline.ops.dlq.letters import REUSED, Letter

Verdict = Literal["store", "failed", "filtered", "skipped", "reused"]
# Values at least this big are measured as BSON before they are accepted (as the worker does).
_SIZE_CHECK_FROM = 512 * 1024


@dataclass(slots=True)
class Decision:
    letter: Letter
    verdict: Verdict
    collection: str = ""
    document: dict[str, Any] | None = None
    kind: str = ""  # verdict failed: the new error kind
    reason: str = ""  # failed: the new reason; skipped, reused: why it is not replayed


def decide(
    letter: Letter, route: Route, subscribed: Callable[[str], bool], ingested_at: datetime
) -> Decision:
    if not subscribed(letter.topic):
        return Decision(
            letter,
            "skipped",
            reason=f"topic {letter.topic!r} is not consumed by this configuration (kafka.topics)",
        )
    if letter.kind == REUSED:
        return Decision(
            letter,
            "reused",
            reason="a different message holds its _id (coordinates_reused): never overwritten, not replayed",
        )
    if letter.truncated:
        size = f" of {letter.length:,} bytes" if letter.length else ""
        where = "this Kafka dead-letter record" if letter.source == "topic" else "the dead_letters copy"
        return Decision(
            letter,
            "skipped",
            reason=f"its value{size} is truncated in {where}: the original bytes are not there to replay",
        )
    if not letter.timestamp_known:
        return Decision(
            letter,
            "skipped",
            reason="its original Kafka timestamp is unknown (no dead_letters copy, and the source record is "
            "gone): not replayed, so that the stored document is not given a wrong timestamp",
        )
    try:
        try:
            fields = route.decode(letter.value)
            if route.keep is not None and not route.keep(fields):
                return Decision(letter, "filtered", collection=route.collection)
            document = make_document(
                fields,
                letter.topic,
                letter.partition,
                letter.offset,
                letter.timestamp_ms,
                letter.key,
                ingested_at,
            )
            if letter.value is not None and len(letter.value) >= _SIZE_CHECK_FROM:
                check_size(letter.value, document)
        except DataError:
            raise
        except Exception as exc:  # a filter or the document failed on this input, as in the worker
            raise DataError("undecodable", f"{type(exc).__name__}: {str(exc)[:200]}") from None
    except DataError as exc:
        return Decision(letter, "failed", collection=route.collection, kind=exc.kind, reason=exc.message)
    return Decision(letter, "store", collection=route.collection, document=document)
