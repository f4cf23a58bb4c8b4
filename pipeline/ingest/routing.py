"""Where each topic's messages go and how they are read: topic -> collection, decoder, filter, storage plan.

Resolved once per topic from configuration (never from message content). A topic whose name is not a valid
collection name (e.g. `system.x` matched by a regex subscription) gets a decoder that rejects every message:
its messages are dead-lettered (or stop the worker with `errors.tolerance: none`), never lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.core.codec import DataError, Decoder, decode_raw, make_tick_decoder
from pipeline.core.filters import Predicate, compile_filter
from pipeline.core.naming import NameError_, is_topic_pattern
from pipeline.core.storage import CollectionPlan, TimeSeries
from pipeline.ops.config import Settings
from pipeline.ops.logs import get_logger

log = get_logger("pipeline.ingest.routing")


@dataclass(frozen=True, slots=True)
class Route:
    topic: str
    collection: str  # "" when the topic cannot be stored under its name
    decode: Decoder
    keep: Predicate | None  # None: every message is stored


class Router:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._collections = settings.collection_router()
        self._tick_decoder = make_tick_decoder(settings.tick_schema())  # topics without their own mapping
        self._routes: dict[str, Route] = {}
        # collection -> how it is written; read by the writer threads (entries are added, never changed).
        self.plans: dict[str, CollectionPlan] = {}

    def route(self, topic: str) -> Route:
        route = self._routes.get(topic)
        return route if route is not None else self._resolve(topic)

    def fixed_plans(self) -> list[CollectionPlan]:
        """The storage plans of the configured (non-pattern) topics, known before anything is consumed."""
        fixed = [t for t in self.settings.kafka.topics if not is_topic_pattern(t)]
        return [self.plans[r.collection] for r in map(self.route, fixed) if r.collection]

    def plan(self, collection: str) -> CollectionPlan:
        return self.plans.get(collection) or CollectionPlan(collection)

    def _resolve(self, topic: str) -> Route:
        options = self.settings.topic_options(topic)
        if options.format == "raw":
            decode: Decoder = decode_raw
        elif options.fields or options.ts_format is not None:  # this topic's own mapping
            decode = make_tick_decoder(self.settings.tick_schema(topic))
        else:
            decode = self._tick_decoder
        try:
            collection = self._collections.collection_for(topic)
        except NameError_ as exc:
            log.error("topic maps to an invalid collection name", topic=topic, error=str(exc))
            collection, decode = "", _rejecting(f"topic {topic!r} maps to an invalid collection name: {exc}")
        if collection:
            plan = CollectionPlan(
                collection,
                history=options.keeps_history,
                latest=options.keeps_latest,
                timeseries=TimeSeries(ts.granularity, ts.expire_after_s)
                if (ts := options.timeseries)
                else None,
            )
            if self.plans.setdefault(collection, plan) != plan:
                log.warning(
                    "topics sharing a collection have different storage options; the first one wins",
                    topic=topic,
                    collection=collection,
                )
        keep = compile_filter(options.filter) if options.filter is not None else None
        route = self._routes[topic] = Route(topic, collection, decode, keep)
        return route


def _rejecting(reason: str) -> Decoder:
    def decode(value: bytes | None) -> dict[str, Any]:
        raise DataError("invalid_collection_name", reason)

    return decode
