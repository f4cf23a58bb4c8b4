"""Known tick series written by the real worker, shared by the query, export, CLI and tail tests.

`market_data(servers)` produces two deterministic series (PETR4, VALE3: distinct timestamps over about two
hours, spread over 3 partitions each) to Kafka, runs the worker until every offset is committed, and caches
the result for the session, so the tests can compare what the read side returns with what was produced.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Producer

from tests.harness import Scenario, Servers, thread_worker, unique, wait_for

BASE = datetime(2026, 1, 5, 13, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Sent:
    symbol: str
    ts: datetime
    price: float
    volume: int
    topic: str = ""
    partition: int = -1
    offset: int = -1


def series(symbol: str, count: int, step_s: int, start_offset_s: int, base_price: float) -> list[Sent]:
    """Deterministic ticks with distinct timestamps (so first/last are well defined)."""
    return [
        Sent(
            symbol,
            BASE + timedelta(seconds=start_offset_s + i * step_s, milliseconds=(i * 37) % 1000),
            round(base_price + 2 * math.sin(i / 9) + i * 0.01, 2),
            100 * (1 + (i * 7) % 9),
        )
        for i in range(count)
    ]


def produce_known(bootstrap: str, topic: str, ticks: list[Sent], partitions: int) -> list[Sent]:
    """Produce the ticks round-robin over the partitions; returns them with their Kafka coordinates."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    placed: dict[int, Sent] = {}
    errors: list[str] = []

    def report(index: int) -> Any:
        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                t = ticks[index]
                placed[index] = Sent(t.symbol, t.ts, t.price, t.volume, topic, msg.partition(), msg.offset())

        return delivered

    for i, t in enumerate(ticks):
        value = orjson.dumps(
            {"symbol": t.symbol, "price": t.price, "volume": t.volume, "ts": t.ts.isoformat()}
        )
        producer.produce(
            topic, value=value, key=t.symbol.encode(), partition=i % partitions, on_delivery=report(i)
        )
    producer.flush(60)
    assert not errors and len(placed) == len(ticks), errors[:3]
    return [placed[i] for i in range(len(ticks))]


def ends_of(sent: list[Sent]) -> dict[tuple[str, int], int]:
    ends: dict[tuple[str, int], int] = {}
    for s in sent:
        ends[(s.topic, s.partition)] = max(ends.get((s.topic, s.partition), 0), s.offset + 1)
    return ends


def run_worker_until_committed(sc: Scenario, settings: Any, ends: dict[tuple[str, int], int]) -> Any:
    """The real worker in a thread until every produced offset is committed; returns its totals."""
    with thread_worker(settings) as runner:
        wait_for(lambda: sc.committed(list(ends)) == ends, timeout=120, interval=0.3, what="all committed")
        assert runner.stop() == 0
    return runner.worker.totals


@dataclass
class Market:
    sc: Scenario
    ticks: dict[str, list[Sent]]  # symbol -> produced ticks, in ts order, with coordinates
    config_file: Path
    ends: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def topic_of(self) -> dict[str, str]:
        return {symbol: sent[0].topic for symbol, sent in self.ticks.items()}

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment for `pipeline ...` (in-process via monkeypatch, or a subprocess)."""
        env = {
            "PIPELINE_CONFIG": str(self.config_file),
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": self.sc.servers.bootstrap,
            "PIPELINE_KAFKA__TOPICS": ",".join(self.sc.topics),
            "PIPELINE_KAFKA__GROUP_ID": self.sc.group,
            "PIPELINE_KAFKA__SESSION_TIMEOUT_MS": "3000",
            "PIPELINE_MONGO__URI": self.sc.servers.mongo_uri,
            "PIPELINE_MONGO__DATABASE": self.sc.database,
            "PIPELINE_MONGO__SERVER_SELECTION_TIMEOUT_MS": "5000",
            "PIPELINE_METRICS__ENABLED": "false",
        }
        env.update(overrides)
        return env

    def subprocess_env(self, **overrides: str) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
        return {**clean, **self.env(**overrides), "COLUMNS": "200"}


_CACHE: dict[str, Market] = {}


def market_data(servers: Servers) -> Market:
    key = servers.bootstrap + servers.mongo_uri
    if key not in _CACHE:
        suffix = unique("q").split("-")[1]
        sc = Scenario(
            servers=servers,
            topics=[f"petr4-{suffix}", f"vale3-{suffix}"],
            group=f"group-{suffix}",
            database=f"db_{suffix}",
            partitions=3,
        )
        sc.create_topics()
        petr4 = produce_known(servers.bootstrap, sc.topics[0], series("PETR4", 240, 29, 0, 38.0), 3)
        vale3 = produce_known(servers.bootstrap, sc.topics[1], series("VALE3", 200, 37, 3, 62.0), 3)
        ends = ends_of(petr4 + vale3)
        sc.ends.update(ends)
        totals = run_worker_until_committed(sc, sc.settings(), ends)
        assert totals.stored == len(petr4) + len(vale3)
        config = servers.workdir / f"empty-{suffix}.yaml"
        config.write_text("# defaults + PIPELINE_* environment variables\n")
        _CACHE[key] = Market(sc, {"PETR4": petr4, "VALE3": vale3}, config, ends)
    return _CACHE[key]


def stored_doc(
    topic: str, partition: int, offset: int, symbol: str, ts: datetime, price: float, volume: int
) -> dict[str, Any]:
    """A document of exactly the shape the worker stores (for query edge cases with known values)."""
    return {
        "_id": {"topic": topic, "partition": partition, "offset": offset},
        "symbol": symbol,
        "price": float(price),
        "volume": volume,
        "ts": ts,
        "kafka": {"timestamp": ts, "key": symbol},
        "ingested_at": ts,
    }
