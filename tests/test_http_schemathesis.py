"""schemathesis against the OpenAPI document that `pipeline serve` serves, on the market ticks in the real
test MongoDB: generated requests to every operation (from the document's examples and from its schemas)
never get a 500, and every response matches the document (status code, content type, body schema,
headers). The service is read-only: the database is the same after every request.

Every check runs but `positive_data_acceptance` (a request valid by the document is answered 2xx): the
document cannot state every rule of the query library, which answers 400 with the CLI's message, e.g. a
time that matches the pattern but is not a date (2026-19-45), `from` after `to`, or a cursor the service
did not issue. No 500 and a documented, schema-valid response remain required for those requests too.

The live event stream (/api/events/{symbol}) is left out of the generated calls: it never ends by design,
so no response body can be validated; tests/test_http_api.py reads its events instead."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pymongo import MongoClient
from schemathesis.specs.openapi.checks import positive_data_acceptance

from pipeline.read.http import create_app
from pipeline.read.http.reference import openapi
from tests.query_data import Market, market_data

pytestmark = pytest.mark.servers

LIVE_STREAM = "/api/events/{symbol}"


def database_state(market: Market) -> dict[str, Any]:
    """Collections, their documents' count and indexes: what a write would change."""
    with MongoClient(market.sc.servers.mongo_uri) as client:
        db = client[market.sc.database]
        return {
            name: (db[name].count_documents({}), sorted(db[name].index_information()))
            for name in sorted(db.list_collection_names())
        }


TOKEN = "schemathesis-" + "3b1f0c"


@pytest.fixture(scope="module")
def market(servers: Any) -> Market:
    return market_data(servers)


@pytest.fixture(scope="module")
def before(market: Market) -> dict[str, Any]:
    return database_state(market)


@pytest.fixture(scope="module")
def schemas(market: Market, before: dict[str, Any]) -> dict[str, Any]:
    """The served document of the service without a token, and of one that requires a token."""
    found = {}
    for access, http in (("open", {}), ("token", {"token": TOKEN})):
        app = create_app(market.sc.settings(http={"status_timeout_s": 3, **http}))
        found[access] = schemathesis.openapi.from_asgi("/openapi.json", app).exclude(path=LIVE_STREAM)
    return found


# The operations, from the document of the default configuration (the same routes as the served one).
OPERATIONS = [
    (method.upper(), path)
    for path, item in openapi().get("paths", {}).items()
    for method in item
    if path != LIVE_STREAM
]


@pytest.mark.parametrize("access", ["open", "token"])
@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_error_and_every_response_matches_the_document(
    schemas: dict[str, Any], access: str, method: str, path: str
) -> None:
    operation = schemas[access][path][method]
    headers = {"Authorization": f"Bearer {TOKEN}"} if access == "token" else None

    @given(case=operation.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    check()


def test_the_generated_calls_wrote_nothing(
    schemas: dict[str, Any], market: Market, before: dict[str, Any]
) -> None:
    assert database_state(market) == before


def test_the_token_variant_declares_the_bearer_scheme(schemas: dict[str, Any]) -> None:
    assert "securitySchemes" not in schemas["open"].raw_schema.get("components", {})
    assert "HTTPBearer" in schemas["token"].raw_schema["components"]["securitySchemes"]


def test_every_operation_but_the_stream_is_exercised(schemas: dict[str, Any]) -> None:
    operations = {op.ok().path for op in schemas["open"].get_all_operations()}
    assert operations == {path for _, path in OPERATIONS}
    assert LIVE_STREAM not in operations
    assert {
        "/api/ticks/{symbol}",
        "/api/ohlc/{symbol}",
        "/api/stats",
        "/api/latest",
        "/api/symbols",
        "/api/status",
    } <= operations
