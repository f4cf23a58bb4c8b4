"""`pipeline serve`: the read-only HTTP API and the live candlestick page (pipeline/read/http)."""

from __future__ import annotations

import argparse

from pipeline.cli.common import add_config_option, settings_from, write_output


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve the read API (JSON, OpenAPI) and a live candlestick page over HTTP",
        description="A read-only HTTP service on the query functions of `pipeline query` and `pipeline "
        "status`: /api/ticks (cursor paging), /api/ohlc, /api/stats, /api/latest, /api/symbols, "
        "/api/status, /api/events (live), the page at /, /openapi.json, /metrics, /healthz, /readyz. Binds "
        "http.host:http.port (127.0.0.1:8080 by default); a bearer token (http.token or http.token_file) "
        "is required when set. SIGTERM/SIGINT stop it (exit 0). Needs the http extra: pip install "
        "'tickpipe[http]'.",
    )
    add_config_option(parser)
    parser.add_argument("--host", help="address to bind (overrides http.host)")
    parser.add_argument("--port", type=_port, help="port to bind, 0 = any free port (overrides http.port)")
    parser.add_argument(
        "--reference",
        choices=("markdown", "openapi"),
        help="print the API reference (docs/http-api.md) or the OpenAPI document of the default "
        "configuration instead of serving",
    )
    parser.add_argument("--output", "-o", metavar="FILE", help="with --reference: write to FILE")
    parser.set_defaults(func=serve)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535)")
    return int(text)


def _missing_extra() -> str | None:
    import importlib.util

    missing = [m for m in ("fastapi", "uvicorn", "plotly") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{', '.join(missing)} not installed: install the http extra (pip install 'tickpipe[http]')"
    return None


def serve(args: argparse.Namespace) -> int:
    from pipeline.core.errors import PipelineError

    problem = _missing_extra()
    if problem:
        raise PipelineError(problem)
    if args.reference:
        from pipeline.read.http.reference import render_markdown, render_openapi

        write_output(render_markdown() if args.reference == "markdown" else render_openapi(), args.output)
        return 0
    from pipeline.read.http.server import serve as run

    settings = settings_from(args)
    updates = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if updates:
        settings = settings.model_copy(update={"http": settings.http.model_copy(update=updates)})
    return run(settings)
