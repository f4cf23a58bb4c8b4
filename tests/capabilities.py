"""What a MongoDB-compatible test server can do, probed once per server (never guessed from its name).

A test marked `@pytest.mark.needs_mongo("feature", ...)` is skipped on a server that lacks one of them, with
the server's own answer as the reason. FerretDB 1.x, for example, lacks the `$group` accumulators
`$first/$last/$max/$min`, `$dateTrunc`, `$jsonSchema` validators, `createUser`, time-series collections,
transactions and `explain().queryPlanner.winningPlan` (TESTING.md).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure, PyMongoError

FEATURES: dict[str, str] = {
    "group_accumulators": "the $group accumulators $first/$last/$max/$min",
    "dateTrunc": "the $dateTrunc operator",
    "jsonSchema": "$jsonSchema collection validators",
    "createUser": "the createUser command",
    "timeseries": "time-series collections",
    "transactions": "multi-document transactions",
    "explain_winning_plan": "explain().queryPlanner.winningPlan",
}

Db = Database[dict[str, Any]]


def _group_accumulators(db: Db) -> None:
    db.probe.insert_one({"a": 1})
    out = list(
        db.probe.aggregate(
            [
                {
                    "$group": {
                        "_id": None,
                        "f": {"$first": "$a"},
                        "l": {"$last": "$a"},
                        "mx": {"$max": "$a"},
                        "mn": {"$min": "$a"},
                    }
                }
            ]
        )
    )
    assert out and out[0]["f"] == out[0]["l"] == out[0]["mx"] == out[0]["mn"] == 1, out


def _date_trunc(db: Db) -> None:
    db.probe_dates.insert_one({"ts": datetime(2026, 1, 1, 13, 7, 30, tzinfo=UTC)})
    out = list(
        db.probe_dates.aggregate([{"$project": {"m": {"$dateTrunc": {"date": "$ts", "unit": "minute"}}}}])
    )
    assert out and out[0]["m"] == datetime(2026, 1, 1, 13, 7), out


def _json_schema(db: Db) -> None:
    db.create_collection(
        "probe_schema", validator={"$jsonSchema": {"properties": {"price": {"maximum": 10}}}}
    )
    try:
        db.probe_schema.insert_one({"price": 11})
    except PyMongoError:
        return  # refused, as a validator must
    raise AssertionError("a document violating the $jsonSchema validator was accepted")


def _create_user(db: Db) -> None:
    name = f"probe-{uuid.uuid4().hex[:6]}"
    db.command("createUser", name, pwd="probe-password", roles=[])
    db.command("dropUser", name)


def _timeseries(db: Db) -> None:
    db.create_collection("probe_ts", timeseries={"timeField": "ts", "metaField": "symbol"})
    info = next(db.list_collections(filter={"name": "probe_ts"}))
    assert info.get("type") == "timeseries" or "timeseries" in info.get("options", {}), info


def _transactions(db: Db) -> None:
    db.probe_tx.insert_one({"_id": 0})
    with db.client.start_session() as session, session.start_transaction():
        db.probe_tx.insert_one({"_id": 1}, session=session)
    assert db.probe_tx.count_documents({}) == 2


def _explain_winning_plan(db: Db) -> None:
    db.probe_plan.insert_one({"a": 1})
    explain = db.probe_plan.find({"a": 1}).explain()
    planner = explain.get("queryPlanner", {})
    assert "winningPlan" in planner, f"explain().queryPlanner has no winningPlan (keys: {sorted(planner)})"


PROBES: dict[str, Callable[[Db], None]] = {
    "group_accumulators": _group_accumulators,
    "dateTrunc": _date_trunc,
    "jsonSchema": _json_schema,
    "createUser": _create_user,
    "timeseries": _timeseries,
    "transactions": _transactions,
    "explain_winning_plan": _explain_winning_plan,
}

_cache: dict[str, dict[str, str | None]] = {}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OperationFailure):
        return f"code {exc.code}: {(exc.details or {}).get('errmsg', exc)}"[:160]
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:160]


def capabilities(uri: str) -> dict[str, str | None]:
    """feature -> None (supported) or the server's answer when it failed; probed once per URI."""
    if uri not in _cache:
        found: dict[str, str | None] = {}
        with MongoClient(uri, serverSelectionTimeoutMS=10_000) as client:
            for feature, probe in PROBES.items():
                db = client[f"probe_{feature.lower()}_{uuid.uuid4().hex[:6]}"]
                try:
                    probe(db)
                    found[feature] = None
                except (PyMongoError, AssertionError, KeyError, StopIteration) as exc:
                    found[feature] = _reason(exc)
                finally:
                    with contextlib.suppress(PyMongoError):
                        client.drop_database(db.name)
        _cache[uri] = found
    return _cache[uri]


def missing(uri: str, features: tuple[str, ...]) -> list[str]:
    """One line per requested feature the server lacks: what it is and what the server answered."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown MongoDB features {unknown}; known: {sorted(FEATURES)}")
    found = capabilities(uri)
    return [f"{FEATURES[f]} ({found[f]})" for f in features if found[f] is not None]
