"""Running the service: bind the socket first (a busy port or a bad address is one line, exit 1), then
uvicorn on it, logging through tickpipe's logging (JSON lines or text). SIGTERM/SIGINT: finish the
requests in flight, close the live streams, exit 0."""

from __future__ import annotations

import logging
import signal
import socket

from pipeline.core.errors import PipelineError
from pipeline.ops.config import Settings
from pipeline.ops.logs import get_logger

log = get_logger("pipeline.read.http.server")

# Live event streams never end by themselves: at shutdown they get this long, then are closed.
GRACEFUL_SHUTDOWN_S = 3


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on connections of a socket that says it is
    # TCP, and without it every response waits ~40 ms (Nagle and delayed ACKs; bench/http_load found it).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PipelineError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings) -> int:
    import uvicorn

    from pipeline.read.http import create_app

    http = settings.http
    sock = bind(http.host, http.port)
    host, port = sock.getsockname()[:2]
    app = create_app(settings)
    # uvicorn's own loggers propagate to the root handler that setup_logging installed.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=http.access_log,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        server_header=False,
        proxy_headers=False,
        lifespan="on",
    )
    where = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    log.info(
        "serving the read API and the chart page",
        url=where,
        database=settings.mongo.database,
        token="required" if http.token is not None else "none",
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGTERM/SIGINT itself (graceful shutdown), then re-raises the signal to the handlers
    # it found: make those no-ops, so that a requested stop ends the process with exit code 0.
    stopped_by: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stopped_by.append(number))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    log.info("stopped", signal=signal.Signals(stopped_by[0]).name if stopped_by else None)
    return 0
