"""The MongoDB Kafka connector side by side: Kafka Connect 4.4 standalone with mongo-kafka-connect 2.0.1.

`java -cp "<Apache Kafka's cached jars>/*" org.apache.kafka.connect.cli.ConnectStandalone worker.properties
sink.properties`: Connect's runtime and JSON converter come with the test broker's jars
(pipeline/dev/servers/kafka/pom.xml), the connector (classifier `all`) is fetched once with Maven into the
same cache (`pipeline.dev.apache_kafka.ensure_mongo_connector`) and given as `plugin.path`. JVM options as
Kafka's connect-standalone.sh (-Xms256m -Xmx2g, G1).

The sink, as the issue asks: `KafkaMetaDataStrategy` ids, `InsertOneDefaultStrategy`, `max.batch.size=1000`,
`bulk.write.ordered=false`, `errors.tolerance=all` (with `errors.log.enable=true`: a re-delivered record's
E11000 is logged, which the crash comparison counts), one task, one collection per topic (the connector's
default: collection = topic name), in the measurement's database. Its consumer group is `connect-<name>`.
Two consumer settings differ from Connect's defaults, both for a like-for-like comparison:
`max.poll.records=1000` (Connect's 500 would cap every bulk write at 500 whatever `max.batch.size` says;
tickpipe writes up to 1,000) and the bench's session timeout (6 s, heartbeat a quarter of it, like tickpipe
and the Quix peer; Connect's 45 s would hold a killed member's partitions for 45 s). Offsets are committed at
Connect's default `offset.flush.interval.ms` (60 s).

What it stores differs from tickpipe: `_id` is the string "topic#partition#offset" and `ts` stays the
string of the JSON value (no date, no Kafka metadata).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from bench.acked import AckedProcess, measure_acked
from bench.workloads import (
    Backlog,
    BenchError,
    Progress,
    Run,
    Say,
    Target,
    check_stored,
    prepare_database,
    uid,
)
from pipeline.dev.process import free_port

CONNECT_MAIN = "org.apache.kafka.connect.cli.ConnectStandalone"
LOG4J = Path(__file__).with_name("connect-log4j2.properties")
JVM_OPTIONS = [
    "-Xms256m",
    "-Xmx2g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]
ACK = re.compile(rb"Mongodb bulk write result: AcknowledgedBulkWriteResult\{insertedCount=(\d+)")
# One line per record the connector could not write (errors.log.enable; Connect logs each again as "Error
# encountered in task", not counted). After a crash every one is a re-delivery: E11000 on its _id.
FAILED_RECORD = re.compile(rb"ERROR Failed to put into the sink the following records")
STORES = '_id is the string "topic#partition#offset", ts the string of the JSON value (not a date)'


def missing() -> str | None:
    """Why the connector cannot run here (Java 17+, or Maven before the jars are cached), or None."""
    from pipeline.dev.apache_kafka import connector_missing_prerequisite

    return connector_missing_prerequisite()


@dataclass(frozen=True)
class Jars:
    lib: Path  # Apache Kafka's jars (Connect's runtime among them)
    plugins: Path  # plugin.path: the directory holding mongo-kafka-connect-2.0.1-all.jar


def ensure_jars(log: Say | None = None) -> Jars:
    from pipeline.dev.apache_kafka import ensure_kafka, ensure_mongo_connector

    say = log or (lambda _m: None)
    return Jars(ensure_kafka(say), ensure_mongo_connector(say))


def worker_properties(
    bootstrap: str, directory: Path, plugins: Path, session_timeout_ms: int
) -> dict[str, str]:
    return {
        "bootstrap.servers": bootstrap,
        "key.converter": "org.apache.kafka.connect.storage.StringConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter.schemas.enable": "false",
        "offset.storage.file.filename": str(directory / "connect.offsets"),
        "plugin.path": str(plugins),
        "listeners": f"http://127.0.0.1:{free_port()}",
        "consumer.max.poll.records": "1000",
        "consumer.session.timeout.ms": str(session_timeout_ms),
        "consumer.heartbeat.interval.ms": str(max(100, session_timeout_ms // 4)),
    }


# The connector writes with the URI's write concern (the server default, w=1, unless the URI says otherwise):
# given tickpipe's w=majority, j=true so that both are measured at the same durability.
WRITE_CONCERN_OPTIONS = "w=majority&journal=true"


def durable_uri(mongo_uri: str) -> str:
    return f"{mongo_uri}{'&' if '?' in mongo_uri else '/?'}{WRITE_CONCERN_OPTIONS}"


def sink_properties(name: str, topics: list[str], mongo_uri: str, database: str) -> dict[str, str]:
    strategies = "com.mongodb.kafka.connect.sink"
    return {
        "name": name,
        "connector.class": "com.mongodb.kafka.connect.MongoSinkConnector",
        "tasks.max": "1",
        "topics": ",".join(topics),
        "connection.uri": durable_uri(mongo_uri),
        "database": database,
        "document.id.strategy": f"{strategies}.processor.id.strategy.KafkaMetaDataStrategy",
        "writemodel.strategy": f"{strategies}.writemodel.strategy.InsertOneDefaultStrategy",
        "max.batch.size": "1000",
        "bulk.write.ordered": "false",
        "errors.tolerance": "all",
        "errors.log.enable": "true",
    }


def _write(path: Path, properties: dict[str, str]) -> Path:
    path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
    return path


@dataclass
class Connector:
    """One connector (its name, hence its group, and its offsets file) that can be started again."""

    target: Target
    jars: Jars
    topics: list[str]
    database: str
    session_timeout_ms: int
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or f"bench-connector-{uid()}"
        self.directory = self.target.workdir / self.name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts = 0

    @property
    def group(self) -> str:
        return f"connect-{self.name}"

    def command(self) -> list[str]:
        from pipeline.dev.apache_kafka import classpath, java_command

        java = java_command()
        if java is None:
            raise BenchError("the MongoDB Kafka connector needs Java 17+")
        properties = worker_properties(
            self.target.bootstrap, self.directory, self.jars.plugins, self.session_timeout_ms
        )
        worker = _write(self.directory / "worker.properties", properties)
        sink = _write(
            self.directory / "sink.properties",
            sink_properties(self.name, self.topics, self.target.mongo_uri, self.database),
        )
        return [
            java,
            *JVM_OPTIONS,
            f"-Dlog4j2.configurationFile={LOG4J}",
            "-cp",
            classpath(self.jars.lib),
            CONNECT_MAIN,
            str(worker),
            str(sink),
        ]

    def start(self) -> AckedProcess:
        self.starts += 1
        log_path = self.target.workdir / f"{self.name}-{self.starts}.log"
        return AckedProcess.spawn(
            self.command(), log_path, ACK, {"failed_records": FAILED_RECORD}, cwd=self.directory
        )


def connector(
    target: Target,
    backlog: Backlog,
    jars: Jars,
    session_timeout_ms: int,
    progress: Progress = lambda _n: None,
    timeout_s: float = 1800,
    verify: bool = True,
) -> Run:
    """The connector from JVM start until its acknowledged bulk writes cover the backlog (bench/acked.py);
    steady from its first acknowledged write (JVM start, plugin scan and group join excluded)."""
    database = f"bench_connector_{uid()}"
    prepare_database(target, database, backlog.topics)
    spec = Connector(target, jars, backlog.topics, database, session_timeout_ms)
    run, process = measure_acked(
        "connector", target, backlog.count, "the MongoDB Kafka connector", spec.start, timeout_s, progress
    )
    run.details.update(
        group=spec.group,
        stores=STORES,
        failed_records_logged=process.acks.counts["failed_records"],
        write_concern=WRITE_CONCERN_OPTIONS,
    )
    if verify:
        run.details["verified_stored"] = check_stored(
            target, database, backlog.topics, backlog.count, "connector"
        )
    return run
