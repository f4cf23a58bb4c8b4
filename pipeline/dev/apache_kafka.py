"""Apache Kafka 4.4.0 as the test broker: a KRaft node, a 3-node cluster, or a SASL/TLS/ACL broker.

Test-only (the suite, the benchmark; never the worker's runtime path). The jars come from Maven Central:
`servers/kafka/pom.xml` is resolved once with `mvn dependency:copy-dependencies` into a cache outside the
clone (`pipeline.dev.cache`, `kafka-4.4.0/`, ~55 MB, ~10 s); then each node is formatted with
`kafka.tools.StorageTool` and started with `java -cp "<cache>/*" kafka.Kafka server.properties`.

Test-broker settings (everything else is Kafka's default): `group.min.session.timeout.ms=500` (fault tests
use sessions of 2-3 s), `group.initial.rebalance.delay.ms=0`, internal topics with the cluster's
replication factor (1, or 3 with `min.insync.replicas=2` for the 3-node cluster), fewer `__consumer_offsets`
partitions (10: quicker first group join), and brokers fenced 3 s after their last heartbeat (failover tests).

Each node keeps its ports and log directory for its life: `kill()` (SIGKILL) then `start()` is a crash and
restart on the same data. Its output goes to `<workdir>/kafka-<cluster>-node<id>.log`, left in place for a
failing test; `log_paths` lists them.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.core.errors import PipelineError
from pipeline.dev.cache import ensure_entry, fingerprint, is_complete
from pipeline.dev.process import ServerProcess, free_port

KAFKA_VERSION = "4.4.0"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
HERE = Path(__file__).resolve().parent / "servers" / "kafka"
POM = HERE / "pom.xml"
LOG4J = HERE / "log4j2.properties"
CACHE_NAME = f"kafka-{KAFKA_VERSION}"
MIN_JAVA = 17
SCRAM = "SCRAM-SHA-512"


# ---- prerequisites and the jar cache ----------------------------------------------------------------


def java_command() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def java_major(java: str) -> int | None:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not found:
        return None
    major = int(found.group(1))
    return int(found.group(2) or 0) if major == 1 else major  # "1.8.0" is Java 8


def missing_prerequisite() -> str | None:
    """Why Apache Kafka cannot run here (Java 17+ missing; Maven missing and the jars not cached), or None."""
    java = java_command()
    if java is None:
        return f"Java {MIN_JAVA}+ is not installed (no java on PATH or in JAVA_HOME)"
    major = java_major(java)
    if major is None or major < MIN_JAVA:
        return f"Java {MIN_JAVA}+ is needed, {java} is Java {major or 'of an unknown version'}"
    if not is_complete(_cache_dir(), fingerprint(POM)) and shutil.which("mvn") is None:
        return "Maven (mvn) is not installed and Apache Kafka's jars are not cached yet"
    return None


def _cache_dir() -> Path:
    from pipeline.dev.cache import cache_root

    return cache_root() / CACHE_NAME


def ensure_kafka(log: Callable[[str], None] = lambda _m: None) -> Path:
    """The directory of Apache Kafka's jars (plus Kafka Connect's), resolved with Maven on first use."""

    def build(target: Path) -> None:
        log(f"fetching Apache Kafka {KAFKA_VERSION} from Maven Central into {_cache_dir()} (once) ...")
        started = time.monotonic()
        _mvn(
            f"Apache Kafka {KAFKA_VERSION} from {POM}",
            ["-f", str(POM), f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime"],
            target,
        )
        if not list(target.glob(f"kafka_2.13-{KAFKA_VERSION}.jar")):
            raise PipelineError(f"mvn finished but kafka_2.13-{KAFKA_VERSION}.jar is not in {target}")
        log(f"Apache Kafka {KAFKA_VERSION} cached in {time.monotonic() - started:.0f}s")

    return ensure_entry(CACHE_NAME, fingerprint(POM), build)


def _mvn(what: str, goal: list[str], target: Path) -> None:
    """Run Maven quietly to copy `what` into `target` (a PipelineError with Maven's last lines on failure)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise PipelineError(f"Maven (mvn) is needed once to fetch {what} from Maven Central")
    result = subprocess.run(
        [mvn, "-B", "-q", *goal, f"-DoutputDirectory={target}"],
        cwd=target,  # dependency:copy needs no pom; copy-dependencies is given one with -f
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=900,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise PipelineError(f"mvn could not fetch {what}:\n{tail}")


def classpath(lib: Path) -> str:
    return f"{lib}/*"


# ---- the MongoDB Kafka connector (the benchmark's Kafka Connect peer) -----------------------------------

MONGO_CONNECTOR = "org.mongodb.kafka:mongo-kafka-connect:2.0.1:jar:all"  # 3.x is not served here
MONGO_CONNECTOR_CACHE_NAME = "mongo-kafka-connect-2.0.1"
MONGO_CONNECTOR_JAR = "mongo-kafka-connect-2.0.1-all.jar"


def connector_missing_prerequisite() -> str | None:
    """Why Kafka Connect with the MongoDB connector cannot run here, or None."""
    reason = missing_prerequisite()
    if reason is not None:
        return reason
    entry = _connector_cache_dir()
    if not is_complete(entry, MONGO_CONNECTOR) and shutil.which("mvn") is None:
        return "Maven (mvn) is not installed and the MongoDB Kafka connector is not cached yet"
    return None


def _connector_cache_dir() -> Path:
    from pipeline.dev.cache import cache_root

    return cache_root() / MONGO_CONNECTOR_CACHE_NAME


def ensure_mongo_connector(log: Callable[[str], None] = lambda _m: None) -> Path:
    """A directory holding mongo-kafka-connect 2.0.1 (classifier `all`, its dependencies inside), to give
    Kafka Connect as `plugin.path`; copied from Maven Central once (`dependency:copy`), into the same cache
    and under the same lock and atomic rename as Apache Kafka's jars. Connect's own jars are in
    ensure_kafka()'s directory (connect-runtime, connect-json)."""

    def build(target: Path) -> None:
        log(f"fetching {MONGO_CONNECTOR} from Maven Central into {_connector_cache_dir()} (once) ...")
        _mvn(MONGO_CONNECTOR, [f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={MONGO_CONNECTOR}"], target)
        if not (target / MONGO_CONNECTOR_JAR).is_file():
            raise PipelineError(f"mvn finished but {MONGO_CONNECTOR_JAR} is not in {target}")

    return ensure_entry(MONGO_CONNECTOR_CACHE_NAME, MONGO_CONNECTOR, build)


def new_cluster_id() -> str:
    """16 random bytes, URL-safe base64 without padding; never starting with '-', which the storage tool's
    argument parser would take for an option."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


# ---- security material --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_pem: Path  # clients trust this (ssl.ca.location)
    keystore: Path  # the broker's PKCS12 keystore (server key + certificate for IP:127.0.0.1)
    password: str


def make_tls_files(directory: Path, password: str, name: str = "test") -> TlsFiles:
    """A CA and a server certificate for IP:127.0.0.1 signed by it, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise PipelineError("openssl is needed to make the test CA")
    directory.mkdir(parents=True, exist_ok=True)
    d = directory

    def run(*args: str) -> None:
        result = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise PipelineError(f"openssl {args[0]} failed: {result.stderr.strip()[-500:]}")

    run(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name} CA",
        "-keyout", "ca.key", "-out", "ca.pem",
    )  # fmt: skip
    run(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr",
    )  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "server.ext", "-out", "server.pem",
    )  # fmt: skip
    run(
        "pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key", "-certfile", "ca.pem",
        "-name", "broker", "-out", "server.p12", "-passout", f"pass:{password}",
    )  # fmt: skip
    return TlsFiles(d / "ca.pem", d / "server.p12", password)


@dataclass(frozen=True)
class Security:
    """A broker with SASL_PLAINTEXT and SASL_SSL listeners (SCRAM-SHA-512) next to its PLAINTEXT one.

    `users` are created at format time (`StorageTool --add-scram`). With `acls`, the StandardAuthorizer
    denies everything not granted (`allow.everyone.if.no.acl.found=false`); `admin` and the PLAINTEXT
    listener's principal (ANONYMOUS: the controller and the test's own admin client) are super users.
    """

    users: dict[str, str]
    tls: TlsFiles
    acls: bool = True


# ---- nodes and clusters -------------------------------------------------------------------------------


@dataclass
class KafkaNode:
    cluster: ApacheKafka
    node_id: int
    port: int  # PLAINTEXT, the tests' admin/bootstrap listener
    controller_port: int
    sasl_port: int | None = None
    sasl_ssl_port: int | None = None
    advertised_port: int | None = None  # clients reach PLAINTEXT there (a proxy in front, fault tests)
    server: ServerProcess | None = None
    formatted: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def directory(self) -> Path:
        return self.cluster.workdir / f"kafka-{self.cluster.label}-node{self.node_id}"

    @property
    def log_dir(self) -> Path:
        return self.directory / "data"

    @property
    def log_path(self) -> Path:
        return self.cluster.workdir / f"kafka-{self.cluster.label}-node{self.node_id}.log"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.advertised_port or self.port}"

    def listeners(self) -> dict[str, int]:
        found = {"PLAINTEXT": self.port}
        if self.sasl_port:
            found["SASL_PLAINTEXT"] = self.sasl_port
        if self.sasl_ssl_port:
            found["SASL_SSL"] = self.sasl_ssl_port
        return found

    def properties(self) -> dict[str, str]:
        c = self.cluster
        rf = str(c.replication)
        isr = str(min(2, c.replication))
        listeners = {**self.listeners(), "CONTROLLER": self.controller_port}
        addresses = ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items())
        advertised = {**listeners, "PLAINTEXT": self.advertised_port or self.port}
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": ",".join(
                f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in c.nodes
            ),
            "listeners": addresses,
            "advertised.listeners": ",".join(f"{n}://127.0.0.1:{p}" for n, p in advertised.items()),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(
                f"{name}:{'PLAINTEXT' if name == 'CONTROLLER' else name}" for name in listeners
            ),
            "log.dirs": str(self.log_dir),
            "num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": isr if c.replication > 1 else "1",
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": isr if c.replication > 1 else "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": isr if c.replication > 1 else "1",
            "group.min.session.timeout.ms": "500",
            "group.initial.rebalance.delay.ms": "0",
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "3000",
        }
        security = c.security
        if security is not None:
            jaas = f"{c.jaas_module} required;"
            props.update(
                {
                    "sasl.enabled.mechanisms": SCRAM,
                    "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": jaas,
                    "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
                    "ssl.keystore.type": "PKCS12",
                    "ssl.keystore.location": str(security.tls.keystore),
                    "ssl.keystore.password": security.tls.password,
                    "ssl.key.password": security.tls.password,
                }
            )
            if security.acls:
                props.update(
                    {
                        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                        "allow.everyone.if.no.acl.found": "false",
                        "super.users": "User:admin;User:ANONYMOUS",
                    }
                )
        props.update(c.extra)
        props.update(self.extra)
        return props

    def _java(self, main: str, *args: str, heap: str) -> list[str]:
        java = java_command()
        if java is None:
            raise PipelineError(f"Java {MIN_JAVA}+ is needed to run Apache Kafka")
        return [
            java,
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp",
            classpath(self.cluster.lib),
            main,
            *args,
        ]

    def _write_properties(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        return path

    def format(self) -> None:
        properties = self._write_properties()
        args = ["format", "-t", self.cluster.cluster_id, "-c", str(properties)]
        if self.cluster.security is not None:
            for user, password in self.cluster.security.users.items():
                args += ["--add-scram", f"{SCRAM}=[name={user},password={password}]"]
        # The tool prints the salted credentials of the users it adds: its output goes to a file only.
        out = self.directory / "format.out"
        with out.open("wb") as handle:
            result = subprocess.run(
                self._java("kafka.tools.StorageTool", *args, heap="256m"),
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
        if result.returncode != 0:
            tail = "\n".join(out.read_text(errors="replace").splitlines()[-10:])
            raise PipelineError(f"formatting Kafka node {self.node_id} failed (see {out}):\n{tail}")
        self.formatted = True

    def launch(self) -> None:
        """Start the JVM (formatting the storage the first time); does not wait for it to be ready."""
        if self.alive():
            return
        if not self.formatted:
            self.format()
        properties = self._write_properties()
        self.server = ServerProcess(
            f"Apache Kafka node {self.node_id}",
            self._java("kafka.Kafka", str(properties), heap=self.cluster.heap),
            self.port,
            self.log_path,
        )
        self.server.start()

    def start(self, timeout_s: float = 90.0) -> KafkaNode:
        """Start (or restart, on the same log directory and ports) and wait until it serves metadata."""
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        from confluent_kafka.admin import AdminClient

        assert self.server is not None
        self.server.wait_connectable(timeout_s)
        conf: dict[str, Any] = {"bootstrap.servers": f"127.0.0.1:{self.port}", "logger": _quiet}
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive():
                raise PipelineError(
                    f"Apache Kafka node {self.node_id} exited at start-up; see {self.log_path}:\n"
                    f"{self.server.tail()}"
                )
            # A new client for every try: once a client has learnt the node's advertised address it talks to
            # that one, which a test may advertise behind a proxy it has not started yet (a first answer
            # slower than the try's timeout then left every later try unanswered until the deadline).
            admin = AdminClient(conf)
            try:
                # Registered with the controller (listed in its own metadata) = ready to lead partitions.
                if self.node_id in admin.list_topics(timeout=2).brokers:
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise PipelineError(
                    f"Apache Kafka node {self.node_id} on {self.bootstrap} not ready in {timeout_s:g}s; "
                    f"see {self.log_path}"
                )
            time.sleep(0.2)

    def alive(self) -> bool:
        return self.server is not None and self.server.alive()

    @property
    def pid(self) -> int | None:
        return self.server.proc.pid if self.server and self.server.proc and self.alive() else None

    def kill(self) -> None:
        """kill -9: the broker gets no chance to flush or hand over anything."""
        if self.server is not None:
            self.server.kill()

    def signal(self, sig: int) -> None:
        if self.server is not None and self.server.proc is not None and self.alive():
            self.server.proc.send_signal(sig)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (a controlled shutdown), then SIGKILL after timeout_s."""
        if self.server is not None:
            self.signal(signal.SIGCONT)  # a frozen broker cannot handle SIGTERM
            self.server.stop(timeout_s)


def _silent_logger() -> logging.Logger:
    """For the readiness probe's AdminClient: 'connection refused' while the JVM starts is expected."""
    logger = logging.getLogger("pipeline.dev.apache_kafka.probe")
    logger.propagate = False
    logger.addHandler(logging.NullHandler())
    return logger


_quiet = _silent_logger()


class ApacheKafka:
    """A KRaft cluster of `nodes` combined broker+controller nodes on 127.0.0.1 (static quorum)."""

    name = "Apache Kafka"
    jaas_module = "org.apache.kafka.common.security.scram.ScramLoginModule"

    def __init__(
        self,
        workdir: Path,
        nodes: int = 1,
        security: Security | None = None,
        extra: dict[str, str] | None = None,
        heap: str | None = None,
        label: str | None = None,
        advertised_port: int | None = None,
        log: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self.workdir = workdir
        self.security = security
        self.extra = dict(extra or {})
        self.replication = 3 if nodes >= 3 else 1
        self.heap = heap or ("1g" if nodes == 1 else "512m")
        self.label = label or uuid.uuid4().hex[:6]
        self.cluster_id = new_cluster_id()
        self.lib = ensure_kafka(log)
        self.nodes: list[KafkaNode] = []
        used: set[int] = set()
        for node_id in range(1, nodes + 1):
            ports = _distinct_ports(4 if security else 2, used)
            self.nodes.append(
                KafkaNode(
                    self,
                    node_id,
                    ports[0],
                    ports[1],
                    sasl_port=ports[2] if security else None,
                    sasl_ssl_port=ports[3] if security else None,
                    advertised_port=advertised_port if nodes == 1 else None,
                )
            )

    @property
    def port(self) -> int:
        """The first node's PLAINTEXT port (where a proxy in front of a single node forwards to)."""
        return self.nodes[0].port

    @property
    def advertised_port(self) -> int:
        return self.nodes[0].advertised_port or self.nodes[0].port

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT listeners of every node."""
        return ",".join(n.bootstrap for n in self.nodes)

    def bootstrap_for(self, protocol: str) -> str:
        return ",".join(f"127.0.0.1:{n.listeners()[protocol]}" for n in self.nodes)

    @property
    def server(self) -> ServerProcess | None:
        """The first node's process (single-node fault tests freeze it with SIGSTOP)."""
        return self.nodes[0].server

    @property
    def log_paths(self) -> list[Path]:
        return [n.log_path for n in self.nodes]

    def node(self, node_id: int) -> KafkaNode:
        return next(n for n in self.nodes if n.node_id == node_id)

    def start(self, timeout_s: float = 120.0) -> ApacheKafka:
        try:
            _in_parallel(lambda n: n.format(), [n for n in self.nodes if not n.formatted])
            for n in self.nodes:
                n.launch()
            _in_parallel(lambda n: n.wait_ready(timeout_s), self.nodes)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every node at once (a lone survivor of a cluster could not finish a controlled shutdown
        without its quorum), then SIGKILL what is still running after timeout_s."""
        for n in self.nodes:
            n.signal(signal.SIGCONT)
            n.signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for n in self.nodes:
            if n.server is not None and n.server.proc is not None:
                try:
                    n.server.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    n.kill()

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _distinct_ports(count: int, used: set[int]) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in used:
            used.add(port)
            ports.append(port)
    return ports


def _in_parallel(action: Callable[[KafkaNode], None], nodes: Iterable[KafkaNode]) -> None:
    errors: list[BaseException] = []

    def run(node: KafkaNode) -> None:
        try:
            action(node)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,), daemon=True) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
