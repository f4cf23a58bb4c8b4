"""The read-only HTTP API (FastAPI) over the query library: every endpoint calls the same functions as
`pipeline query` and `pipeline status` (pipeline/read/query, pipeline/read/status), with the same
validation (`normalize_symbol`, `parse_time`, `check_range`, `check_interval`, `parse_zone`).

Errors are JSON `{"error": code, "message": one sentence}`: bad input 400 (422 for a parameter of the wrong
type), an unknown symbol 404, a missing or wrong token 401, MongoDB (or Kafka, for the status) unreachable
503. Nothing here writes: the service only runs finds, aggregations, counts and pings.
"""

import asyncio
import hmac
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from pymongo import MongoClient
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pipeline import __version__
from pipeline.core.errors import PipelineError, describe
from pipeline.ops.config import Settings
from pipeline.ops.logs import get_logger
from pipeline.ops.redact import redact_text, redact_uri
from pipeline.read.http import cursor, page
from pipeline.read.http.metrics import HttpMetrics, MetricsMiddleware, metrics_endpoint
from pipeline.read.http.schemas import (
    BarOut,
    Bars,
    ErrorBody,
    Health,
    Latest,
    Order,
    Stats,
    StatsOut,
    Status,
    Symbols,
    TickOut,
    TickPage,
    to_json,
)
from pipeline.read.query import (
    CollectionResolver,
    Db,
    InvalidInterval,
    InvalidRange,
    InvalidSymbol,
    InvalidTime,
    InvalidTimezone,
    QueryError,
    SymbolStats,
    Tick,
    UnknownSymbol,
    check_interval,
    check_nonempty_range,
    iter_ticks_after,
    latest,
    normalize_symbol,
    ohlc,
    order_key,
    parse_time,
    parse_zone,
    stats,
)
from pipeline.read.query.params import INTERVALS

log = get_logger("pipeline.read.http")


class TooManyBars(QueryError):
    """More bars match than `http.max_bars`."""


class Unauthorized(Exception):
    pass


ERROR_CODES: list[tuple[type[Exception], str]] = [
    (InvalidSymbol, "invalid_symbol"),
    (InvalidInterval, "invalid_interval"),
    (InvalidRange, "invalid_range"),
    (InvalidTime, "invalid_time"),
    (InvalidTimezone, "invalid_timezone"),
    (cursor.InvalidCursor, "invalid_cursor"),
    (TooManyBars, "too_many_bars"),
    (UnknownSymbol, "unknown_symbol"),
    (QueryError, "invalid_request"),
]


def error_code(exc: Exception) -> str:
    return next(code for kind, code in ERROR_CODES if isinstance(exc, kind))


def exact(model: BaseModel) -> Response:
    """The response of a model, its Decimal prices with exactly their digits (see schemas.to_json); the
    route's response_model still documents it."""
    return Response(to_json(model), media_type="application/json")


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


_ERRORS: dict[int, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Bad input (symbol, time, range, interval, zone, cursor)."},
    401: {"model": ErrorBody, "description": "A token is configured and the request lacks it."},
    404: {"model": ErrorBody, "description": "No stored tick has this symbol."},
    422: {"model": ErrorBody, "description": "A parameter of the wrong type or out of bounds."},
    503: {"model": ErrorBody, "description": "MongoDB (or, for the status, Kafka) cannot be reached."},
}
QUERY_ERRORS = (400, 401, 404, 422, 503)


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The documented error responses of a route."""
    return {code: _ERRORS[code] for code in codes}


class Service:
    """The settings and one MongoDB client (created on first use, closed at shutdown)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        mongo = settings.mongo
        self.where = redact_uri(mongo.uri.get_secret_value())
        self.secrets = [s.get_secret_value() for s in (mongo.password, mongo.uri) if s is not None]
        self._client: MongoClient[dict[str, Any]] | None = None
        self._lock = threading.Lock()

    def client(self) -> MongoClient[dict[str, Any]]:
        with self._lock:
            if self._client is None:
                from pipeline.clients.mongo import make_client

                timeout = self.settings.http.mongo_timeout_ms
                self._client = make_client(
                    self.settings.mongo,
                    serverSelectionTimeoutMS=timeout,
                    connectTimeoutMS=timeout,
                    appname="tickpipe-serve",
                )
            return self._client

    def db(self) -> Db:
        return self.client()[self.settings.mongo.database]

    def resolver(self) -> CollectionResolver:
        return CollectionResolver.from_settings(self.db(), self.settings)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def unavailable(self, exc: PyMongoError) -> str:
        return f"cannot query MongoDB at {self.where}: {redact_text(describe(exc), self.secrets)}"

    def symbol(self, text: str) -> str:
        return normalize_symbol(text, self.settings.tick.symbol_pattern)


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except OverflowError:  # a time beyond datetime's years 1-9999 (parse_time lets it through)
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise InvalidTime(f"invalid time {shown!r}: out of range (years 1 to 9999)") from None


