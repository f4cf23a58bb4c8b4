"""Dead-letter topics on a Kafka cluster without topic auto-creation (`auto.create.topics.enable=false`, the
compose file's setting and most production clusters'), on Apache Kafka 4.4 (issue 18.1).

Before: the first bad message could never be dead-lettered ("UNKNOWN_TOPIC_OR_PART"), the worker logged it
as a MongoDB outage, exited 1 after ~30 s with nothing committed past it, and did the same after every
restart. Now the worker makes sure each source topic's dead-letter topic exists before it consumes the
topic:

(i)   it creates the missing one at start (`errors.dead_letter.topic_partitions/topic_replication_factor`); a
      bad message among good ones is dead-lettered, everything is committed; a restart (the topic now
      exists) does the same, with no crash loop;
(ii)  where it may not create it (`errors.dead_letter.create_topics: false`, or a user without a CreateTopics
      ACL) it refuses to start with one line naming the topic, exit 2, before consuming anything: committed
      offsets and stored documents are untouched; with the Create ACL granted it creates the topic;
(iii) a topic matched later by a pattern subscription gets the same check before its first message.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, Producer
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from pipeline.dev.apache_kafka import ApacheKafka, Security, make_tls_files
from tests.conftest import register_logs, start_broker
from tests.harness import ProcessWorker, Scenario, stored_ids, wait_for
from tests.kafka4_support import (
    error_lines,
    log_events,
    on_broker,
    partition_count,
    read_topic,
    run_cli,
    tick,
    topic_names,
)

pytestmark = [
    pytest.mark.servers,
    pytest.mark.apache_kafka("a broker with auto.create.topics.enable=false"),
]

NO_AUTO_CREATE = {"auto.create.topics.enable": "false"}
BAD = b"not json: a message that can never be stored"
CREATED = "created dead-letter topic"
MISREPORTED = ("MongoDB unavailable while writing dead letters", "Kafka dead-letter topic unavailable")


def _assert_auto_creation_is_off(bootstrap: str) -> None:
    """What these tests depend on: asking for a topic's metadata (what a producer does) creates nothing."""
    name = f"probe-{time.monotonic_ns()}"
    producer = Producer({"bootstrap.servers": bootstrap})
    meta = producer.list_topics(name, timeout=10)
    assert meta.topics[name].error is not None
    assert meta.topics[name].error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    time.sleep(0.5)
    assert name not in topic_names(bootstrap), "the broker auto-created a topic"


@pytest.fixture(scope="module")
def strict_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One broker for the module, with topic auto-creation off."""
    kafka = start_broker(tmp_path_factory.mktemp("kafka-no-auto-create"), extra=NO_AUTO_CREATE)
    try:
        _assert_auto_creation_is_off(kafka.bootstrap)
        yield kafka.bootstrap
    finally:
        kafka.stop()


def _scenario(make_scenario: Callable[..., Scenario], bootstrap: str, partitions: int = 2) -> Scenario:
    sc = on_broker(make_scenario(("petr4",), partitions=partitions, create=False), bootstrap)
    sc.create_topics()
    return sc


def _produce(sc: Scenario, partition: int, values: list[bytes | None]) -> list[int]:
    offsets = sc.produce_values(sc.topics[0], values, partition=partition)
    tp = (sc.topics[0], partition)
    sc.ends[tp] = max(sc.ends.get(tp, 0), offsets[-1] + 1)
    return offsets


def _run_until_committed(sc: Scenario, env: dict[str, str], log: Path) -> str:
    """Run the worker until every produced offset is committed; it must still be running then (no crash
    loop) and exit 0 on SIGTERM. Returns this run's log."""
    before = len(log.read_text()) if log.exists() else 0
    worker = ProcessWorker(env, log).start()
    try:
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends or not worker.alive(),
            timeout=120,
            interval=0.3,
            what="all committed",
        )
        assert worker.alive(), (
            f"the worker exited ({worker.proc and worker.proc.returncode}):\n"
            + (worker.log_text()[before:][-3000:])
        )
        time.sleep(1.0)  # a worker that crash-loops on the dead letter would be gone by now
        assert worker.alive(), worker.log_text()[before:][-3000:]
        worker.terminate(signal.SIGTERM)
        assert worker.wait(30) == 0, worker.log_text()[before:][-3000:]
    finally:
        worker.stop()
    text = worker.log_text()[before:]
    assert "Traceback" not in text, text[-3000:]
    for wrong in MISREPORTED:
        assert wrong not in text, text[-3000:]
    return text


