"""`pipeline dlq list|show|replay|purge` on the real test servers: dead letters written by the real worker,
replayed through a changed configuration exactly once (twice in a row, interrupted between the write and the
marking, and killed -9 mid-replay), from the collection and from the Kafka dead-letter topic."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from pymongo import MongoClient

from pipeline.clients.sink import MongoSink
from pipeline.core.deadletter import HEADER_PREFIX
from pipeline.ops.config import Settings
from pipeline.ops.dlq.letters import LetterFilter, letter_from_document
from pipeline.ops.dlq.replay import Replayer
from pipeline.ops.dlq.store import DeadLetterStore
from tests.harness import REPO, Scenario, run_cli_in_process, thread_worker, wait_for

pytestmark = [pytest.mark.servers]

TS = "2026-11-25T13:00:00.123Z"
WIDE = {"PIPELINE_TICK__MAX_PRICE": "1e13"}  # the fix: prices up to 1e13 are valid now


def tick(price: float, volume: int = 100, **extra: object) -> bytes:
    return orjson.dumps({"symbol": "PETR4", "price": price, "volume": volume, "ts": TS, **extra})


def produce(sc: Scenario, topic: str, values: list[bytes | None], key: bytes = b"PETR4") -> list[int]:
    """Produce all values to partition 0 in one go; their offsets, in order."""
    offsets: dict[int, int] = {}
    errors: list[str] = []

    def report(i: int) -> Callable[[Any, Any], None]:
        def done(err: Any, msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
            else:
                offsets[i] = msg.offset()

        return done

    producer = Producer(
        {"bootstrap.servers": sc.servers.bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=key, partition=0, on_delivery=report(i))
        if i % 1000 == 999:
            producer.poll(0)
    producer.flush(60)
    assert not errors and len(offsets) == len(values), errors[:3]
    sc.ends[(topic, 0)] = max(sc.ends.get((topic, 0), 0), max(offsets.values()) + 1)
    return [offsets[i] for i in range(len(values))]


def run_worker(sc: Scenario, **sections: Any) -> Any:
    with thread_worker(sc.settings(**sections)) as runner:
        wait_for(lambda: sc.committed(list(sc.ends)) == sc.ends, timeout=180, interval=0.3, what="committed")
        assert runner.stop() == 0
    return runner.worker.totals


@dataclass
class Letters:
    sc: Scenario
    topic: str
    good: list[int]  # offsets of valid ticks
    high: list[int]  # price 2e12: dead-lettered as out_of_bounds, valid once max_price is 1e13
    junk: list[int]  # not JSON: dead-lettered, and still failing after the fix
    config: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PIPELINE_CONFIG": str(self.config),
            **{k: v for k, v in self.sc.env().items() if not k.startswith("PIPELINE_LOG")},
            "PIPELINE_MONGO__SERVER_SELECTION_TIMEOUT_MS": "5000",
        }
        env.update(extra)
        return env

    def db(self, client: MongoClient[dict[str, Any]]) -> Any:
        return client[self.sc.database]


@pytest.fixture
def letters(make_scenario: Callable[..., Scenario], tmp_path: Path) -> Iterator[Letters]:
    sc = make_scenario(tickers=("petr4",), partitions=1)
    topic = sc.topics[0]
    values: list[bytes | None] = []
    kinds: list[str] = []
    for i in range(30):
        if i % 3 == 0:
            values.append(tick(38.0 + i / 100)), kinds.append("good")
        elif i % 3 == 1:
            values.append(tick(2e12 + i, volume=100 + i)), kinds.append("high")
        else:
            values.append(b"\x1b[31mnot json " + str(i).encode()), kinds.append("junk")
    offsets = produce(sc, topic, values)
    totals = run_worker(sc)
    assert totals.stored == 10 and totals.dead_lettered == 20
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    yield Letters(
        sc,
        topic,
        [o for o, k in zip(offsets, kinds, strict=True) if k == "good"],
        [o for o, k in zip(offsets, kinds, strict=True) if k == "high"],
        [o for o, k in zip(offsets, kinds, strict=True) if k == "junk"],
        config,
    )
    with sc.mongo() as client:
        client.drop_database(sc.database)


def cli(
    monkeypatch: pytest.MonkeyPatch, capsys: Any, env: dict[str, str], *argv: str
) -> tuple[int, str, str]:
    return run_cli_in_process(monkeypatch, capsys, env, *argv)


def stored_offsets(db: Any, topic: str) -> list[int]:
    return sorted(d["_id"]["offset"] for d in db[topic].find({}, {"_id": 1}))


# ---- list, show, purge ----------------------------------------------------------------------------------


def test_list_counts_by_topic_and_kind_and_show_prints_one_letter_escaped(
    letters: Letters, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, out, err = cli(monkeypatch, capsys, letters.env(), "dlq", "list", "--format", "json")
    assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert {(r["topic"], r["kind"], r["letters"], r["pending"]) for r in rows} == {
        (letters.topic, "out_of_bounds", 10, 10),
        (letters.topic, "invalid_json", 10, 10),
    }
    assert all(r["oldest"] <= r["newest"] for r in rows)
    code, out, err = cli(monkeypatch, capsys, letters.env(), "dlq", "list", "--kind", "invalid_json")
    assert (
        code == 0
        and "invalid_json" in out
        and "out_of_bounds" not in out
        and "10 dead letters, 10 pending" in out
    )

    junk = letters.junk[0]
    code, out, err = cli(monkeypatch, capsys, letters.env(), "dlq", "show", f"{letters.topic}:0:{junk}")
    assert code == 0, err
    assert f"dead letter {letters.topic}[0]@{junk}" in out and "invalid_json" in out and "stage" in out
    assert "\\x1b[31mnot json" in out and "\x1b" not in out  # the terminal escape is shown, not executed
    assert "key" in out and "PETR4" in out
    code, out, err = cli(
        monkeypatch, capsys, letters.env(), "dlq", "show", f"{letters.topic}[0]@{junk}", "--format", "json"
    )
    record = orjson.loads(out)
    assert base64.b64decode(record["value_base64"]).startswith(b"\x1b[31mnot json")
    assert record["replay_state"] == "pending" and record["kafka_timestamp"].endswith("+00:00")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (("dlq", "show", "petr4:x:1"), "is not TOPIC:PARTITION:OFFSET"),
        (("dlq", "show", "petr4:0:999999"), "no dead letter petr4[0]@999999"),
        (("dlq", "list", "--kind", "Bad Kind"), "is not an error kind"),
        (("dlq", "list", "--topic", "a/b"), "is not a valid Kafka topic name"),
        (("dlq", "list", "--from", "yesterday"), "invalid time 'yesterday'"),
        (("dlq", "replay", "--id", "petr4:0"), "is not TOPIC:PARTITION:OFFSET"),
        (("dlq", "purge"), "not deleting: 20 dead letters"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    letters: Letters, monkeypatch: pytest.MonkeyPatch, capsys: Any, argv: tuple[str, ...], fragment: str
) -> None:
    code, out, err = cli(monkeypatch, capsys, letters.env(), *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and fragment in err, (code, out, err)
    assert "Traceback" not in err


def test_an_unreachable_mongodb_is_one_line_and_exit_1(
    letters: Letters, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    env = letters.env(
        PIPELINE_MONGO__URI="mongodb://tick:s3cr3t-pw@127.0.0.1:9/?directConnection=true",
        PIPELINE_MONGO__SERVER_SELECTION_TIMEOUT_MS="500",
    )
    for argv in (("dlq", "list"), ("dlq", "replay"), ("dlq", "purge", "--confirm")):
        code, out, err = cli(monkeypatch, capsys, env, *argv)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "127.0.0.1:9" in err, (argv, err)
        assert "s3cr3t-pw" not in err + out


def test_purge_needs_confirm_and_deletes_only_the_selection(
    letters: Letters, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, _, err = cli(monkeypatch, capsys, letters.env(), "dlq", "purge", "--kind", "invalid_json")
    assert code == 2 and "not deleting: 10 dead letters" in err and "--confirm" in err
    code, out, err = cli(
        monkeypatch, capsys, letters.env(), "dlq", "purge", "--kind", "invalid_json", "--confirm"
    )
    assert code == 0 and "deleted 10 dead letters" in out, err
    with letters.sc.mongo() as client:
        kinds = {d["error"]["kind"] for d in letters.db(client)["dead_letters"].find()}
    assert kinds == {"out_of_bounds"}


# ---- replay -------------------------------------------------------------------------------------------


@pytest.mark.write_path
def test_replay_after_the_fix_stores_each_once_and_keeps_what_still_fails(
    letters: Letters, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    env = letters.env(**WIDE)
    # Dry run: says what would happen, writes nothing.
    code, out, err = cli(monkeypatch, capsys, env, "dlq", "replay", "--dry-run", "--format", "json")
    assert code == 0, err
    rows = [orjson.loads(line) for line in out.splitlines()]
    assert sorted(r["offset"] for r in rows if r["outcome"] == "would_store") == letters.high
    assert sorted(r["offset"] for r in rows if r["outcome"] == "failed") == letters.junk
    assert "dry run: nothing written" in err
    with letters.sc.mongo() as client:
        db = letters.db(client)
        assert stored_offsets(db, letters.topic) == letters.good
        assert db["dead_letters"].count_documents({"replay": {"$exists": True}}) == 0

    code, out, err = cli(monkeypatch, capsys, env, "dlq", "replay")
    assert code == 0, err
    assert "20 dead letters (pending): 10 stored, 10 failed" in out
    with letters.sc.mongo() as client:
        db = letters.db(client)
        assert stored_offsets(db, letters.topic) == sorted(letters.good + letters.high)
        doc = db[letters.topic].find_one(
            {"_id": {"topic": letters.topic, "partition": 0, "offset": letters.high[0]}}
        )
        assert (
            doc is not None and doc["price"] == 2e12 + 1 and doc["volume"] == 101 and doc["symbol"] == "PETR4"
        )
        assert doc["kafka"]["key"] == "PETR4" and doc["kafka"]["timestamp"] is not None
        done = list(db["dead_letters"].find({"replay.state": "done"}))
        assert sorted(d["_id"]["offset"] for d in done) == letters.high
        assert {d["replay"]["outcome"] for d in done} == {"stored"}
        failing = list(db["dead_letters"].find({"replay.state": "failed"}))
        assert sorted(d["_id"]["offset"] for d in failing) == letters.junk
        assert all(
            d["replay"]["attempts"] == 1 and d["first_error"]["kind"] == "invalid_json" for d in failing
        )

    # Again: the stored ones are not pending any more; the failing ones fail again; nothing is stored twice.
    code, out, err = cli(monkeypatch, capsys, env, "dlq", "replay", "--format", "csv")
    assert code == 0, err
    assert out.splitlines()[0] == "topic,partition,offset,kind,outcome,collection,detail"
    assert len(out.splitlines()) == 11 and "10 failed" in err
    with letters.sc.mongo() as client:
        db = letters.db(client)
        ids = [d["_id"]["offset"] for d in db[letters.topic].find({}, {"_id": 1})]
        assert sorted(ids) == sorted(letters.good + letters.high) and len(ids) == len(set(ids))
        assert {d["replay"]["attempts"] for d in db["dead_letters"].find({"replay.state": "failed"})} == {2}
    # The stored ticks are read back like any other.
    code, out, err = cli(
        monkeypatch, capsys, env, "query", "ticks", "PETR4", "--limit", "0", "--format", "json"
    )
    assert code == 0, err
    assert len(out.splitlines()) == 20


def test_a_replay_interrupted_between_the_write_and_the_marking_finds_them_stored(
    letters: Letters, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The window a kill -9 can hit: documents durable, letters not yet marked. The next replay reads them
    back as the same messages (already_stored) and marks them; nothing is stored twice."""
    settings = Settings(**{**_settings_dict(letters), "tick": {"max_price": 1e13}})
    with MongoClient(letters.sc.servers.mongo_uri) as client:
        db = client[letters.sc.database]
        store = DeadLetterStore(db, "dead_letters", MongoSink(settings.mongo, client=client).write_concern)
        sink = MongoSink(settings.mongo, client=client)
        crash = Replayer(settings, sink, store)

        def killed(*_args: Any, **_kwargs: Any) -> None:
            raise KeyboardInterrupt  # the process dies here

        monkeypatch.setattr(store, "mark", killed)
        documents = store.documents(LetterFilter(kinds=("out_of_bounds",), state="pending"), 100)
        with pytest.raises(KeyboardInterrupt):
            list(crash.replay((letter_from_document(d) for d in documents), batch_size=100))
        assert stored_offsets(db, letters.topic) == sorted(letters.good + letters.high)
        assert db["dead_letters"].count_documents({"replay.state": "done"}) == 0
    code, out, err = cli(monkeypatch, capsys, letters.env(**WIDE), "dlq", "replay", "--kind", "out_of_bounds")
    assert code == 0, err
    assert "10 already_stored" in out and "stored," not in out.replace("already_stored", "")
    with letters.sc.mongo() as client:
        db = letters.db(client)
        assert (
            db["dead_letters"].count_documents({"replay.state": "done", "replay.outcome": "already_stored"})
            == 10
        )
        assert db[letters.topic].count_documents({}) == 20


