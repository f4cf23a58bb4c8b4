"""Micro-benchmark: the worker's own CPU per message on the hot path, stage by stage, without servers.

    python -m bench.put_cost                 # 20,000 ticks, 15 rounds
    python -m bench.put_cost --count 50000 --rounds 25

The same simulated ticks (the simulator's random walk, the producer's JSON), as real
`confluent_kafka.Message` objects of two topics with three partitions each, go through:
  decode    the default tick decoder alone (JSON parse, checks, `ts` parse)
  put       `Converter.put` into a `Batch`: decode, the stored document, batch book-keeping
  bson      `bson.encode` of each stored document: what PyMongo's insert_many does on a writer thread
Time is this thread's CPU time (`time.thread_time`); rounds are interleaved and the best and median round
are printed in µs per message. The worker's figure in `pipeline bench` (all threads, from /proc) adds
librdkafka's fetch threads, the consume call, the commit and the write round trips to these. Not a timed
test: the numbers are for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import bson
from confluent_kafka import Message

from pipeline.core.batching import Batch
from pipeline.core.codec import TickSchema, make_tick_decoder
from pipeline.core.timefmt import iso_utc
from pipeline.dev.simulator import RandomWalk, encode_tick
from pipeline.ingest.convert import Converter
from pipeline.ingest.routing import Router
from pipeline.ops.config import load_settings

TOPICS = ("petr4", "vale3")
PARTITIONS = 3


def messages(count: int, seed: int) -> list[Message]:
    """`count` ticks in runs of 500 per partition, as librdkafka hands them over."""
    rng = random.Random(seed)
    walks = {topic: RandomWalk(topic.upper(), rng) for topic in TOPICS}
    start = datetime(2026, 11, 25, 13, tzinfo=UTC)
    produced_ms = int(start.timestamp() * 1000)
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for i in range(count):
        run = i // 500
        topic, partition = TOPICS[run % len(TOPICS)], run // len(TOPICS) % PARTITIONS
        price, volume = walks[topic].next()
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        value = encode_tick(topic.upper(), price, volume, iso_utc(start + timedelta(milliseconds=i)))
        # A busy producer stamps several messages with the same millisecond.
        out.append(
            Message(
                topic=topic,
                partition=partition,
                offset=offset,
                value=value,
                key=topic.upper().encode(),
                timestamp=(1, produced_ms + i // 3),
            )
        )
    return out


def converter() -> Converter:
    """The worker's converter for TOPICS under the default settings, every partition owned."""
    return Converter(Router(load_settings(None, kafka={"topics": list(TOPICS)})), lambda tp: 1, "none")


def stored_documents(consumed: list[Message]) -> list[dict[str, Any]]:
    """The documents the worker stores for these messages (every one must be accepted)."""
    batch = Batch(0, 0.0)
    converter().put(consumed, batch)
    documents = [d for docs in batch.documents.values() for d in docs]
    assert len(documents) == len(consumed), "every tick must be accepted: the accepting path is measured"
    return documents


def stages(count: int, seed: int) -> dict[str, Callable[[], int]]:
    batch_of = messages(count, seed)
    put = converter().put
    decode = make_tick_decoder(TickSchema())
    values = [m.value() for m in batch_of]
    documents = stored_documents(batch_of)

    def run_decode() -> int:
        for value in values:
            decode(value)
        return count

    def run_put() -> int:
        put(batch_of, Batch(0, 0.0))
        return count

    def run_bson() -> int:
        encode = bson.encode
        for document in documents:
            encode(document)
        return count

    return {"decode": run_decode, "put": run_put, "bson": run_bson}


def run(count: int, rounds: int, seed: int) -> dict[str, list[float]]:
    chosen = stages(count, seed)
    for stage in chosen.values():
        stage()  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in chosen}
    names = list(chosen)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started = time.thread_time()
            done = chosen[name]()
            samples[name].append((time.thread_time() - started) / done)
    return samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    samples = run(args.count, args.rounds, args.seed)
    print(f"{args.count} ticks, {args.rounds} rounds; µs of CPU per message (this thread)")
    print(f"{'stage':<8} {'best':>7} {'median':>7}")
    for name, values in samples.items():
        print(f"{name:<8} {min(values) * 1e6:>7.2f} {statistics.median(values) * 1e6:>7.2f}")
    total = min(samples["put"]) + min(samples["bson"])
    print(f"put + bson (best): {total * 1e6:.2f} µs per message")


if __name__ == "__main__":
    main()