def _stored_offsets(sc: Scenario) -> set[tuple[int, int]]:
    with sc.mongo() as client:
        return {(p, o) for _t, p, o in stored_ids(client[sc.database], sc.topics)}


def _dead_letter_offsets(sc: Scenario) -> set[tuple[int, int]]:
    with sc.mongo() as client:
        return {
            (d["_id"]["partition"], d["_id"]["offset"])
            for d in client[sc.database]["dead_letters"].find({"_id.topic": sc.topics[0]}, {"_id": 1})
        }


def _dlq_offsets(sc: Scenario, dlq: str) -> list[tuple[int, int]]:
    """The source coordinates of the records in the Kafka dead-letter topic, from their headers."""
    return sorted(
        (int(r.headers["tickpipe.error.partition"]), int(r.headers["tickpipe.error.offset"]))
        for r in read_topic(sc.servers.bootstrap, dlq)
    )


# ---- (i) created at start ------------------------------------------------------------------------------


@pytest.mark.write_path
def test_a_missing_dead_letter_topic_is_created_at_start_and_a_bad_message_never_stops_ingestion(
    make_scenario: Callable[..., Scenario], strict_kafka: str, tmp_path: Path
) -> None:
    sc = _scenario(make_scenario, strict_kafka)
    topic = sc.topics[0]
    dlq = f"{topic}.dlq"
    good0 = _produce(sc, 0, [tick(i) for i in range(50)])
    bad = _produce(sc, 0, [BAD])
    good0 += _produce(sc, 0, [tick(i) for i in range(50, 60)])
    good1 = _produce(sc, 1, [tick(i) for i in range(60, 100)])
    assert len(good0) + len(good1) == 100
    assert dlq not in topic_names(strict_kafka)

    env = sc.env(
        PIPELINE_ERRORS__DEAD_LETTER__TOPIC_PARTITIONS="3",
        PIPELINE_ERRORS__DEAD_LETTER__TOPIC_REPLICATION_FACTOR="1",
    )
    log = tmp_path / "worker.log"
    first = _run_until_committed(sc, env, log)
    assert CREATED in first and dlq in first, first[-3000:]
    assert partition_count(strict_kafka, dlq) == 3, "the dead-letter topic's partitions are a setting"
    assert _stored_offsets(sc) == {(0, o) for o in good0} | {(1, o) for o in good1}
    assert _dead_letter_offsets(sc) == {(0, bad[0])}
    assert _dlq_offsets(sc, dlq) == [(0, bad[0])]

    # A restart: the topic exists now. More good ticks and another bad one: the same result, no crash loop.
    more_bad = _produce(sc, 1, [tick(200), BAD, tick(201)])[1]
    good1 += [more_bad - 1, more_bad + 1]
    second = _run_until_committed(sc, env, log)
    assert CREATED not in second, second[-3000:]
    assert _stored_offsets(sc) == {(0, o) for o in good0} | {(1, o) for o in good1}
    assert _dead_letter_offsets(sc) == {(0, bad[0]), (1, more_bad)}
    assert _dlq_offsets(sc, dlq) == [(0, bad[0]), (1, more_bad)]
    assert sc.committed(list(sc.ends)) == sc.ends


# ---- (ii) creation not allowed -------------------------------------------------------------------------