def _settings_dict(letters: Letters) -> dict[str, Any]:
    sc = letters.sc
    return {
        "kafka": {"bootstrap_servers": sc.servers.bootstrap, "topics": sc.topics, "group_id": sc.group},
        "mongo": {"uri": sc.servers.mongo_uri, "database": sc.database},
        "metrics": {"enabled": False},
    }


def test_a_different_message_at_the_coordinates_is_reported_and_never_overwritten(
    letters: Letters, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    first, second = letters.high[0], letters.high[1]
    with letters.sc.mongo() as client:
        db = letters.db(client)
        # Another message already holds `first`'s _id (the topic was re-created).
        other = {
            "_id": {"topic": letters.topic, "partition": 0, "offset": first},
            "symbol": "OTHER",
            "price": 1.0,
            "volume": 1,
            "ts": None,
            "kafka": {"timestamp": None, "key": "other"},
        }
        db[letters.topic].insert_one(other)
        # And the worker had dead-lettered `second` as coordinates_reused.
        db["dead_letters"].update_one(
            {"_id": {"topic": letters.topic, "partition": 0, "offset": second}},
            {"$set": {"error.kind": "coordinates_reused"}},
        )
    code, out, err = cli(
        monkeypatch,
        capsys,
        letters.env(**WIDE),
        "dlq",
        "replay",
        "--kind",
        "out_of_bounds,coordinates_reused",
        "--format",
        "json",
    )
    assert code == 0, err
    outcome = {r["offset"]: r for r in map(orjson.loads, out.splitlines())}
    assert outcome[first]["outcome"] == "reused" and "never overwritten" in outcome[first]["detail"]
    assert outcome[second]["outcome"] == "reused" and "coordinates_reused" in outcome[second]["detail"]
    assert {outcome[o]["outcome"] for o in letters.high[2:]} == {"stored"}
    with letters.sc.mongo() as client:
        db = letters.db(client)
        kept = db[letters.topic].find_one({"_id": other["_id"]})
        assert kept is not None and kept["symbol"] == "OTHER"  # untouched
        assert (
            db[letters.topic].count_documents(
                {"_id": {"topic": letters.topic, "partition": 0, "offset": second}}
            )
            == 0
        )
        letter = db["dead_letters"].find_one({"_id": other["_id"]})
        assert letter is not None and letter["error"]["kind"] == "coordinates_reused"
        assert letter["replay"]["state"] == "failed" and letter["first_error"]["kind"] == "out_of_bounds"


def test_a_filter_that_drops_them_now_resolves_them_as_filtered_and_remove_deletes(
    letters: Letters, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    letters.config.write_text(
        f"topics:\n  {letters.topic}:\n    filter: {{field: volume, op: gte, value: 110}}\n"
    )
    env = letters.env(**WIDE)
    code, out, err = cli(
        monkeypatch, capsys, env, "dlq", "replay", "--kind", "out_of_bounds", "--remove", "--format", "json"
    )
    assert code == 0, err
    outcome = {r["offset"]: r["outcome"] for r in map(orjson.loads, out.splitlines())}
    volumes = {o: 100 + i for i, o in enumerate(range(30)) if o in letters.high}
    assert outcome == {o: ("stored" if volumes[o] >= 110 else "filtered") for o in letters.high}
    with letters.sc.mongo() as client:
        db = letters.db(client)
        assert db["dead_letters"].count_documents({"error.kind": "out_of_bounds"}) == 0  # removed
        assert stored_offsets(db, letters.topic) == sorted(
            letters.good + [o for o in letters.high if volumes[o] >= 110]
        )


def test_replay_from_the_kafka_dead_letter_topic(
    letters: Letters, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The DLQ topic's records carry the reason in headers. Without a dead_letters copy, the original
    timestamp is read from the source topic; a record cut to fit the topic is replayed from its collection
    copy, or reported; a record claiming another topic is refused."""
    sc, topic = letters.sc, letters.topic
    dlq = f"{topic}.dlq"
    no_copy, cut, cut_no_copy = letters.high[0], letters.high[1], letters.high[2]
    with sc.mongo() as client:
        db = letters.db(client)
        original = db["dead_letters"].find_one({"_id": {"topic": topic, "partition": 0, "offset": no_copy}})
        assert original is not None
        db["dead_letters"].delete_many({"_id.offset": {"$in": [no_copy, cut_no_copy]}})
    # Truncated copies of two letters, and a forged record, as someone else's producer might write them.
    producer = Producer({"bootstrap.servers": sc.servers.bootstrap})
    for offset in (cut, cut_no_copy):
        headers = [
            (HEADER_PREFIX + "topic", topic.encode()),
            (HEADER_PREFIX + "partition", b"0"),
            (HEADER_PREFIX + "offset", str(offset).encode()),
            (HEADER_PREFIX + "class", b"out_of_bounds"),
            (HEADER_PREFIX + "message", b"price too high"),
            (HEADER_PREFIX + "stage", b"decode"),
            (HEADER_PREFIX + "value.truncated", b"true"),
            (HEADER_PREFIX + "value.length", b"80"),
        ]
        producer.produce(dlq, value=b'{"symbol": "PE', key=b"PETR4", headers=headers)
    producer.produce(
        dlq,
        value=tick(1.0),
        headers=[
            (HEADER_PREFIX + "topic", b"vale3"),
            (HEADER_PREFIX + "partition", b"0"),
            (HEADER_PREFIX + "offset", b"0"),
        ],
    )
    producer.flush(30)

    code, out, err = cli(
        monkeypatch, capsys, letters.env(**WIDE), "dlq", "replay", "--from-topic", "--format", "json"
    )
    assert code == 0, err
    outcome = {r["offset"]: r for r in map(orjson.loads, out.splitlines())}
    assert set(outcome) == set(letters.high + letters.junk)
    assert (
        outcome[cut]["outcome"] == "stored"
        and "replayed from its dead_letters copy" in outcome[cut]["detail"]
    )
    assert outcome[cut_no_copy]["outcome"] == "skipped" and "truncated" in outcome[cut_no_copy]["detail"]
    assert {outcome[o]["outcome"] for o in letters.high if o != cut_no_copy} == {"stored"}
    assert {outcome[o]["outcome"] for o in letters.junk} == {"failed"}
    assert "claims source topic 'vale3'" in err
    with sc.mongo() as client:
        db = letters.db(client)
        doc = db[topic].find_one({"_id": {"topic": topic, "partition": 0, "offset": no_copy}})
        assert (
            doc is not None and doc["kafka"]["timestamp"] == original["kafka"]["timestamp"]
        )  # from the source
        assert db[topic].count_documents({"_id.offset": cut_no_copy}) == 0
        # The collection copies are marked too.
        assert db["dead_letters"].count_documents({"replay.state": "done"}) == len(letters.high) - 2
    # Again from the topic: every record is found stored already (the topic cannot be marked).
    code, out, err = cli(
        monkeypatch,
        capsys,
        letters.env(**WIDE),
        "dlq",
        "replay",
        "--from-topic",
        "--kind",
        "out_of_bounds",
        "--format",
        "json",
    )
    again = {r["offset"]: r["outcome"] for r in map(orjson.loads, out.splitlines())}
    assert {again[o] for o in letters.high if o != cut_no_copy} == {"already_stored"}
    with sc.mongo() as client:
        assert letters.db(client)[topic].count_documents({}) == 10 + len(letters.high) - 1


# ---- kill -9 ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_replay_killed_9_and_run_again_stores_each_message_exactly_once(
    make_scenario: Callable[..., Scenario], tmp_path: Path
) -> None:
    sc = make_scenario(tickers=("petr4",), partitions=1)
    topic = sc.topics[0]
    count = 1200
    offsets = produce(sc, topic, [tick(2e12 + i, volume=i) for i in range(count)])
    assert run_worker(sc).dead_lettered == count
    config = tmp_path / "empty.yaml"
    config.write_text("{}\n")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIPELINE_")}
    env = {**clean, **sc.env(), **WIDE, "PIPELINE_CONFIG": str(config)}
    command = [sys.executable, "-m", "pipeline", "dlq", "replay", "--batch-size", "20", "--format", "json"]
    client: MongoClient[dict[str, Any]] = MongoClient(sc.servers.mongo_uri)
    db = client[sc.database]
    try:
        kills = 0
        for target in (250, 650):
            with (tmp_path / f"replay-{kills}.log").open("wb") as log:
                proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for(
                    lambda t=target: db["dead_letters"].count_documents({"replay.state": "done"}) >= t,
                    timeout=180,
                    interval=0.05,
                    what=f"{target} letters replayed",
                )
                time.sleep(0.05)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                kills += 1
            finally:
                if proc.poll() is None:
                    proc.kill()
        time.sleep(1.0)  # (the last request of a killed client may still be applied by the server)
        done = db["dead_letters"].count_documents({"replay.state": "done"})
        assert done < count, "the replay finished before the kills: the test needs more letters"
        final = subprocess.run(command, env=env, cwd=REPO, capture_output=True, timeout=300)
        assert final.returncode == 0, final.stderr[-2000:]
        ids = [d["_id"]["offset"] for d in db[topic].find({}, {"_id": 1})]
        assert len(ids) == count and sorted(ids) == offsets, "every message stored exactly once"
        assert db["dead_letters"].count_documents({"replay.state": "done"}) == count
        outcomes = [orjson.loads(line)["outcome"] for line in final.stdout.splitlines()]
        assert set(outcomes) <= {"stored", "already_stored"} and len(outcomes) == count - done
    finally:
        client.drop_database(sc.database)
        client.close()
