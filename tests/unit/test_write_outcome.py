"""Unit tests for pipeline.core.write_outcome: what each per-document error of a bulk insert means.

The replies below are the shapes real servers send (MongoDB and SecantusDB name the index in `keyPattern`;
FerretDB 1.x sends only "E11000 duplicate key error collection: db.coll"); nothing is decided by wording.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from bson.datetime_ms import DatetimeMS

from pipeline.core.write_outcome import (
    PERMANENT_WRITE_CODES,
    id_key,
    read_bulk_errors,
    resolve_duplicates,
    same_message,
)

MONGO_DUP = {"code": 11000, "errmsg": "E11000 duplicate key error collection: m.p index: _id_ dup key: {...}"}
FERRET_DUP = {"code": 11000, "errmsg": "E11000 duplicate key error collection: m.p"}


def error(index: int, **fields: Any) -> dict[str, Any]:
    return {"index": index, **fields}


def test_a_duplicate_on_the_id_index_is_a_re_delivery() -> None:
    out = read_bulk_errors({"writeErrors": [error(1, keyPattern={"_id": 1}, **MONGO_DUP)]}, 3, True)
    assert out.duplicates == [1] and out.inserted == [0, 2] and not out.refused


@pytest.mark.parametrize("code", [11000, 11001])
def test_a_duplicate_on_another_named_index_is_refused(code: int) -> None:
    dup = {**MONGO_DUP, "code": code, "errmsg": "E11000 ... index: trade_id_1 dup key: { trade_id: 5 }"}
    out = read_bulk_errors({"writeErrors": [error(0, keyPattern={"trade_id": 1}, **dup)]}, 1, True)
    assert out.refused == [(0, code, dup["errmsg"])] and not out.duplicates


def test_the_message_text_never_decides_a_user_index_named_like_id() -> None:
    """'trade_id_1' contains '_id_': only keyPattern (or the collection's indexes) may decide."""
    dup = {"code": 11000, "errmsg": "E11000 duplicate key error index: trade_id_1 dup key: { _id: 1 }"}
    assert read_bulk_errors({"writeErrors": [error(0, keyPattern={"trade_id": 1}, **dup)]}, 1, False).refused
    # Without keyPattern and with other unique indexes: read back, never guessed from the text.
    assert read_bulk_errors({"writeErrors": [error(0, **dup)]}, 1, True).to_read_back == [0]


def test_without_key_pattern_and_no_other_unique_index_it_can_only_be_the_id() -> None:
    out = read_bulk_errors({"writeErrors": [error(0, **FERRET_DUP), error(2, **FERRET_DUP)]}, 3, False)
    assert out.duplicates == [0, 2] and out.inserted == [1] and not out.to_read_back


def test_without_key_pattern_and_other_unique_indexes_the_server_is_asked() -> None:
    out = read_bulk_errors({"writeErrors": [error(0, **FERRET_DUP)]}, 1, True)
    assert out.to_read_back == [0] and not out.duplicates and not out.refused


@pytest.mark.parametrize("code", [6, 50, 91, 112, 189, 10107, 11600, 11602, 262])
def test_transient_codes_are_retried(code: int) -> None:
    out = read_bulk_errors({"writeErrors": [error(0, code=code, errmsg="x")]}, 1, False)
    assert out.retry == [0] and not out.refused and not out.unknown


@pytest.mark.parametrize("code", sorted(PERMANENT_WRITE_CODES))
def test_permanent_codes_are_refused_at_once(code: int) -> None:
    out = read_bulk_errors({"writeErrors": [error(0, code=code, errmsg="no")]}, 1, False)
    assert out.refused == [(0, code, "no")]


def test_an_unknown_code_is_neither_retried_forever_nor_refused_at_once() -> None:
    out = read_bulk_errors({"writeErrors": [error(0, code=99999, errmsg="new")]}, 1, False)
    assert out.unknown == [(0, 99999, "new")] and not out.refused and not out.retry


def test_a_write_concern_error_marks_the_whole_request_and_says_what_was_inserted() -> None:
    details = {
        "writeErrors": [error(1, keyPattern={"_id": 1}, **MONGO_DUP)],
        "writeConcernErrors": [{"code": 64}],
    }
    out = read_bulk_errors(details, 3, False)
    assert out.write_concern_failed and out.inserted == [0, 2]


def test_long_messages_are_cut() -> None:
    out = read_bulk_errors({"writeErrors": [error(0, code=121, errmsg="x" * 5000)]}, 1, False)
    assert len(out.refused[0][2]) == 500


def doc(offset: int, ts_ms: int | None, key: Any) -> dict[str, Any]:
    return {
        "_id": {"topic": "t", "partition": 0, "offset": offset},
        "kafka": {"timestamp": ts_ms, "key": key},
    }


def test_same_message_compares_the_kafka_timestamp_and_key_as_stored() -> None:
    new = doc(1, DatetimeMS(1_700_000_000_123), "PETR4")
    stored = doc(1, datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC), "PETR4")  # read back as a date
    assert same_message(stored, new)
    assert not same_message(doc(1, datetime(2023, 11, 14, 22, 13, 20, 124000, tzinfo=UTC), "PETR4"), new)
    assert not same_message(stored, doc(1, DatetimeMS(1_700_000_000_123), "VALE3"))
    assert same_message(doc(1, None, b"\x80"), doc(1, None, b"\x80"))  # binary keys read back as bytes


def test_resolve_duplicates_against_what_is_stored() -> None:
    documents = [doc(0, DatetimeMS(5), "k"), doc(1, DatetimeMS(6), "k"), doc(2, DatetimeMS(7), "k")]
    stored = {
        id_key(documents[0]["_id"]): doc(0, datetime(1970, 1, 1, 0, 0, 0, 5000, tzinfo=UTC), "k"),
        id_key(documents[1]["_id"]): doc(1, datetime(2020, 1, 1, tzinfo=UTC), "k"),  # another message
    }
    out = resolve_duplicates([0, 1, 2], documents, stored)
    assert out.duplicates == [0] and out.reused == [1] and out.refused == [2]
