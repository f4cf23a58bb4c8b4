"""The Quix Streams peer of `pipeline bench`: Quix's MongoDBSink reading the benchmark topics into MongoDB.

Runs as a script in its own virtualenv (`.venv-peer`, created by the bench: quixstreams 3.28.1 needs
confluent-kafka<2.13, tickpipe allows newer), so it imports nothing from tickpipe. Everything is Quix's
documented defaults (5 s checkpoints, one ordered `bulk_write` of `UpdateOne(upsert=True)` per partition per
checkpoint), except what a fair comparison needs:

- `document_matcher`: Quix's default matches on the Kafka key, which is the symbol here (every tick of a
  topic would overwrite one document). Like tickpipe's `_id`, the match is on the Kafka coordinates; they
  come from the documented `add_topic_metadata` fields (`__topic`, `__partition`), which the sink adds to
  the value before it calls the matcher.
- the write concern (`--write-concern majority`, the bench's default): w=majority, j=true like tickpipe,
  passed as MongoClient keyword arguments (the sink hands extra arguments to MongoClient); `default` keeps
  Quix's (the client default).
- `session.timeout.ms` 6000 (tickpipe gets the same) with `heartbeat.interval.ms` a quarter of it, as
  tickpipe sets it: librdkafka's default heartbeat (3 s) would let a 3-6 s session expire between two
  heartbeats.

Stop it with SIGTERM (Quix then finishes its checkpoint and exits).
"""

from __future__ import annotations

import argparse
from typing import Any

from quixstreams import Application
from quixstreams.sinks.community.mongodb import MongoDBSink


def coordinates(item: Any) -> dict[str, Any]:
    value = item.value
    return {"_id": f"{value['__topic']}:{value['__partition']}:{item.offset}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--mongo-host", default="127.0.0.1")
    parser.add_argument("--mongo-port", type=int, required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated; collection = topic name")
    parser.add_argument("--group", required=True)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    parser.add_argument("--write-concern", choices=["majority", "default"], default="majority")
    args = parser.parse_args()

    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        use_changelog_topics=False,
        consumer_extra_config={
            "session.timeout.ms": args.session_timeout_ms,
            "heartbeat.interval.ms": max(100, args.session_timeout_ms // 4),
        },
    )
    client_options: dict[str, Any] = {"directConnection": True}
    if args.write_concern == "majority":
        client_options.update(w="majority", journal=True)
    for topic in args.topics.split(","):
        sink = MongoDBSink(
            host=args.mongo_host,
            port=args.mongo_port,
            db=args.db,
            collection=topic,
            document_matcher=coordinates,
            add_topic_metadata=True,
            **client_options,
        )
        app.dataframe(app.topic(topic, value_deserializer="json")).sink(sink)
    app.run()


if __name__ == "__main__":
    main()