def time_range(start: str | None, end: str | None) -> tuple[datetime | None, datetime | None]:
    """The CLI's parsing and check (from after to is refused), and an empty range (from = to) too."""
    return check_nonempty_range(_time(start), _time(end))


# Patterns in the document only (json_schema_extra): the values are checked by the query library's own
# functions, which give the CLI's messages (400), not by FastAPI (422).
TIME_PATTERN = (
    r"^(now|-[0-9]+(\.[0-9]+)?[smhdw]|[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}(:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?(Z|[+-][0-9]{2}(:?[0-9]{2})?)?)?)$"
)
ZONE_PATTERN = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,512}$"
FROM = Query(
    alias="from",
    description="Start, inclusive: ISO-8601 (no offset = UTC), `now`, or relative to now (`-15m`, `-1h`).",
    examples=["2026-01-05T13:00:00Z"],
    json_schema_extra={"pattern": TIME_PATTERN},
)
TO = Query(
    alias="to",
    description="End, exclusive (same forms as `from`).",
    examples=["2026-01-05T14:00:00Z"],
    json_schema_extra={"pattern": TIME_PATTERN},
)


def symbol_path(pattern: str) -> Any:
    return Path(
        description="e.g. PETR4 (case-insensitive)",
        examples=["PETR4"],
        json_schema_extra={"pattern": pattern},
    )


def symbols_query(pattern: str) -> Any:
    return Query(
        alias="symbol",
        description="Only these symbols (repeat the parameter); default: all.",
        json_schema_extra={"items": {"type": "string", "pattern": pattern}},
    )


