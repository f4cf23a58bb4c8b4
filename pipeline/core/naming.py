"""MongoDB naming rules and topic→collection routing (pure, no I/O).

Collection names come from configuration and from topic names, never from message content. Topic names are
chosen by whoever administers Kafka, so they are still validated against MongoDB's rules before use.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

# MongoDB: database names may not contain these characters and must be shorter than 64 bytes.
_DB_FORBIDDEN = set('/\\. "$*<>:|?\0')
# A full namespace "<db>.<collection>" is limited to 255 bytes (MongoDB 4.4+).
MAX_NAMESPACE_BYTES = 255
# Kafka's own rule for topic names.
_KAFKA_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class NameError_(ValueError):
    """A database, collection or topic name that MongoDB or Kafka would reject."""


def check_database_name(name: str) -> str:
    if not name:
        raise NameError_("database name is empty")
    bad = sorted(set(name) & _DB_FORBIDDEN)
    if bad:
        raise NameError_(f"database name {name!r} contains forbidden character(s) {''.join(bad)!r}")
    if len(name.encode()) >= 64:
        raise NameError_(f"database name {name!r} is 64 bytes or longer")
    return name


def check_collection_name(name: str, database: str = "") -> str:
    if not name:
        raise NameError_("collection name is empty")
    if "$" in name or "\0" in name:
        raise NameError_(f"collection name {name!r} contains '$' or a NUL character")
    if name.startswith("system."):
        raise NameError_(f"collection name {name!r} starts with the reserved prefix 'system.'")
    if name.startswith(".") or name.endswith(".") or ".." in name:
        raise NameError_(f"collection name {name!r} has an empty dot-separated part")
    if database and len(f"{database}.{name}".encode()) > MAX_NAMESPACE_BYTES:
        raise NameError_(f"namespace {database}.{name} is longer than {MAX_NAMESPACE_BYTES} bytes")
    return name


def check_topic_name(name: str) -> str:
    if not _KAFKA_TOPIC.match(name) or name in (".", ".."):
        raise NameError_(f"topic name {name!r} is not a valid Kafka topic name ([A-Za-z0-9._-], 1-249 chars)")
    return name


def dead_letter_topics(template: str | None) -> Callable[[str], bool]:
    """Whether a topic name is one of the dead-letter topics made from `template` ("{topic}.dlq"): a
    pattern subscription must never consume them as ticks (it would dead-letter dead letters, without end)."""
    if not template or "{topic}" not in template:
        return lambda name: name == template
    head, _, tail = template.partition("{topic}")
    pattern = re.compile(re.escape(head) + ".+" + re.escape(tail) + r"\Z")
    return lambda name: pattern.match(name) is not None


def is_topic_pattern(subscription: str) -> bool:
    """librdkafka treats a subscription starting with '^' as a regular expression."""
    return subscription.startswith("^")


class CollectionRouter:
    """Maps a topic to its collection: an explicit map entry, else a template such as "{topic}"."""

    def __init__(self, database: str, template: str, overrides: Mapping[str, str]) -> None:
        self.database = database
        self.template = template
        self.overrides = dict(overrides)
        self._cache: dict[str, str] = {}

    def collection_for(self, topic: str) -> str:
        name = self._cache.get(topic)
        if name is None:
            name = self.overrides.get(topic)
            if name is None:
                name = self.template.replace("{topic}", topic)
            check_collection_name(name, self.database)
            self._cache[topic] = name
        return name
