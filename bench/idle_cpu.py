"""The worker's CPU when caught up (no messages): the fixed per-second cost that a slow server spreads over
fewer messages (it is part of the "CPU µs/msg" that `pipeline bench` reports).

    python -m bench.idle_cpu              # 30 s sample after 15 s of start-up
    python -m bench.idle_cpu --seconds 60

Starts Apache Kafka 4.4 and a fresh SecantusDB, creates two empty topics (3 partitions each), runs
`pipeline run` on them, waits for it to start and join, then samples its user + system CPU time (all
threads, /proc/<pid>/stat) over the interval. Not a timed test: the numbers are for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.clients.admin import create_topics
from pipeline.dev.apache_kafka import ApacheKafka
from pipeline.dev.servers import EmbeddedMongo
from pipeline.ops.config import KafkaConfig

TOPICS = ["petr4", "vale3"]


def process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="sampled interval (default 30)")
    parser.add_argument("--warmup", type=float, default=15.0, help="start-up time left out (default 15)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tickpipe-idle-"))
    kafka = ApacheKafka(work).start()
    mongo = EmbeddedMongo(work).start()
    try:
        create_topics(KafkaConfig(bootstrap_servers=kafka.bootstrap, topics=TOPICS), TOPICS, 3)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")},
            "PIPELINE_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
            "PIPELINE_KAFKA__TOPICS": ",".join(TOPICS),
            "PIPELINE_MONGO__URI": mongo.uri,
            "PIPELINE_METRICS__ENABLED": "false",
            "PIPELINE_LOG__FORMAT": "json",
        }
        with (work / "worker.log").open("w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "pipeline", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                time.sleep(args.warmup)
                cpu0, t0 = process_cpu_s(worker.pid), time.monotonic()
                time.sleep(args.seconds)
                cpu1, t1 = process_cpu_s(worker.pid), time.monotonic()
            finally:
                worker.terminate()
                worker.wait(30)
        per_s = (cpu1 - cpu0) / (t1 - t0)
        print(f"idle worker: {per_s * 1000:.1f} ms CPU per second ({cpu1 - cpu0:.2f} s over {t1 - t0:.0f} s)")
        for rate in (3_550, 10_000, 20_000):
            print(f"  spread over {rate:,} msgs/s: {per_s / rate * 1e6:.1f} µs/msg")
    finally:
        mongo.stop()
        kafka.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
