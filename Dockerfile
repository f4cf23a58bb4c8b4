# syntax=docker/dockerfile:1
# tickpipe worker image (also runs the ticker simulator: `pipeline produce ...`).
#
#   docker build -t tickpipe:0.1.0 .
#   docker run --rm -e PIPELINE_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 -e PIPELINE_MONGO__URI=... tickpipe:0.1.0
#
# Configuration comes from PIPELINE_<SECTION>__<KEY> environment variables only (no config file is baked in);
# see docs/configuration.md. The image holds the product and its runtime dependencies only: no compilers, no
# test servers (the `embedded` and `dev` extras are never installed here).

# ---- build: a wheel of tickpipe, installed with its dependencies into a self-contained virtualenv --------
FROM python:3.11.13-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Every runtime dependency (confluent-kafka, pymongo, pydantic-core, orjson) ships manylinux wheels for
# amd64 and arm64, so no compiler is needed even here.
COPY pyproject.toml README.md ./
COPY pipeline/ pipeline/
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install "$(ls /wheels/tickpipe-*.whl)[http]" \
    && /opt/venv/bin/python -c "import pipeline.cli, confluent_kafka, pymongo, pydantic, fastapi, uvicorn" \
    && /opt/venv/bin/pipeline --help > /dev/null

# ---- runtime: the same slim base, the virtualenv, an unprivileged user -----------------------------------
FROM python:3.11.13-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="tickpipe" \
      org.opencontainers.image.description="Kafka-to-MongoDB persistence pipeline for market ticks" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 tickpipe \
    && useradd --system --uid 10001 --gid tickpipe --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin tickpipe

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIPELINE_LOG__FORMAT=json \
    PIPELINE_METRICS__HOST=0.0.0.0 \
    PIPELINE_METRICS__PORT=9108

WORKDIR /app
USER 10001:10001

# Prometheus /metrics, /healthz (liveness) and /readyz (readiness) of the worker.
EXPOSE 9108

# Liveness of the worker loop (slim has no curl). Containers running `produce` override this check.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PIPELINE_METRICS__PORT', '9108'), timeout=4)"]

# SIGTERM (docker stop): the worker flushes, commits and exits 0 within worker.shutdown_timeout_s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["pipeline"]
CMD ["run"]
