"""Session fixtures: the real test servers (Tansu Kafka broker, SecantusDB MongoDB server) on free ports.

They are started once per test session by the test command itself (`./scripts/test`, also used by CI), from
the Python packages of the project's `embedded` extra. Set TICKPIPE_TEST_KAFKA / TICKPIPE_TEST_MONGO to
point the suite at servers you started yourself instead.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.cli import main
from pipeline.dev.servers import EmbeddedKafka, EmbeddedMongo
from tests.harness import Scenario, Servers, unique
from tests.query_data import Market, market_data


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    workdir = tmp_path_factory.mktemp("servers")
    kafka = mongo = None
    bootstrap = os.environ.get("TICKPIPE_TEST_KAFKA")
    uri = os.environ.get("TICKPIPE_TEST_MONGO")
    try:
        if not bootstrap:
            kafka = EmbeddedKafka(workdir).start()
            bootstrap = kafka.bootstrap
        if not uri:
            mongo = EmbeddedMongo(workdir).start()
            uri = mongo.uri
        yield Servers(bootstrap, uri, workdir)
    finally:
        if kafka:
            kafka.stop()
        if mongo:
            mongo.stop()


@pytest.fixture
def make_scenario(servers: Servers, tmp_path: Path) -> Callable[..., Scenario]:
    def make(
        tickers: tuple[str, ...] = ("petr4", "vale3"), partitions: int = 3, create: bool = True
    ) -> Scenario:
        suffix = unique("t").split("-")[1]
        scenario = Scenario(
            servers=servers,
            topics=[f"{ticker}-{suffix}" for ticker in tickers],
            group=f"group-{suffix}",
            database=f"db_{suffix}",
            partitions=partitions,
        )
        if create:
            scenario.create_topics()
        return scenario

    return make


@pytest.fixture
def own_mongo(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """A MongoDB test server for this test alone (fault tests kill and restart it)."""
    mongo = EmbeddedMongo(tmp_path).start()
    try:
        yield mongo
    finally:
        mongo.stop()


@pytest.fixture(scope="module")
def market(servers: Servers) -> Market:
    """The query tests' known ticks, one database per test module."""
    return market_data(servers)


@pytest.fixture
def cli(market: Market, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `pipeline ...` in-process against the market data; returns (exit code, stdout, stderr)."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    for name, value in market.env().items():
        monkeypatch.setenv(name, value)

    def run(*argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run