def create_app(settings: Settings, metrics: HttpMetrics | None = None) -> FastAPI:
    """The application. No connection is made until a request needs MongoDB."""
    http = settings.http
    service = Service(settings)
    SYMBOL = symbol_path(settings.tick.symbol_pattern)
    SYMBOLS = symbols_query(settings.tick.symbol_pattern)
    metrics = metrics or HttpMetrics()
    token = http.token.get_secret_value().encode() if http.token is not None else None
    # The document declares the bearer scheme only when the service has a token (it then requires it).
    bearer = HTTPBearer(
        auto_error=False,
        description="Set `http.token` (or `http.token_file`) to require it on /api and /metrics.",
    )

    def open_access() -> None:
        return

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if token is None or not hmac.compare_digest(given, token):
            raise Unauthorized()

    guard = Depends(open_access if token is None else authorized)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="tickpipe read API",
        version=__version__,
        summary="Stored market ticks: ticks in a range (cursor paging), OHLC bars, statistics, latest "
        "ticks, symbols and the consumer group's status. Read-only.",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.service = service
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _handlers(app, service)

    api = APIRouter(prefix="/api", dependencies=[guard])

    @api.get(
        "/symbols", response_model=Symbols, summary="Symbols with stored ticks", responses=errors(401, 503)
    )
    def symbols() -> Response:
        db = service.db()
        return exact(Symbols(database=db.name, symbols=[t.symbol for t in latest(db, service.resolver())]))

    @api.get(
        "/ticks/{symbol}",
        response_model=TickPage,
        responses=errors(*QUERY_ERRORS),
        summary="Ticks of a symbol in a half-open range, one page at a time",
        description="Ticks with from <= ts < to in the tick order (ts, then partition, offset, topic) or "
        "its exact reverse. Without `order`: newest first, or oldest first when `from` is given (as "
        "`pipeline query ticks`). `next_cursor` continues after the last tick of the page (keyset paging: "
        "no skip, stable under concurrent writes, exact across ticks sharing a ts).",
    )
    def ticks(
        symbol: Annotated[str, SYMBOL],
        start: Annotated[str | None, FROM] = None,
        end: Annotated[str | None, TO] = None,
        limit: Annotated[
            int | None,
            Query(ge=1, le=http.max_page_size, description=f"Ticks per page (default {http.page_size})."),
        ] = None,
        order: Annotated[Order | None, Query(description="Direction (default: see above).")] = None,
        cursor_text: Annotated[
            str | None,
            Query(
                alias="cursor",
                description="`next_cursor` of the previous page.",
                json_schema_extra={"pattern": CURSOR_PATTERN},
            ),
        ] = None,
    ) -> Response:
        name = service.symbol(symbol)
        lo, hi = time_range(start, end)
        direction: Order = order or ("newest_first" if lo is None else "oldest_first")
        after = cursor.decode(cursor_text, name, direction) if cursor_text else None
        size = limit or http.page_size
        found = list(
            iter_ticks_after(
                service.db(),
                name,
                after,
                start=lo,
                end=hi,
                limit=size + 1,
                newest_first=direction == "newest_first",
                collections=service.resolver(),
            )
        )
        page_ticks = found[:size]
        more = len(found) > size
        return exact(
            TickPage(
                symbol=name,
                order=direction,
                from_=lo,
                to=hi,
                ticks=[TickOut.of(t) for t in page_ticks],
                next_cursor=cursor.encode(name, direction, page_ticks[-1]) if more else None,
            )
        )

    @api.get(
        "/ohlc/{symbol}",
        response_model=Bars,
        responses=errors(*QUERY_ERRORS),
        summary="OHLC bars with volume, trade count and VWAP",
        description="Bars computed by MongoDB (as `pipeline query ohlc`), aligned to UTC or to `align_tz`'s "
        "local midnight and hours; only bars with at least one tick.",
    )
    def bars(
        symbol: Annotated[str, SYMBOL],
        interval: Annotated[
            str,
            Query(
                description="Bar size.",
                json_schema_extra={"enum": list(INTERVALS)},
                examples=["5m"],
            ),
        ],
        start: Annotated[str | None, FROM] = None,
        end: Annotated[str | None, TO] = None,
        align_tz: Annotated[
            str | None,
            Query(
                description="IANA zone to align bars to (default UTC).",
                examples=["America/Sao_Paulo"],
                json_schema_extra={"pattern": ZONE_PATTERN},
            ),
        ] = None,
    ) -> Response:
        name = service.symbol(symbol)
        size = check_interval(interval)
        align = parse_zone(align_tz) if align_tz else None
        lo, hi = time_range(start, end)
        found = ohlc(
            service.db(), name, size, start=lo, end=hi, collections=service.resolver(), align_tz=align
        )
        if len(found) > http.max_bars:
            raise TooManyBars(
                f"too many bars: {len(found):,} {size} bars match, at most {http.max_bars:,} per request; "
                "narrow the range (from, to) or use a larger interval"
            )
        zone = None if align is None or align.key in ("UTC", "Etc/UTC") else align.key
        return exact(
            Bars(
                symbol=name,
                interval=size,
                align_tz=zone,
                from_=lo,
                to=hi,
                bars=[BarOut.of(b) for b in found],
            )
        )

    @api.get(
        "/stats",
        response_model=Stats,
        responses=errors(*QUERY_ERRORS),
        summary="Per symbol: count, first/last tick, last and average price, volume",
    )
    def statistics(symbol: Annotated[list[str] | None, SYMBOLS] = None) -> Response:
        wanted = {service.symbol(s) for s in symbol or []}
        db, resolver = service.db(), service.resolver()
        rows = _only(stats(db, resolver), wanted, resolver)
        return exact(Stats(database=db.name, stats=[StatsOut.of(r) for r in rows]))

    @api.get(
        "/latest",
        response_model=Latest,
        summary="The newest tick of each symbol",
        responses=errors(*QUERY_ERRORS),
    )
    def newest(symbol: Annotated[list[str] | None, SYMBOLS] = None) -> Response:
        wanted = {service.symbol(s) for s in symbol or []}
        db, resolver = service.db(), service.resolver()
        rows = _only(latest(db, resolver), wanted, resolver)
        return exact(Latest(database=db.name, ticks=[TickOut.of(t) for t in rows]))

    @api.get(
        "/status",
        response_model=Status,
        responses=errors(401, 503),
        summary="Committed offsets, lag and stored documents of the consumer group",
        description="As `pipeline status`: read-only, it never joins the group.",
    )
    def status() -> Status:
        from pipeline.read.status import collect

        return Status.model_validate(collect(settings, http.status_timeout_s).as_dict())

    @api.get(
        "/events/{symbol}",
        summary="Live: a server-sent event each time ticks of the symbol are stored",
        description="`text/event-stream`. An `event: ticks` message at once and then whenever the stored "
        f"ticks change (checked every `http.live_poll_s`, {http.live_poll_s:g} s), with the newest tick and "
        "the estimated number of stored documents; a comment line every 15 s keeps the connection open. "
        "On a MongoDB failure an `event: unavailable` message is sent and the stream ends (clients "
        "reconnect).",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "An event stream."},
            **errors(400, 401, 404, 422, 503),
        },
    )
    async def events(symbol: Annotated[str, SYMBOL], request: Request) -> StreamingResponse:
        name = service.symbol(symbol)
        live = LiveTicks(service, name)
        await run_in_threadpool(live.start)  # UnknownSymbol (404) or 503 before the stream starts
        return StreamingResponse(
            live.stream(request, metrics, http.live_poll_s),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    app.include_router(api)

    @app.get("/healthz", response_model=Health, tags=["health"], summary="Liveness: the process answers")
    def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        summary="Readiness: MongoDB answers a ping",
        responses={503: {"model": Health, "description": "MongoDB cannot be reached."}},
    )
    def readyz() -> Any:
        try:
            service.client().admin.command("ping")
        except PyMongoError:
            return JSONResponse({"status": "unavailable", "mongo": False}, status_code=503)
        return Health(status="ok", mongo=True)

    app.add_api_route("/metrics", metrics_endpoint(metrics), include_in_schema=False, dependencies=[guard])
    page.mount(app)
    _without_unused_schemas(app)
    return app


