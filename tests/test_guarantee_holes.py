"""Regression tests for the ways the guarantee had holes (issue 15), on the real test servers.

- `errors.tolerance: none` with several partitions and several batches in flight: the first error wins,
  nothing past the bad message is committed in its partition, and later batches of it never are either.
- A topic deleted and re-created (its offsets start again at 0): its new ticks are never taken for
  re-deliveries of the old ones; the worker stops with one line before storing or committing any of them.
- A dead letter larger than the dead-letter topic accepts: cut to fit (with its length and SHA-256), never
  a reason to stop; the collection keeps it whole.
- A second SIGTERM during shutdown stops at once, without waiting out `worker.shutdown_timeout_s`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import signal
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.conftest import MongoServer
from tests.harness import ProcessWorker, Scenario, run_process_until_committed, stored_ids, wait_for

pytestmark = [pytest.mark.servers, pytest.mark.write_path]

TS = "2026-11-25T13:00:00.123Z"


def tick(price: float, **extra: object) -> bytes:
    return orjson.dumps({"symbol": "PETR4", "price": price, "volume": 100, "ts": TS, **extra})


def test_tolerance_none_with_several_partitions_and_batches_commits_nothing_past_the_bad_message(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("petr4",), partitions=3)
    topic = sc.topics[0]
    good = {p: sc.produce_values(topic, [tick(30 + i) for i in range(300)], partition=p) for p in (0, 2)}
    before = sc.produce_values(topic, [tick(10 + i) for i in range(150)], partition=1)
    bad = sc.produce_values(topic, [b"{not json"], partition=1)[0]
    after = sc.produce_values(topic, [tick(50 + i) for i in range(150)], partition=1)
    # Small batches: several are in flight when the bad message is reached.
    env = sc.env(PIPELINE_ERRORS__TOLERANCE="none", PIPELINE_BATCH__MAX_MESSAGES="40")
    worker = ProcessWorker(env, tmp_path / "worker.log").start()
    try:
        code = worker.wait(90)
    finally:
        worker.stop()
    assert code == 1
    text = worker.log_text()
    assert f"{topic}[1]@{bad}" in text and "Traceback" not in text
    committed = sc.committed([(topic, p) for p in range(3)])
    assert committed[(topic, 1)] == bad, "partition 1 must be committed exactly up to the bad message"
    with sc.mongo() as client:
        ids = stored_ids(client[sc.database], [topic])
    stored = {p: {o for t, q, o in ids if q == p} for p in range(3)}
    assert stored[1] >= set(before) and not stored[1] & set(after) - set(before)
    assert not stored[1] & {bad, *after}, "nothing at or past the bad message may be stored or committed"
    for p in (0, 2):
        end = committed[(topic, p)]
        assert end <= good[p][-1] + 1
        assert {o for o in good[p] if o < end} <= stored[p], f"partition {p} committed ahead of its data"


def test_a_re_created_topic_is_never_taken_for_the_old_one(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("petr4",), partitions=1)
    topic = sc.topics[0]
    old = sc.produce_values(topic, [tick(30 + i) for i in range(10)])
    sc.ends[(topic, 0)] = old[-1] + 1
    run_process_until_committed(sc, sc.env(), tmp_path / "first.log", timeout=120)

    admin = AdminClient({"bootstrap.servers": sc.servers.bootstrap})
    admin.delete_topics([topic], operation_timeout=30)[topic].result(30)
    wait_for(lambda: topic not in admin.list_topics(timeout=10).topics, timeout=60, what="topic deleted")

    def recreate() -> bool:
        try:
            admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
            return True
        except Exception:
            return False

    wait_for(recreate, timeout=60, interval=1, what="topic re-created")
    new = sc.produce_values(topic, [tick(90 + i, new=True) for i in range(10)])
    assert new[0] == 0, "the re-created topic's offsets start again"

    worker = ProcessWorker(sc.env(), tmp_path / "second.log").start()
    try:
        code = worker.wait(90)
    finally:
        worker.stop()
    text = worker.log_text()
    assert code == 2, text[-3000:]
    assert f"topic {topic!r} is not the topic whose ticks" in text and "topic id" in text
    assert "Traceback" not in text
    with sc.mongo() as client:
        docs = list(client[sc.database][topic].find({}, {"new": 1}))
    assert len(docs) == 10 and not any(d.get("new") for d in docs), "no new tick was dropped as a duplicate"
    # Nothing of the new topic was committed: its ticks are all still there to be stored elsewhere.
    assert sc.committed([(topic, 0)])[(topic, 0)] < 0


@pytest.mark.apache_kafka("a source topic that takes 2 MB records (max.message.bytes)")
def test_a_dead_letter_too_large_for_its_topic_is_cut_to_fit_and_the_worker_goes_on(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(("petr4",), partitions=1, create=False)
    topic = sc.topics[0]
    admin = AdminClient({"bootstrap.servers": sc.servers.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "3000000"})])[topic].result(30)
    huge = b'{"symbol": "PETR4", "price": "not a number", "pad": "' + b"x" * 1_500_000 + b'"}'
    sc = dataclasses.replace(sc, extra_env={"PIPELINE_KAFKA__PRODUCER": '{"message.max.bytes": 3000000}'})
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": sc.servers.bootstrap, "message.max.bytes": 3_000_000})
    for value in (tick(30), huge, tick(31)):
        producer.produce(topic, value=value, partition=0)
        producer.flush(30)
    sc.ends[(topic, 0)] = 3
    # The worker's producer may send 3 MB records, but the dead-letter topic takes only its default (1 MB).
    run_process_until_committed(sc, sc.env(), tmp_path / "worker.log", timeout=120)
    with sc.mongo() as client:
        letter = client[sc.database]["dead_letters"].find_one({"_id.offset": 1})
        assert client[sc.database][topic].count_documents({}) == 2
    assert letter is not None and letter["value_length"] == len(huge) and bytes(letter["value"]) == huge
    consumer = Consumer({"bootstrap.servers": sc.servers.bootstrap, "group.id": f"{sc.group}-dlq"})
    consumer.assign([TopicPartition(f"{topic}.dlq", 0, OFFSET_BEGINNING)])
    found: list[object] = []
    try:
        wait_for(
            lambda: bool(found.extend(m for m in consumer.consume(10, 0.5) if m.error() is None) or found),
            timeout=60,
            what="the dead letter on the DLQ topic",
        )
    finally:
        consumer.close()
    message = found[0]
    headers = dict(message.headers() or [])  # type: ignore[attr-defined]
    assert headers["tickpipe.error.value.truncated"] == b"true"
    assert headers["tickpipe.error.value.length"] == str(len(huge)).encode()
    assert headers["tickpipe.error.value.sha256"] == hashlib.sha256(huge).hexdigest().encode()
    value = message.value()  # type: ignore[attr-defined]
    assert huge.startswith(value) and len(value) < 1_048_588


def test_a_second_sigterm_during_shutdown_stops_without_waiting(
    make_scenario: Callable[..., Scenario], own_mongo: MongoServer, tmp_path: Path
) -> None:
    base = make_scenario(("petr4",), partitions=1)
    sc = dataclasses.replace(base, servers=dataclasses.replace(base.servers, mongo_uri=own_mongo.uri))
    sc.produce_values(sc.topics[0], [tick(30 + i) for i in range(50)])
    env = sc.env(PIPELINE_WORKER__SHUTDOWN_TIMEOUT_S="60")
    worker = ProcessWorker(env, tmp_path / "worker.log").start()
    assert own_mongo.server is not None and own_mongo.server.proc is not None
    mongo_process = own_mongo.server.proc
    try:
        wait_for(lambda: "partitions assigned" in worker.log_text(), timeout=60, what="the worker started")
        mongo_process.send_signal(
            signal.SIGSTOP
        )  # its write cannot finish: the first SIGTERM would wait 60 s
        time.sleep(2)
        worker.terminate(signal.SIGTERM)
        wait_for(lambda: "stopping: flushing" in worker.log_text(), timeout=10, what="the first signal")
        time.sleep(1)
        assert worker.alive(), "the first signal must wait for the unfinished write"
        second_at = time.monotonic()
        worker.terminate(signal.SIGTERM)
        code = worker.wait(15)
        assert time.monotonic() - second_at < 10
    finally:
        mongo_process.send_signal(signal.SIGCONT)
        worker.stop()
    assert code == 0
    text = worker.log_text()
    assert "second signal" in text and "Traceback" not in text
    assert sc.committed([(sc.topics[0], 0)])[(sc.topics[0], 0)] < 50
