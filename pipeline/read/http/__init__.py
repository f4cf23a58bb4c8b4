"""`pipeline serve`: a read-only HTTP API over the query library, and a live candlestick page.

- `app`: the FastAPI application (`create_app(settings)`): /api/ticks (cursor paging), /api/ohlc,
  /api/stats, /api/latest, /api/symbols, /api/status, /api/events (server-sent events), /healthz, /readyz,
  /metrics, /openapi.json.
- `schemas`: the response models (the OpenAPI document is generated from them).
- `cursor`: page cursors (a position in the tick order, decoded strictly).
- `metrics`: Prometheus request counts and latency, on the service's own registry.
- `page`: the page at `/` and the chart library served from the installed plotly package.
- `server`: binding and running it with uvicorn.
- `reference`: docs/http-api.md, generated from the OpenAPI document.

Needs the `http` extra (FastAPI, uvicorn, plotly): `pip install 'tickpipe[http]'`.
"""

from pipeline.read.http.app import create_app

__all__ = ["create_app"]