def _without_unused_schemas(app: FastAPI) -> None:
    """FastAPI lists its default validation-error schemas even when every route documents its own 422."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = generate()
            schemas = doc.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                others = {k: v for k, v in schemas.items() if k != name}
                text = orjson.dumps([doc["paths"], others]).decode()
                if name in schemas and f'"#/components/schemas/{name}"' not in text:
                    del schemas[name]
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


_Row = TypeVar("_Row", SymbolStats, Tick)


def _only(rows: list[_Row], wanted: set[str], resolver: CollectionResolver) -> list[_Row]:
    """The rows of the wanted symbols (all when none is asked for); UnknownSymbol if one has no row."""
    chosen = [row for row in rows if not wanted or row.symbol in wanted]
    missing = sorted(wanted - {row.symbol for row in chosen})
    if missing:
        raise UnknownSymbol(resolver.unknown_message(missing[0]))
    return chosen


class LiveEvent(BaseModel):
    """The data of an `event: ticks` message."""

    symbol: str
    latest: TickOut | None
    stored: int


class LiveTicks:
    """One live stream: the symbol's collections, their estimated counts and the newest tick."""

    def __init__(self, service: Service, symbol: str) -> None:
        self.service = service
        self.symbol = symbol
        self.collections: list[str] = []
        self.counts: dict[str, int] = {}
        self.newest: Tick | None = None

    def start(self) -> None:
        resolver = self.service.resolver()
        self.collections = resolver.collections_for(self.symbol)
        self.counts = self._counts()
        self.newest = self._newest(None)

    def _counts(self) -> dict[str, int]:
        db = self.service.db()
        return {name: db[name].estimated_document_count() for name in self.collections}

    def _newest(self, since: datetime | None) -> Tick | None:
        # Only the ticks at or after the newest one seen: an index range, not the whole history.
        found = iter_ticks_after(
            self.service.db(),
            self.symbol,
            start=since,
            limit=1,
            newest_first=True,
            collections=self.collections,
        )
        return next(iter(found), None)

    def poll(self) -> bool:
        """True when something was stored since the last poll."""
        counts = self._counts()
        if counts == self.counts:
            return False
        self.counts = counts
        newest = self._newest(self.newest.ts if self.newest else None)
        if newest is not None and (self.newest is None or order_key(newest) > order_key(self.newest)):
            self.newest = newest
        return True

    def message(self) -> bytes:
        latest_tick = TickOut.of(self.newest) if self.newest else None
        event = LiveEvent(symbol=self.symbol, latest=latest_tick, stored=sum(self.counts.values()))
        return b"event: ticks\ndata: " + to_json(event) + b"\n\n"

    async def stream(self, request: Request, metrics: HttpMetrics, poll_s: float) -> AsyncIterator[bytes]:
        metrics.live_streams.inc()
        try:
            yield b"retry: 2000\n" + self.message()
            quiet_since = time.monotonic()
            while not await request.is_disconnected():
                await asyncio.sleep(poll_s)
                try:
                    changed = await run_in_threadpool(self.poll)
                except PyMongoError as exc:
                    payload = {"error": "unavailable", "message": self.service.unavailable(exc)}
                    yield b"event: unavailable\ndata: " + orjson.dumps(payload) + b"\n\n"
                    return
                if changed:
                    yield self.message()
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= 15:
                    yield b": keep-alive\n\n"
                    quiet_since = time.monotonic()
        finally:
            metrics.live_streams.dec()


