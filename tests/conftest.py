"""Session fixtures: the real test servers on free 127.0.0.1 ports, started by the test command itself.

Kafka: **Apache Kafka 4.4.0** (pipeline/dev/apache_kafka.py: jars from Maven Central, cached once outside the
clone). Without Java 17+ (or without Maven before the jars are cached) the suite says so in one line and
falls back to Tansu (pipeline/dev/servers.py); under CI=true that is a failure instead. Tests that need a
real broker's behaviour (kill -9 and restart on the same log dir, a 3-node cluster, SASL/TLS/ACLs) are
marked `apache_kafka` and skip on the fallback, saying why.

MongoDB: SecantusDB for everything. Tests marked `write_path` (the worker, fault and poison tests) run once
per MongoDB-compatible test server: `[secantus]` and `[ferretdb]` (FerretDB 1.24.2, built once with Go). A
test marked `needs_mongo("feature", ...)` skips on a server that lacks the feature; what each server can do
is probed once (tests/capabilities.py), never guessed from its name.

Overrides: TICKPIPE_TEST_KAFKA=host:port (a broker you started: the session broker), TICKPIPE_TEST_MONGO=uri
(one MongoDB server for every test), TICKPIPE_TEST_BROKER=apache|tansu (the kind of broker to start),
TICKPIPE_TEST_MONGO_SERVERS=secantus,ferretdb (the servers the write path runs on).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from pipeline.dev.servers import EmbeddedKafka, EmbeddedMongo
from tests.capabilities import missing as missing_features
from tests.harness import Scenario, Servers, run_main, unique, use_pipeline_env
from tests.query_data import Market, market_data

MONGO_NAMES = {"secantus": "SecantusDB", "ferretdb": "FerretDB 1.24.2", "external": "TICKPIPE_TEST_MONGO"}


def _ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


class MongoServer(Protocol):
    name: str
    port: int
    storage: Path
    log_path: Path

    @property
    def uri(self) -> str: ...

    def start(self, timeout_s: float = 60.0) -> Any: ...
    def stop(self) -> None: ...
    def kill(self) -> None: ...


@dataclass
class Selection:
    """Which servers this session runs on, decided once at start-up."""

    broker: str  # kind of broker started for the session and for tests that need their own: apache | tansu
    external_kafka: str | None
    broker_fallback: str | None  # why Apache Kafka is not used (None: it is)
    mongo_kinds: list[str]  # the write path runs on each; the first one serves every other test
    notes: list[str] = field(default_factory=list)

    def header(self) -> str:
        kafka = {"apache": "Apache Kafka 4.4.0", "tansu": "Tansu (fallback)"}[self.broker]
        if self.external_kafka:
            kafka = f"{self.external_kafka} (TICKPIPE_TEST_KAFKA; own brokers: {kafka})"
        mongo = ", ".join(MONGO_NAMES[k] for k in self.mongo_kinds)
        return f"test servers: Kafka {kafka}; MongoDB {mongo} (write-path tests run on each)"


def _select() -> Selection:
    from pipeline.dev import apache_kafka, ferretdb

    notes: list[str] = []
    wanted = os.environ.get("TICKPIPE_TEST_BROKER", "apache").strip().lower()
    if wanted not in ("apache", "tansu"):
        raise pytest.UsageError(f"TICKPIPE_TEST_BROKER={wanted!r}: use apache or tansu")
    broker, fallback = wanted, None
    if wanted == "apache":
        reason = apache_kafka.missing_prerequisite()
        if reason is not None:
            if _ci():
                pytest.exit(
                    f"CI=true: Apache Kafka is the test broker, but {reason}; not falling back to Tansu",
                    returncode=1,
                )
            broker, fallback = "tansu", reason
            notes.append(
                f"Kafka: {reason}: falling back to the Tansu broker (Apache-Kafka-only tests skip; "
                "install OpenJDK 17+ and Maven to test on the real broker)"
            )
    if os.environ.get("TICKPIPE_TEST_MONGO"):
        kinds = ["external"]
    else:
        kinds = [
            k.strip() for k in os.environ.get("TICKPIPE_TEST_MONGO_SERVERS", "secantus,ferretdb").split(",")
        ]
        kinds = [k for k in kinds if k]
        unknown = set(kinds) - {"secantus", "ferretdb"}
        if unknown or not kinds:
            raise pytest.UsageError(
                f"TICKPIPE_TEST_MONGO_SERVERS: use secantus and/or ferretdb, not {unknown}"
            )
        if "ferretdb" in kinds:
            reason = ferretdb.missing_prerequisite()
            if reason is not None:
                if _ci():
                    pytest.exit(
                        f"CI=true: the write path must run on FerretDB too, but {reason}", returncode=1
                    )
                kinds.remove("ferretdb")
                notes.append(f"MongoDB: {reason}: the write path runs on SecantusDB only")
                if not kinds:
                    kinds = ["secantus"]
    return Selection(broker, os.environ.get("TICKPIPE_TEST_KAFKA") or None, fallback, kinds, notes)


SELECTION: Selection | None = None
# Log files of the session's servers, and of every server started so far: listed under a failing test.
SESSION_LOGS: list[Path] = []
SERVER_LOGS: list[Path] = []


def selection() -> Selection:
    global SELECTION
    if SELECTION is None:
        SELECTION = _select()
    return SELECTION


def pytest_configure(config: pytest.Config) -> None:
    selection()


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [selection().header()]


def pytest_sessionstart(session: pytest.Session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for note in selection().notes:
        if reporter is not None:
            reporter.write_line(f"NOTE {note}", yellow=True)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for note in selection().notes:
        terminalreporter.write_line(f"NOTE {note}", yellow=True)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("write_path") and "mongo" in metafunc.fixturenames:
        kinds = selection().mongo_kinds
        metafunc.parametrize("mongo", kinds, indirect=True, ids=kinds)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_logs_key] = len(SERVER_LOGS)
    marker = item.get_closest_marker("apache_kafka")
    if marker is not None and selection().broker != "apache":
        why = marker.args[0] if marker.args else "this test"
        cause = selection().broker_fallback or "TICKPIPE_TEST_BROKER=tansu"
        pytest.skip(f"{why} needs Apache Kafka; this session runs on Tansu ({cause})")


_logs_key = pytest.StashKey[int]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        start = item.stash.get(_logs_key, len(SERVER_LOGS))
        logs = list(dict.fromkeys(SESSION_LOGS + SERVER_LOGS[start:]))
        if logs:
            report.sections.append(("test server logs", "\n".join(str(p) for p in logs)))


def register_logs(*paths: Path, session: bool = False) -> None:
    SERVER_LOGS.extend(paths)
    if session:
        SESSION_LOGS.extend(paths)


# ---- Kafka ---------------------------------------------------------------------------------------------


def start_broker(workdir: Path, session: bool = False, **options: Any) -> Any:
    """A started broker of the session's kind (Apache Kafka, or the Tansu fallback), logs registered."""
    if selection().broker == "apache":
        from pipeline.dev.apache_kafka import ApacheKafka

        kafka: Any = ApacheKafka(workdir, **options)
        register_logs(*kafka.log_paths, session=session)
        return kafka.start()
    tansu = EmbeddedKafka(workdir, advertised_port=options.get("advertised_port"))
    register_logs(tansu.log_path, session=session)
    return tansu.start()


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = selection().external_kafka
    if external:
        yield external
        return
    kafka = start_broker(tmp_path_factory.mktemp("kafka"), session=True)
    try:
        yield kafka.bootstrap
    finally:
        kafka.stop()


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start a broker for this test alone (fault tests freeze, cut, kill and restart it); stopped after."""
    started: list[Any] = []

    def make(**options: Any) -> Any:
        kafka = start_broker(tmp_path, **options)
        started.append(kafka)
        return kafka

    yield make
    for kafka in started:
        kafka.stop()


# ---- MongoDB -------------------------------------------------------------------------------------------


def new_mongo(kind: str, workdir: Path, session: bool = False, **options: Any) -> MongoServer:
    """A MongoDB-compatible server of this kind, not started (tests that kill it need their own)."""
    if kind == "ferretdb":
        from pipeline.dev.ferretdb import FerretDB

        server: MongoServer = FerretDB(workdir, **options)
    else:
        server = EmbeddedMongo(workdir, **options)
    register_logs(server.log_path, session=session)
    return server


@dataclass(frozen=True)
class MongoTarget:
    """The MongoDB-compatible server a test runs on."""

    kind: str  # secantus | ferretdb | external
    name: str
    uri: str

    def own(self, workdir: Path, **options: Any) -> MongoServer:
        """A dedicated server of the same kind (SecantusDB when the session one is external)."""
        return new_mongo("secantus" if self.kind == "external" else self.kind, workdir, **options)


def _session_mongo(kind: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTarget]:
    server = new_mongo(kind, tmp_path_factory.mktemp(kind), session=True)
    server.start()
    try:
        yield MongoTarget(kind, MONGO_NAMES[kind], server.uri)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mongo_secantus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTarget]:
    yield from _session_mongo("secantus", tmp_path_factory)


@pytest.fixture(scope="session")
def mongo_ferretdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoTarget]:
    yield from _session_mongo("ferretdb", tmp_path_factory)


@pytest.fixture(scope="session")
def mongo_external() -> MongoTarget:
    return MongoTarget(
        "external", "the MongoDB server at TICKPIPE_TEST_MONGO", os.environ["TICKPIPE_TEST_MONGO"]
    )


@pytest.fixture
def mongo(request: pytest.FixtureRequest) -> MongoTarget:
    """The server this test runs on: each of them for `write_path` tests, else the session's first."""
    kind = getattr(request, "param", selection().mongo_kinds[0])
    target: MongoTarget = request.getfixturevalue(f"mongo_{kind}")
    return target


