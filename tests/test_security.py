"""Credentials and hostile input: real MongoDB authentication, secrets never printed, names never chosen by
message content."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from pymongo import MongoClient

from pipeline.clients.kafka import consumer_config
from pipeline.clients.sink import SOURCES_COLLECTION
from pipeline.dev.servers import EmbeddedMongo
from pipeline.ops.config import load_settings
from tests.harness import (
    REPO,
    Scenario,
    assert_exactly_once,
    run_process_until_committed,
    thread_worker,
    wait_for,
)

pytestmark = pytest.mark.servers

USER, PASSWORD = "tickpipe", "Tr0ub4dor&3-not-in-logs"


@pytest.fixture
def auth_mongo(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """A MongoDB test server with authentication on, and a user allowed to read and write everything."""
    first = EmbeddedMongo(tmp_path).start()
    with MongoClient(first.uri) as client:
        client.admin.command("createUser", USER, pwd=PASSWORD, roles=[{"role": "root", "db": "admin"}])
    first.stop()
    secured = EmbeddedMongo(tmp_path, port=first.port, storage=first.storage, extra_args=["--auth"]).start()
    try:
        yield secured
    finally:
        secured.stop()


def _on_mongo(sc: Scenario, uri: str) -> Scenario:
    return dataclasses.replace(sc, servers=dataclasses.replace(sc.servers, mongo_uri=uri), ends={})


def _cli(args: list[str], env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_worker_authenticates_with_a_password_file_and_never_prints_the_password(
    make_scenario: Callable[..., Scenario], auth_mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    secret = tmp_path / "mongo_password"
    secret.write_text(PASSWORD + "\n")
    sc = _on_mongo(make_scenario(("petr4",), partitions=2), auth_mongo.uri)
    report = sc.produce(1_000)
    env = sc.env(
        PIPELINE_MONGO__USERNAME=USER,
        PIPELINE_MONGO__PASSWORD_FILE=str(secret),
        PIPELINE_MONGO__AUTH_SOURCE="admin",
        PIPELINE_LOG__LEVEL="DEBUG",
    )
    log = run_process_until_committed(sc, env, tmp_path / "worker.log")
    sc = dataclasses.replace(
        sc, servers=dataclasses.replace(sc.servers, mongo_uri=_with_credentials(auth_mongo.uri, PASSWORD))
    )
    assert_exactly_once(sc, report)
    assert PASSWORD not in log
    shown = _cli(["config", "show"], env)
    assert shown.returncode == 0 and PASSWORD not in shown.stdout + shown.stderr


def _with_credentials(uri: str, password: str) -> str:
    return uri.replace("mongodb://", f"mongodb://{USER}:{password}@").replace("?", "?authSource=admin&")


def test_credentials_in_the_uri_are_masked_in_logs(
    make_scenario: Callable[..., Scenario], auth_mongo: EmbeddedMongo, tmp_path: Path
) -> None:
    sc = _on_mongo(make_scenario(("petr4",), partitions=1), auth_mongo.uri)
    sc.produce(200)
    env = sc.env(PIPELINE_MONGO__URI=_with_credentials(auth_mongo.uri, PASSWORD))
    log = run_process_until_committed(sc, env, tmp_path / "worker.log")
    assert f"mongodb://{USER}:***@" in log
    assert PASSWORD not in log


@pytest.mark.parametrize(
    "credentials, expected",
    [
        ({"PIPELINE_MONGO__USERNAME": USER, "PIPELINE_MONGO__PASSWORD": "wrong-" + PASSWORD}, "refused us"),
        ({}, "refused to prepare"),  # no credentials: ping is allowed, writing is not
    ],
    ids=["wrong-password", "no-credentials"],
)
def test_rejected_credentials_fail_fast_with_one_line(
    credentials: dict[str, str],
    expected: str,
    make_scenario: Callable[..., Scenario],
    auth_mongo: EmbeddedMongo,
) -> None:
    sc = _on_mongo(make_scenario(("petr4",), create=False), auth_mongo.uri)
    result = _cli(["run"], sc.env(PIPELINE_MONGO__AUTH_SOURCE="admin", **credentials))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout


def test_kafka_sasl_settings_reach_librdkafka_from_a_secret_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    secret = tmp_path / "kafka_password"
    secret.write_text("kafka-" + PASSWORD)
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_USERNAME", "svc")
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SASL_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("PIPELINE_KAFKA__SECURITY__SSL_CA_LOCATION", "/etc/ssl/certs/ca-certificates.crt")
    conf = consumer_config(load_settings(None).kafka)
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512" and conf["sasl.username"] == "svc"
    assert conf["sasl.password"] == "kafka-" + PASSWORD
    assert conf["ssl.ca.location"] == "/etc/ssl/certs/ca-certificates.crt"
    assert conf["ssl.endpoint.identification.algorithm"] == "https"


def test_wrong_kafka_security_fails_at_start_without_printing_the_secret(
    make_scenario: Callable[..., Scenario],
) -> None:
    # The session broker's listener speaks PLAINTEXT only, so a SASL client cannot get in: the worker must
    # give up within the start-up timeout, in one line. (SASL/TLS/ACLs for real: test_kafka_security.py.)
    sc = make_scenario(("petr4",), create=False)
    env = sc.env(
        PIPELINE_KAFKA__SECURITY__PROTOCOL="SASL_PLAINTEXT",
        PIPELINE_KAFKA__SECURITY__SASL_MECHANISM="SCRAM-SHA-512",
        PIPELINE_KAFKA__SECURITY__SASL_USERNAME="svc",
        PIPELINE_KAFKA__SECURITY__SASL_PASSWORD=PASSWORD,
        PIPELINE_WORKER__STARTUP_TIMEOUT_S="4",
    )
    result = _cli(["run"], env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Kafka" in errors[0], result.stderr[-2000:]
    assert PASSWORD not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "env, key",
    [
        ({"PIPELINE_KAFKA__TOPICS": "system.profile"}, "kafka.topics"),
        ({"PIPELINE_KAFKA__TOPICS": "petr4;drop"}, "kafka.topics"),
        ({"PIPELINE_MONGO__COLLECTIONS": '{"petr4": "$cmd"}'}, "mongo"),
        ({"PIPELINE_MONGO__DATABASE": "market/../admin"}, "mongo"),
        ({"PIPELINE_MONGO__COLLECTION_TEMPLATE": "system.{topic}"}, "mongo"),
    ],
)
def test_hostile_names_in_configuration_are_rejected(env: dict[str, str], key: str) -> None:
    result = _cli(["config", "check"], env, timeout=30)
    assert result.returncode == 2
    assert result.stderr.startswith("config error:") and key in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_message_content_never_chooses_where_or_how_it_is_written(
    make_scenario: Callable[..., Scenario],
) -> None:
    """Payloads that look like operators or try to name another place are data, or dead letters, never
    instructions; and a topic whose name is not a valid collection is dead-lettered, not fatal."""
    sc = make_scenario(("petr4",), partitions=1)
    topic = sc.topics[0]
    hostile_topic = f"system.{topic}"  # a valid Kafka topic name, a reserved MongoDB collection name
    sc.create_topics([hostile_topic], partitions=1)
    payloads = [
        {"symbol": "PETR4", "price": 10.0, "volume": 1, "ts": "2026-11-25T13:00:00Z", "collection": "admin"},
        {"symbol": {"$gt": ""}, "price": 10.0, "volume": 1, "ts": "2026-11-25T13:00:00Z"},
        {"symbol": "PETR4", "price": {"$gt": 0}, "volume": 1, "ts": "2026-11-25T13:00:00Z"},
        {"symbol": "PETR4", "price": 10.0, "volume": 1, "ts": "2026-11-25T13:00:00Z", "$where": "1"},
        {"symbol": "PETR4", "price": 10.0, "volume": 1, "ts": "2026-11-25T13:00:00Z", "db": {"$out": "x"}},
        {"symbol": "PETR4", "price": 10.0, "volume": 1, "ts": "2026-11-25T13:00:00Z", "_id": {"$ne": 1}},
    ]
    offsets = sc.produce_values(topic, [orjson.dumps(p) for p in payloads])
    hostile_offsets = sc.produce_values(hostile_topic, [orjson.dumps(payloads[0])])
    settings = sc.settings(kafka={"topics": [topic, f"^system\\.{topic}$"]})
    ends = {(topic, 0): offsets[-1] + 1, (hostile_topic, 0): hostile_offsets[-1] + 1}
    with thread_worker(settings) as runner:
        wait_for(lambda: sc.committed(list(ends)) == ends, timeout=120, interval=0.5, what="all committed")
        assert runner.stop() == 0
    with sc.mongo() as client:
        db = client[sc.database]
        stored = list(db[topic].find())
        letters = {
            (d["_id"]["topic"], d["_id"]["offset"]): d["error"]["kind"] for d in db["dead_letters"].find()
        }
        names = set(db.list_collection_names())
    # The "collection" field is just data; operator-shaped values never reach a query.
    assert (
        len(stored) == 1 and stored[0]["collection"] == "admin" and stored[0]["_id"]["offset"] == offsets[0]
    )
    assert letters == {
        (topic, offsets[1]): "invalid_field",
        (topic, offsets[2]): "invalid_field",
        (topic, offsets[3]): "invalid_field_name",
        (topic, offsets[4]): "invalid_field_name",
        (topic, offsets[5]): "reserved_field",
        (hostile_topic, hostile_offsets[0]): "invalid_collection_name",
    }
    # (tickpipe_sources: which topic each collection holds, written by the worker, named by no message)
    assert names <= {topic, "dead_letters", SOURCES_COLLECTION}, names