def _handlers(app: FastAPI, service: Service) -> None:
    @app.exception_handler(QueryError)
    async def bad_input(request: Request, exc: QueryError) -> JSONResponse:
        status = 404 if isinstance(exc, UnknownSymbol) else 400
        return _error(status, error_code(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, "invalid_parameter", validation_message(exc))

    @app.exception_handler(Unauthorized)
    async def unauthorized(request: Request, exc: Unauthorized) -> JSONResponse:
        return _error(
            401,
            "unauthorized",
            "this service needs a bearer token: send Authorization: Bearer <token>",
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.exception_handler(PyMongoError)
    async def mongo_down(request: Request, exc: PyMongoError) -> JSONResponse:
        message = service.unavailable(exc)
        log.warning("MongoDB unavailable", path=request.url.path, error=message)
        return _error(503, "unavailable", message)

    @app.exception_handler(PipelineError)
    async def server_down(request: Request, exc: PipelineError) -> JSONResponse:
        log.warning("server unavailable", path=request.url.path, error=str(exc))
        return _error(503, "unavailable", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "no such endpoint: see /openapi.json" if exc.status_code == 404 else str(exc.detail)
        return _error(exc.status_code, code, message, headers=getattr(exc, "headers", None))


def validation_message(exc: RequestValidationError) -> str:
    """One sentence for the first problem: 'query parameter limit: Input should be less than or equal to
    1000'."""
    errors = list(exc.errors())
    if not errors:
        return "invalid request"
    first = errors[0]
    where = [str(p) for p in first.get("loc", ())]
    kind = {"query": "query parameter", "path": "path parameter", "header": "header"}.get(
        where[0] if where else "", "parameter"
    )
    name = ".".join(where[1:]) or "?"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{kind} {name}: {first.get('msg', 'invalid')}{more}"


DESCRIPTION = """\
Read-only access to the ticks tickpipe stored in MongoDB, on the same query functions as the `pipeline
query` command line, with the same validation.

* Times are ISO-8601 in UTC; ranges are half-open (`from <= ts < to`, so `from` must be before `to`);
  `from`/`to` also take `now` and times relative to now (`-15m`, `-1h`, `-2d`).
* Ticks are in one order everywhere: `ts`, then Kafka partition, offset and topic.
* Errors are `{"error": code, "message": sentence}`: 400 bad input, 401 token missing or wrong (only when
  the service has one), 404 unknown symbol, 422 a parameter of the wrong type, 503 MongoDB (or Kafka, for
  the status) unreachable.
"""