@pytest.fixture(scope="session")
def servers(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Servers:
    """The session's broker and its first MongoDB server (the read side's tests use these)."""
    kind = selection().mongo_kinds[0]
    target: MongoTarget = request.getfixturevalue(f"mongo_{kind}")
    return Servers(kafka_bootstrap, target.uri, tmp_path_factory.mktemp("servers"), mongo_name=target.name)


@pytest.fixture(autouse=True)
def _needs_mongo(request: pytest.FixtureRequest) -> None:
    marker = request.node.get_closest_marker("needs_mongo")
    if marker is None:
        return
    target: MongoTarget = request.getfixturevalue("mongo")
    lacking = missing_features(target.uri, tuple(marker.args))
    if lacking:
        pytest.skip(f"{target.name} lacks {'; '.join(lacking)}")


@pytest.fixture
def make_scenario(servers: Servers, mongo: MongoTarget, tmp_path: Path) -> Callable[..., Scenario]:
    on = Servers(servers.bootstrap, mongo.uri, servers.workdir, mongo_name=mongo.name)

    def make(
        tickers: tuple[str, ...] = ("petr4", "vale3"), partitions: int = 3, create: bool = True
    ) -> Scenario:
        suffix = unique("t").split("-")[1]
        scenario = Scenario(
            servers=on,
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
def own_mongo(mongo: MongoTarget, tmp_path: Path) -> Iterator[MongoServer]:
    """A MongoDB-compatible server of the test's kind for this test alone (fault tests kill, restart it)."""
    server = mongo.own(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def market(servers: Servers) -> Market:
    """The query tests' known ticks, one database per test module."""
    return market_data(servers)


@pytest.fixture
def cli(market: Market, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """Run `pipeline ...` in-process against the market data; returns (exit code, stdout, stderr)."""
    use_pipeline_env(monkeypatch, market.env())  # a test may still set a variable before it runs

    def run(*argv: str) -> tuple[int, str, str]:
        return run_main(capsys, *argv)

    return run
