"""Micro-benchmark: the client CPU of one bulk insert per document, PyMongo's insert_many against one
`insert` command (what MongoSink.insert sends for a batch that fits in one), on a fresh test server.

    python -m bench.insert_cost                    # SecantusDB, 9 rounds of 10 batches of 1,000 per way
    python -m bench.insert_cost --mongo ferretdb
    python -m bench.insert_cost --without-index    # the same without the worker's {symbol: 1, ts: 1} index

The documents are tickpipe's own (the simulated ticks through Converter.put); a third way sends ceiling C's
documents (the same messages as `bench.measures.raw_document` makes them: coordinates, key, the undecoded
value, the Kafka timestamp) as insert commands, to show what the document's shape costs the server (the
rate). Rounds rotate which way goes first; every batch goes to a new collection with the tick index the
worker creates (nothing is a duplicate). Time is this thread's CPU time
(`time.thread_time`: encoding, the Python of the call, the socket calls), printed per document, with the
rate (which the server decides). Writes at w=majority, j=true. `--without-index` leaves the tick index out:
with and without it shows how much of the server's time per document is the index (ceiling C's documents
have no `symbol` or `ts`: their index keys are nulls). Not a timed test: numbers for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient, WriteConcern

from bench.measures import raw_document
from bench.put_cost import messages, stored_documents
from pipeline.core.codec import TICK_INDEX, TICK_INDEX_NAME
from pipeline.dev.ferretdb import FerretDB
from pipeline.dev.servers import EmbeddedMongo, MongoServer

MAJORITY_JOURNALED = {"w": "majority", "j": True}


def documents(count: int, seed: int, shape: str) -> list[dict[str, Any]]:
    consumed = messages(count, seed)
    if shape == "ceiling_c":
        return [raw_document(m) for m in consumed]
    return stored_documents(consumed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mongo", choices=["secantus", "ferretdb"], default="secantus")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--without-index", action="store_true", help="no {symbol: 1, ts: 1} index")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="insert-cost-"))
    server: MongoServer = (EmbeddedMongo if args.mongo == "secantus" else FerretDB)(workdir).start()
    ways = ("insert_many", "command", "command_c_docs")
    cpu: dict[str, list[float]] = {way: [] for way in ways}
    rate: dict[str, list[float]] = {way: [] for way in ways}
    try:
        with MongoClient(server.uri) as client:
            db = client.get_database("bench", write_concern=WriteConcern(**MAJORITY_JOURNALED))
            for r in range(args.rounds):
                for way in ways[r % len(ways) :] + ways[: r % len(ways)]:
                    shape = "ceiling_c" if way == "command_c_docs" else "tickpipe"
                    batches = [documents(args.batch_size, 100 * r + i, shape) for i in range(args.batches)]
                    for i in range(args.batches):
                        if args.without_index:
                            db.create_collection(f"{way}_{r}_{i}")
                        else:
                            db[f"{way}_{r}_{i}"].create_index(TICK_INDEX, name=TICK_INDEX_NAME)
                    started, wall = time.thread_time(), time.monotonic()
                    for i, batch in enumerate(batches):
                        name = f"{way}_{r}_{i}"
                        if way == "insert_many":
                            db[name].insert_many(batch, ordered=False)
                        else:
                            command = {
                                "insert": name,
                                "documents": batch,
                                "ordered": False,
                                "writeConcern": MAJORITY_JOURNALED,
                            }
                            reply = db.command(command)
                            assert reply["n"] == len(batch), reply
                    done = args.batches * args.batch_size
                    cpu[way].append(1e6 * (time.thread_time() - started) / done)
                    rate[way].append(done / (time.monotonic() - wall))
    finally:
        server.stop()
    index = "no index" if args.without_index else "the tick index"
    print(
        f"{server.name}: {args.rounds} rounds x {args.batches} batches of {args.batch_size}, w=majority, j, "
        f"{index}"
    )
    print(f"{'way':<15} {'best µs/doc':>11} {'median':>7} {'median docs/s':>14}")
    for way in ways:
        print(
            f"{way:<15} {min(cpu[way]):>11.2f} {statistics.median(cpu[way]):>7.2f} "
            f"{statistics.median(rate[way]):>14,.0f}"
        )


if __name__ == "__main__":
    main()
