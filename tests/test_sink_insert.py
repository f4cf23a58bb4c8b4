"""MongoSink.insert on each MongoDB-compatible server: one `insert` command for a batch that fits in one, and
insert_many (which splits) for a batch too large for a single command; both read the server's reply alike
(inserted, duplicate keys on a re-delivery)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.collection import Collection

from pipeline.clients.sink import MongoSink
from pipeline.ops.config import Settings
from tests.conftest import MongoTarget

pytestmark = [pytest.mark.servers, pytest.mark.write_path]


def _sink(mongo: MongoTarget, client: MongoClient[dict[str, Any]]) -> tuple[MongoSink, str]:
    database = f"sink_{uuid.uuid4().hex[:10]}"
    settings = Settings(mongo={"uri": mongo.uri, "database": database}, kafka={"topics": ["petr4"]})
    return MongoSink(settings.mongo, client=client), database


def _docs(offsets: range, payload: str = "") -> list[dict[str, Any]]:
    return [{"_id": {"topic": "petr4", "partition": 0, "offset": i}, "n": i, "pad": payload} for i in offsets]


def _count_insert_many(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = Collection.insert_many

    def counted(self: Collection[Any], documents: Any, *args: Any, **kwargs: Any) -> Any:
        documents = list(documents)
        calls.append(len(documents))
        return original(self, documents, *args, **kwargs)

    monkeypatch.setattr(Collection, "insert_many", counted)
    return calls


def test_a_batch_goes_as_one_command_and_a_redelivery_reads_as_duplicates(
    mongo: MongoTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_insert_many(monkeypatch)
    with MongoClient(mongo.uri) as client:
        sink, database = _sink(mongo, client)
        assert sink.insert("petr4", _docs(range(0, 1000))) is None
        errors = sink.insert("petr4", _docs(range(900, 1100)))  # 100 re-delivered, 100 new
        assert errors is not None
        assert sorted(errors.duplicates) == list(range(100))
        assert errors.inserted == list(range(100, 200))
        assert not (errors.refused or errors.retry or errors.unknown or errors.write_concern_failed)
        stored = sorted(d["n"] for d in client[database]["petr4"].find({}, {"n": 1}))
        assert stored == list(range(1100))
        client.drop_database(database)
    assert calls == []  # both went as insert commands


def test_a_batch_too_large_for_one_command_is_split_by_insert_many(
    mongo: MongoTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _count_insert_many(monkeypatch)
    megabyte = "x" * (1024 * 1024)
    with MongoClient(mongo.uri) as client:
        sink, database = _sink(mongo, client)
        big = _docs(range(24), megabyte)  # ~24 MB: more than one 16 MB command
        assert sink.insert("petr4", big) is None
        assert calls == [24]
        errors = sink.insert("petr4", _docs(range(20, 30), megabyte))  # 4 re-delivered, 6 new
        assert errors is not None and sorted(errors.duplicates) == [0, 1, 2, 3]
        assert errors.inserted == [4, 5, 6, 7, 8, 9]
        assert calls == [24]  # ~10 MB: one command again
        assert client[database]["petr4"].count_documents({}) == 30
        client.drop_database(database)
