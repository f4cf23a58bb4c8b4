"""The page at `/`: a candlestick chart with volume and the latest ticks of a symbol, updated live.

The page (static/index.html, app.js, app.css) is tickpipe's own code; the chart library is Plotly's
`plotly.min.js`, served from the installed `plotly` Python package (a dependency of the `http` extra, which
ships the built JavaScript in its wheel): nothing is copied into the repository, nothing is fetched from a
CDN, and the version is whatever pip installed. It is sent gzip-compressed (about a third of its 4.8 MB) and
cached by the browser under a URL naming the version.
"""

from __future__ import annotations

import gzip
import threading
from importlib import metadata, resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).with_name("static")


def plotly_version() -> str | None:
    try:
        return metadata.version("plotly")
    except metadata.PackageNotFoundError:
        return None


def plotly_js() -> bytes | None:
    """plotly.min.js from the installed plotly package, or None when it is not installed."""
    if plotly_version() is None:
        return None
    try:
        return (resources.files("plotly") / "package_data" / "plotly.min.js").read_bytes()
    except (FileNotFoundError, ModuleNotFoundError):
        return None


class _Asset:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plain: bytes | None = None
        self._gzip: bytes | None = None

    def get(self, compressed: bool) -> bytes | None:
        with self._lock:
            if self._plain is None:
                self._plain = plotly_js()
                if self._plain is not None:
                    self._gzip = gzip.compress(self._plain, compresslevel=6, mtime=0)
            return self._gzip if compressed else self._plain


def mount(app: FastAPI) -> None:
    asset = _Asset()
    version = plotly_version() or "missing"

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        html = (STATIC / "index.html").read_text().replace("{{PLOTLY_VERSION}}", version)
        return Response(html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    @app.get("/vendor/plotly-{version}.min.js", include_in_schema=False)
    def plotly(request: Request) -> Response:
        compressed = "gzip" in request.headers.get("accept-encoding", "")
        body = asset.get(compressed)
        if body is None:
            return JSONResponse(
                {
                    "error": "unavailable",
                    "message": "the chart library is missing: install tickpipe with the http extra "
                    "(pip install 'tickpipe[http]')",
                },
                status_code=503,
            )
        headers = {"Cache-Control": "public, max-age=31536000, immutable", "Vary": "Accept-Encoding"}
        if compressed:
            headers["Content-Encoding"] = "gzip"
        return Response(body, media_type="text/javascript", headers=headers)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
