"""Unit tests of the configuration keys the write path depends on: refused where they would break the
guarantee or do not apply, each with one line naming the key."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.ops.config import ConfigError, Settings, load_settings


def problems(monkeypatch: pytest.MonkeyPatch, tmp_path: Any, **env: str) -> str:
    for name in list(__import__("os").environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no config/pipeline.yaml here
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings(None)
    return "\n".join(info.value.lines)


@pytest.mark.parametrize(
    ("key", "why"),
    [
        ("isolation.level", "aborted transactions"),
        ("group.protocol", "kafka.group_protocol"),
        ("enable.auto.commit", "only after a durable write"),
    ],
)
def test_consumer_keys_tickpipe_manages_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, key: str, why: str
) -> None:
    text = problems(monkeypatch, tmp_path, PIPELINE_KAFKA__CONSUMER=f'{{"{key}": "x"}}')
    assert key in text and why in text and len(text.splitlines()) == 1


@pytest.mark.parametrize("key", ["acks", "enable.idempotence", "transactional.id"])
def test_the_dead_letter_producers_durability_cannot_be_overridden(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, key: str
) -> None:
    text = problems(monkeypatch, tmp_path, PIPELINE_KAFKA__PRODUCER=f'{{"{key}": "1"}}')
    assert repr(key) in text and "cannot be set here" in text


@pytest.mark.parametrize(
    "key", ["session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"]
)
def test_with_the_consumer_group_protocol_client_side_group_keys_are_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, key: str
) -> None:
    text = problems(
        monkeypatch,
        tmp_path,
        PIPELINE_KAFKA__GROUP_PROTOCOL="consumer",
        PIPELINE_KAFKA__CONSUMER=f'{{"{key}": 1}}',
    )
    assert key in text and "broker" in text


def test_with_the_consumer_group_protocol_a_session_timeout_is_refused_unless_left_at_its_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    text = problems(
        monkeypatch,
        tmp_path,
        PIPELINE_KAFKA__GROUP_PROTOCOL="consumer",
        PIPELINE_KAFKA__SESSION_TIMEOUT_MS="3000",
    )
    assert "session_timeout_ms does not apply" in text and "group.consumer.session.timeout.ms" in text
    settings = Settings(kafka={"group_protocol": "consumer", "session_timeout_ms": 10_000})
    assert settings.kafka.group_protocol == "consumer"


def test_the_consumer_config_leaves_the_group_timing_to_the_broker_with_the_consumer_protocol() -> None:
    from pipeline.clients.kafka import consumer_config

    classic = consumer_config(Settings().kafka)
    assert classic["session.timeout.ms"] == 10_000 and classic["heartbeat.interval.ms"] == 2_500
    assert "group.protocol" not in classic
    new = consumer_config(Settings(kafka={"group_protocol": "consumer"}).kafka)
    assert new["group.protocol"] == "consumer"
    assert "session.timeout.ms" not in new and "heartbeat.interval.ms" not in new


def test_write_concurrency_is_auto_or_at_most_max_in_flight(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    assert Settings().batch.write_concurrency == "auto"
    assert Settings(batch={"write_concurrency": 3}).batch.write_concurrency == 3
    text = problems(monkeypatch, tmp_path, PIPELINE_BATCH__WRITE_CONCURRENCY="9")
    assert "write_concurrency 9 exceeds max_in_flight 4" in text
