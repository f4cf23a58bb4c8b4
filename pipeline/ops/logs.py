"""Structured logging: JSON lines when stderr is not a terminal, readable key=value text when it is.

Use `log = get_logger(__name__)` and `log.info("batch stored", docs=1000, ms=12.5)`: keyword fields become
JSON keys (or `key=value` in text mode). Nothing here ever formats a secret: callers pass redacted values.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from typing import Any

import orjson

_FIELDS = "_fields"


class StructuredLogger:
    __slots__ = ("_logger",)

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, message: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(level, message, extra={_FIELDS: fields}, stacklevel=3)

    def debug(self, message: str, **fields: Any) -> None:
        self._log(logging.DEBUG, message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._log(logging.INFO, message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._log(logging.WARNING, message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log(logging.ERROR, message, fields)

    def is_debug(self) -> bool:
        return self._logger.isEnabledFor(logging.DEBUG)


def get_logger(name: str) -> StructuredLogger:
    return StructuredLogger(logging.getLogger(name))


def _default(value: Any) -> Any:
    return str(value)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, _FIELDS, {}))
        if record.exc_info and record.levelno >= logging.ERROR:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=_default).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}"
        fields = getattr(record, _FIELDS, {})
        tail = " ".join(f"{key}={_text(value)}" for key, value in fields.items())
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        return f"{line}  {tail}" if tail else line


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e6 else f"{value:.0f}"
    text = str(value)
    return f'"{text}"' if " " in text else text


class RepeatFilter(logging.Filter):
    """Lets the first of a run of identical warnings/errors through, then at most one per `window_s`, with
    `repeated=N` counting what was held back. During an outage librdkafka reports every reconnect attempt
    (many per second); an operator needs one line per problem, not thousands."""

    _DIGITS = re.compile(r"\d+")
    # Fields that change on every repetition of the same problem (they don't make it a different problem).
    VOLATILE = frozenset({"attempt", "retry_in_s", "batch", "holding_messages", "repeated"})

    def __init__(self, prefixes: tuple[str, ...], window_s: float = 10.0) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.window_s = window_s
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or not record.name.startswith(self.prefixes):
            return True
        fields = getattr(record, _FIELDS, {})
        # Numbers inside the message or error text vary between repetitions ("after 3ms"); other fields
        # (an offset, a topic) make a record a different event.
        text = self._DIGITS.sub("#", f"{record.getMessage()}|{fields.get('error', '')}")
        stable = sorted((k, str(v)) for k, v in fields.items() if k not in self.VOLATILE and k != "error")
        key = f"{record.name}|{text}|{stable}"
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (0.0, 0))
            if now - last < self.window_s:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
            if len(self._seen) > 1000:  # bounded memory whatever the variety of messages
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.window_s}
        if held:
            setattr(record, _FIELDS, {**fields, "repeated": held})
        return True


def setup_logging(level: str = "INFO", fmt: str = "auto", stream: Any = None) -> None:
    stream = stream or sys.stderr
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if use_json else TextFormatter())
    handler.addFilter(
        RepeatFilter(prefixes=("kafka", "pipeline.clients.source", "pipeline.ingest.writer", "pymongo"))
    )
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party loggers are noisy at debug and may echo connection strings; keep them at warning.
    for noisy in ("pymongo", "kafka", "urllib3", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
