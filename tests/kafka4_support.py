"""Helpers shared by the Kafka 4 tests (dead-letter topics, transactional input, the consumer group protocol,
compacted topics): a scenario moved onto a dedicated broker, a topic read back whole, watermarks, `pipeline`
as a subprocess, and a TCP proxy that delays what it forwards (a slow MongoDB)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from tests.harness import REPO, TP, Scenario, TcpProxy, wait_for

TS = "2026-11-25T13:00:00.123Z"


def tick(i: int, symbol: str = "PETR4") -> bytes:
    """A valid tick, distinct per i."""
    return orjson.dumps(
        {
            "symbol": symbol,
            "price": round(30 + (i % 1000) * 0.01, 2),
            "volume": 100 + i,
            "ts": f"2026-11-25T13:{i // 60 % 60:02d}:{i % 60:02d}.{i % 1000:03d}Z",
        }
    )


def on_broker(sc: Scenario, bootstrap: str) -> Scenario:
    """The same scenario (topics, group, database) on another broker."""
    servers = dataclasses.replace(sc.servers, bootstrap=bootstrap)
    return dataclasses.replace(sc, servers=servers, ends={})


def topic_names(bootstrap: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return {name for name, meta in admin.list_topics(timeout=10).topics.items() if meta.error is None}


def partition_count(bootstrap: str, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return len(admin.list_topics(topic, timeout=10).topics[topic].partitions)


def watermarks(bootstrap: str, tps: list[TP]) -> dict[TP, tuple[int, int]]:
    """(low, high) per partition, as the broker reports them now."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "watermarks", "enable.auto.commit": False}
    )
    try:
        return {
            tp: consumer.get_watermark_offsets(TopicPartition(*tp), timeout=10, cached=False) for tp in tps
        }
    finally:
        consumer.close()


def end_offsets_of(bootstrap: str, tps: list[TP]) -> dict[TP, int]:
    return {tp: high for tp, (_low, high) in watermarks(bootstrap, tps).items()}


@dataclasses.dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list[Record]:
    """Every record a read_committed consumer sees in `topic` now, read up to the partitions' end offsets
    (assign(): no group join)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "read-topic",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        parts = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        found: list[Record] = []

        def done() -> bool:
            for m in consumer.consume(500, 0.2):
                if m.error() is None:
                    found.append(
                        Record(m.partition(), m.offset(), m.key(), m.value(), dict(m.headers() or []))
                    )
            positions = consumer.position([TopicPartition(topic, p) for p in parts])
            return all(pos.offset >= ends[pos.partition] for pos in positions if ends[pos.partition] > 0)

        wait_for(done, timeout=timeout, interval=0, what=f"the whole of {topic}")
        return found
    finally:
        consumer.close()


def run_cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("PIPELINE_")}
    return subprocess.run(
        [sys.executable, "-m", "pipeline", *args],
        env={**clean, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def status_json(env: dict[str, str]) -> dict[str, Any]:
    result = run_cli(["status", "--format", "json"], env, timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def status_lags(data: dict[str, Any]) -> dict[TP, int | None]:
    return {(t["topic"], p["partition"]): p["lag"] for t in data["topics"] for p in t["partitions"]}


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines of a worker's output (other lines skipped)."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


class DelayProxy(TcpProxy):
    """A TCP forwarder that holds every chunk a client sends for `delay_s` before passing it on: each
    request to the server behind it (a MongoDB write, a ping) takes at least that much longer."""

    def __init__(self, target_port: int, listen_port: int, delay_s: float) -> None:
        super().__init__(target_port, listen_port)
        self.delay_s = delay_s

    def _accept(self, server: Any) -> None:
        socket = self._socket_mod
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            threading.Thread(target=self._pipe_slow, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe_slow(self, src: Any, dst: Any) -> None:
        try:
            while data := src.recv(65536):
                time.sleep(self.delay_s)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.close()