def _assert_refused(result: Any, dlq: str, *named: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    assert len(lines) == 1, result.stderr[-3000:]
    assert dlq in lines[0] and all(word in lines[0] for word in named), lines[0]
    return lines[0]


def test_with_creation_disabled_a_missing_dead_letter_topic_stops_the_worker_before_it_consumes(
    make_scenario: Callable[..., Scenario], strict_kafka: str, tmp_path: Path
) -> None:
    sc = _scenario(make_scenario, strict_kafka)
    topic = sc.topics[0]
    good = _produce(sc, 0, [tick(i) for i in range(30)])
    # A first run with the default dead-letter topic (created) commits the 30.
    _run_until_committed(sc, sc.env(), tmp_path / "worker.log")
    committed_before = sc.committed(list(sc.ends))
    assert committed_before == {(topic, 0): 30}
    _produce(sc, 0, [tick(i) for i in range(30, 40)] + [BAD])  # waiting to be consumed

    # Another dead-letter topic, missing, and creation disabled.
    missing = f"{topic}.dead"
    env = sc.env(
        PIPELINE_ERRORS__DEAD_LETTER__TOPIC="{topic}.dead",
        PIPELINE_ERRORS__DEAD_LETTER__CREATE_TOPICS="false",
    )
    started = time.monotonic()
    result = run_cli(["run"], env, timeout=90)
    elapsed = time.monotonic() - started
    _assert_refused(result, missing, "errors.dead_letter.create_topics")
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert missing not in topic_names(strict_kafka)
    # Before consuming anything: nothing more stored, dead-lettered or committed.
    assert sc.committed(list(sc.ends)) == committed_before
    assert _stored_offsets(sc) == {(0, o) for o in good}
    assert _dead_letter_offsets(sc) == set()
    # Restarting gives the same refusal (it is configuration, not a transient failure).
    again = run_cli(["run"], env, timeout=90)
    _assert_refused(again, missing, "errors.dead_letter.create_topics")
    assert sc.committed(list(sc.ends)) == committed_before


# ---- (ii, ACLs) a user without the CreateTopics permission --------------------------------------------

USER, PASSWORD, ADMIN_PASSWORD = "tick", "t1ck-acl-Pa55word", "adm1n-acl-S3cret"


@pytest.fixture(scope="module")
def acl_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    """SASL/SCRAM with the StandardAuthorizer (nothing allowed unless granted), auto-creation off; the
    PLAINTEXT listener (ANONYMOUS, a super user) is the harness's."""
    workdir = tmp_path_factory.mktemp("kafka-acl")
    tls = make_tls_files(workdir / "tls", "keyst0re-acl")
    kafka = ApacheKafka(
        workdir, security=Security({"admin": ADMIN_PASSWORD, USER: PASSWORD}, tls), extra=NO_AUTO_CREATE
    )
    register_logs(*kafka.log_paths)
    kafka.start()
    try:
        _assert_auto_creation_is_off(kafka.bootstrap)
        yield kafka
    finally:
        kafka.stop()


def _grant(bootstrap: str, *acls: tuple[ResourceType, str, AclOperation]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    bindings = [
        AclBinding(r, n, ResourcePatternType.LITERAL, f"User:{USER}", "*", op, AclPermissionType.ALLOW)
        for r, n, op in acls
    ]
    for future in admin.create_acls(bindings, request_timeout=30).values():
        future.result(timeout=30)


def test_a_user_without_the_create_acl_is_refused_in_one_line_and_with_it_the_topic_is_created(
    make_scenario: Callable[..., Scenario], acl_kafka: ApacheKafka, tmp_path: Path
) -> None:
    sc = _scenario(make_scenario, acl_kafka.bootstrap)
    topic = sc.topics[0]
    dlq = f"{topic}.dlq"
    # Everything a worker needs (TESTING.md), except CreateTopics on its dead-letter topic.
    _grant(
        acl_kafka.bootstrap,
        (ResourceType.TOPIC, topic, AclOperation.READ),
        (ResourceType.TOPIC, topic, AclOperation.DESCRIBE),
        (ResourceType.GROUP, sc.group, AclOperation.READ),
        (ResourceType.TOPIC, dlq, AclOperation.WRITE),
        (ResourceType.TOPIC, dlq, AclOperation.DESCRIBE),
    )
    good = _produce(sc, 0, [tick(i) for i in range(20)])
    bad = _produce(sc, 1, [BAD])
    env = {
        **sc.env(),
        "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": acl_kafka.bootstrap_for("SASL_PLAINTEXT"),
        "PIPELINE_KAFKA__SECURITY__PROTOCOL": "SASL_PLAINTEXT",
        "PIPELINE_KAFKA__SECURITY__SASL_MECHANISM": "SCRAM-SHA-512",
        "PIPELINE_KAFKA__SECURITY__SASL_USERNAME": USER,
        "PIPELINE_KAFKA__SECURITY__SASL_PASSWORD": PASSWORD,
    }
    result = run_cli(["run"], env, timeout=90)
    line = _assert_refused(result, dlq, "cannot be created", "AUTHORIZATION_FAILED")
    assert PASSWORD not in result.stderr + result.stdout
    assert dlq not in topic_names(acl_kafka.bootstrap)
    assert sc.committed(list(sc.ends)) == {(topic, 0): -1001, (topic, 1): -1001}, line
    assert _stored_offsets(sc) == set()

    # Granted CreateTopics on it: the worker creates it and dead-letters the bad message.
    _grant(acl_kafka.bootstrap, (ResourceType.TOPIC, dlq, AclOperation.CREATE))
    text = _run_until_committed(sc, env, tmp_path / "worker.log")
    assert CREATED in text and PASSWORD not in text
    assert _stored_offsets(sc) == {(0, o) for o in good}
    assert _dead_letter_offsets(sc) == {(1, bad[0])}
    assert _dlq_offsets(sc, dlq) == [(1, bad[0])]


# ---- (iii) topics matched later by a pattern -----------------------------------------------------------

# librdkafka looks for newly matching topics at each metadata refresh (tickpipe's default: 30 s).
FAST_METADATA = '{"topic.metadata.refresh.interval.ms": 1000}'
PROTOCOLS = {
    "classic": {"PIPELINE_KAFKA__CONSUMER": FAST_METADATA},
    # KIP-848: the broker resolves the pattern and assigns the new topic's partitions.
    "consumer": {"PIPELINE_KAFKA__CONSUMER": FAST_METADATA, "PIPELINE_KAFKA__GROUP_PROTOCOL": "consumer"},
}


def _pattern_scenario(
    make_scenario: Callable[..., Scenario], bootstrap: str, protocol: str, **env: str
) -> tuple[Scenario, str, str, dict[str, str]]:
    """A scenario whose worker subscribes to a pattern; `old` exists (with 10 ticks), `new` not yet."""
    sc = on_broker(make_scenario(("petr4",), partitions=1, create=False), bootstrap)
    base = sc.topics[0]
    old, new = f"{base}-a", f"{base}-b"
    sc.topics = [old]
    sc.create_topics([old], partitions=1)
    sc.produce_values(old, [tick(i) for i in range(10)])
    sc.ends = {(old, 0): 10}
    environment = sc.env(PIPELINE_KAFKA__TOPICS=f"^{base}-[a-z]+$", **PROTOCOLS[protocol], **env)
    if protocol == "consumer":
        environment.pop("PIPELINE_KAFKA__SESSION_TIMEOUT_MS", None)  # a broker setting under this protocol
    return sc, old, new, environment


@pytest.mark.parametrize(
    "protocol", ["classic", pytest.param("consumer", marks=pytest.mark.apache_kafka("KIP-848"))]
)
def test_a_topic_matched_later_by_a_pattern_gets_its_dead_letter_topic_before_its_first_message(
    protocol: str, make_scenario: Callable[..., Scenario], strict_kafka: str, tmp_path: Path
) -> None:
    sc, old, new, env = _pattern_scenario(make_scenario, strict_kafka, protocol)
    worker = ProcessWorker(env, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: sc.committed([(old, 0)]) == {(old, 0): 10}, timeout=120, what="the first topic")
        assert f"{old}.dlq" in topic_names(strict_kafka)
        assert f"{new}.dlq" not in topic_names(strict_kafka)
        # A new topic the pattern matches; its very first message is a bad one.
        sc.create_topics([new], partitions=2)
        bad = sc.produce_values(new, [BAD], partition=0)[0]
        good0 = sc.produce_values(new, [tick(i) for i in range(20)], partition=0)
        good1 = sc.produce_values(new, [tick(i) for i in range(20, 30)], partition=1)
        assert bad == 0
        sc.topics = [old, new]
        sc.ends.update({(new, 0): 21, (new, 1): 10})
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends or not worker.alive(),
            timeout=120,
            interval=0.3,
            what="the new topic committed",
        )
        assert worker.alive(), worker.log_text()[-3000:]
        worker.terminate(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.stop()
    text = worker.log_text()
    assert "Traceback" not in text and not any(wrong in text for wrong in MISREPORTED), text[-3000:]
    with sc.mongo() as client:
        db = client[sc.database]
        assert {d["_id"]["offset"] for d in db[old].find({}, {"_id": 1})} == set(range(10))
        stored = {(p, o) for _t, p, o in stored_ids(db, [new])}
        letters = [d["_id"] for d in db["dead_letters"].find({}, {"_id": 1})]
    assert stored == {(0, o) for o in good0} | {(1, o) for o in good1}
    assert letters == [{"topic": new, "partition": 0, "offset": 0}]
    # Its dead-letter topic did not exist before the worker saw the topic, auto-creation is off, and the
    # first message went there: the worker created it before that message was handled.
    created = [e for e in log_events(text) if e.get("msg") == CREATED]
    assert [e.get("topic") for e in created] == [f"{old}.dlq", f"{new}.dlq"], created
    assert [(r.headers["tickpipe.error.topic"], r.value) for r in read_topic(strict_kafka, f"{new}.dlq")] == [
        (new.encode(), BAD)
    ]


def test_a_topic_matched_later_without_a_dead_letter_topic_stops_the_worker_before_its_first_message(
    make_scenario: Callable[..., Scenario], strict_kafka: str, tmp_path: Path
) -> None:
    sc, old, new, env = _pattern_scenario(
        make_scenario, strict_kafka, "classic", PIPELINE_ERRORS__DEAD_LETTER__CREATE_TOPICS="false"
    )
    sc.create_topics([f"{old}.dlq"], partitions=1)  # the existing topic has its dead-letter topic
    worker = ProcessWorker(env, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: sc.committed([(old, 0)]) == {(old, 0): 10}, timeout=120, what="the first topic")
        sc.create_topics([new], partitions=1)  # ... the new one has none, and may not get one
        sc.produce_values(new, [tick(i) for i in range(10)])
        code = worker.wait(90)
    finally:
        worker.stop()
    text = worker.log_text()
    assert code == 2, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    # At run time the worker's one line is its log record (as for every error after start-up).
    errors = [e for e in log_events(text) if e.get("level") == "error"]
    assert len(errors) == 1 and errors[0]["msg"] == "worker stopped on error", text[-3000:]
    assert f"{new}.dlq" in errors[0]["error"] and "create_topics" in errors[0]["error"], errors[0]
    assert f"{new}.dlq" not in topic_names(strict_kafka)
    assert sc.committed([(new, 0), (old, 0)]) == {(new, 0): -1001, (old, 0): 10}
    with sc.mongo() as client:
        assert client[sc.database][new].count_documents({}) == 0


@pytest.mark.parametrize("protocol", ["classic", "cooperative", "consumer"])
def test_a_pattern_that_matches_the_dead_letter_topics_does_not_consume_them(
    protocol: str, make_scenario: Callable[..., Scenario], strict_kafka: str, tmp_path: Path
) -> None:
    """`^ticks\\..*` (the README's example) with the default `{topic}.dlq` matches the dead-letter topics
    too. They hold what could not be stored: consuming them as ticks would dead-letter each dead letter
    again, into a `.dlq.dlq` topic (created, now), which the pattern matches too, and so on."""
    sc = on_broker(make_scenario(("petr4",), partitions=1, create=False), strict_kafka)
    base = sc.topics[0]
    source = f"{base}.x"
    sc.topics = [source]
    sc.create_topics([source], partitions=1)
    values = [tick(0), BAD, tick(1)]
    sc.produce_values(source, values)
    sc.ends = {(source, 0): 3}
    consumer = json.loads(FAST_METADATA)
    extra: dict[str, str] = {}
    if protocol == "cooperative":
        consumer["partition.assignment.strategy"] = "cooperative-sticky"
    if protocol == "consumer":
        extra["PIPELINE_KAFKA__GROUP_PROTOCOL"] = "consumer"
    env = sc.env(
        PIPELINE_KAFKA__TOPICS=f"^{base}\\..*", PIPELINE_KAFKA__CONSUMER=json.dumps(consumer), **extra
    )
    if protocol == "consumer":
        env.pop("PIPELINE_KAFKA__SESSION_TIMEOUT_MS", None)
    worker = ProcessWorker(env, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=120, what="the source topic")
        time.sleep(5)  # several metadata refreshes: time to find (and wrongly consume) the .dlq topic
        assert worker.alive(), worker.log_text()[-3000:]
        worker.terminate(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.stop()
    topics = {t for t in topic_names(strict_kafka) if t.startswith(base)}
    assert topics == {source, f"{source}.dlq"}, f"{len(topics)} topics: {sorted(topics)}"
    with sc.mongo() as client:
        letters = [d["_id"] for d in client[sc.database]["dead_letters"].find({}, {"_id": 1})]
    assert letters == [{"topic": source, "partition": 0, "offset": 1}], letters


# ---- a dead-letter topic that disappears at run time ---------------------------------------------------

KAFKA_DLQ_RETRY = "Kafka dead-letter topic unavailable while producing dead letters"


def test_a_dead_letter_topic_lost_at_run_time_is_reported_as_kafka_and_nothing_is_committed_past_it(
    make_scenario: Callable[..., Scenario], strict_kafka: str, tmp_path: Path
) -> None:
    """The start-up check passed, then the dead-letter topic is deleted; a bad message arrives. The failed
    write is reported as the Kafka dead-letter topic's (not MongoDB's), retried, nothing is committed past the
    bad message; once the topic is back the worker dead-letters it and goes on."""
    sc = _scenario(make_scenario, strict_kafka, partitions=1)
    topic = sc.topics[0]
    dlq = f"{topic}.dlq"
    tp = (topic, 0)
    good = _produce(sc, 0, [tick(i) for i in range(10)])
    worker = ProcessWorker(sc.env(PIPELINE_RETRY__MAX_BACKOFF_MS="1000"), tmp_path / "worker.log").start()
    try:
        wait_for(lambda: sc.committed([tp]) == {tp: 10}, timeout=120, what="the first 10 committed")
        admin = AdminClient({"bootstrap.servers": strict_kafka})
        for future in admin.delete_topics([dlq], operation_timeout=30).values():
            future.result(30)
        wait_for(lambda: dlq not in topic_names(strict_kafka), timeout=30, what="the dead-letter topic gone")
        bad = _produce(sc, 0, [BAD])[0]
        good += _produce(sc, 0, [tick(i) for i in range(10, 15)])
        # librdkafka gives up on a topic it cannot find after its metadata propagation time (30 s).
        wait_for(
            lambda: KAFKA_DLQ_RETRY in worker.log_text() or not worker.alive(),
            timeout=120,
            interval=0.5,
            what="the failed dead-letter write reported",
        )
        assert worker.alive(), worker.log_text()[-3000:]
        time.sleep(2)
        assert sc.committed([tp]) == {tp: bad}, "committed past a message that is not durably handled"
        assert "MongoDB unavailable" not in worker.log_text(), worker.log_text()[-3000:]

        sc.create_topics([dlq], partitions=1)  # back: the retried write goes through
        wait_for(
            lambda: sc.committed(list(sc.ends)) == sc.ends or not worker.alive(),
            timeout=120,
            interval=0.3,
            what="everything committed once the topic is back",
        )
        assert worker.alive(), worker.log_text()[-3000:]
        worker.terminate(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        worker.stop()
    assert "Traceback" not in worker.log_text()
    assert _stored_offsets(sc) == {(0, o) for o in good}
    assert _dead_letter_offsets(sc) == {(0, bad)}
    assert _dlq_offsets(sc, dlq) == [(0, bad)]
