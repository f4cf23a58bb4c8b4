"""Prometheus metrics of the HTTP service, on its own registry (as the worker's `Metrics`), served at
`/metrics`. Requests are labelled by route template (`/api/ohlc/{symbol}`), never by raw path, so the
number of series stays bounded whatever clients send."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED = "<unmatched>"


class HttpMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tickpipe_http_requests",
            "HTTP requests answered, by route template, method and status code",
            ["route", "method", "status"],
            registry=r,
        )
        self.seconds = Histogram(
            "tickpipe_http_request_seconds",
            "Time to answer an HTTP request (to the first byte of a streamed response)",
            ["route", "method"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.in_progress = Gauge(
            "tickpipe_http_requests_in_progress", "HTTP requests being answered", registry=r
        )
        self.live_streams = Gauge(
            "tickpipe_http_live_streams", "Open live event streams (/api/events)", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The path template of the route that answered (e.g. `/api/ticks/{symbol}`): routing records the route
    in the request scope; requests no route matched are `<unmatched>`."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class MetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: streamed responses are not buffered)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET")
        started = time.perf_counter()
        status = {"code": 500}
        timed = {"done": False}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = int(message["status"])
                elapsed = time.perf_counter() - started
                self.metrics.seconds.labels(route_template(scope), method).observe(elapsed)
                timed["done"] = True
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.in_progress.dec()
            route = route_template(scope)
            if not timed["done"]:
                self.metrics.seconds.labels(route, method).observe(time.perf_counter() - started)
            self.metrics.requests.labels(route, method, str(status["code"])).inc()


def metrics_endpoint(metrics: HttpMetrics) -> Callable[[Request], Awaitable[Response]]:
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    async def render(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return render
