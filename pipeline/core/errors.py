"""Error classes and the transient/permanent classification that decides retry vs. stop vs. dead-letter.

Transient errors (a server unreachable, timeouts, not-primary, write-concern failures) are retried with
backoff forever, without committing. Data errors (one message that can never be stored) go to the dead-letter
destination. Everything else is fatal: the worker stops without committing past it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
    WTimeoutError,
)

_TOPOLOGY_NOISE = re.compile(r" \(configured timeouts:[^)]*\)")


class PipelineError(Exception):
    """An error with a one-line, secret-free message meant for the operator."""

    # The process exit code when this error ends a command (the one place exit codes are decided).
    exit_code = 1


class ConfigurationError(PipelineError):
    """The configuration cannot work (bad input, or a server refuses a setting): fix it and start again."""

    exit_code = 2


class StartupError(PipelineError):
    """A server is unreachable or rejects us at start-up (bounded wait, non-zero exit)."""


class FatalError(PipelineError):
    """The worker cannot continue safely; it stops without committing past the failure."""


class PoisonMessageError(FatalError):
    """A message that can never be stored, with errors.tolerance=none."""


class TransientError(PipelineError):
    """Retry later: nothing is committed meanwhile."""


class Aborted(Exception):
    """In-flight work was abandoned (shutdown timeout or rebalance); it stays uncommitted."""


# MongoDB error codes that mean "try again later" (network, elections, shutdowns, lock and time limits).
TRANSIENT_MONGO_CODES = frozenset(
    {
        6,  # HostUnreachable
        7,  # HostNotFound
        24,  # LockTimeout
        46,  # LockBusy
        50,  # MaxTimeMSExpired
        64,  # WriteConcernFailed
        89,  # NetworkTimeout
        91,  # ShutdownInProgress
        112,  # WriteConflict
        133,  # FailedToSatisfyReadPreference
        189,  # PrimarySteppedDown
        262,  # ExceededTimeLimit
        9001,  # SocketException
        10107,  # NotWritablePrimary
        11600,  # InterruptedAtShutdown
        11601,  # Interrupted
        11602,  # InterruptedDueToReplStateChange
        13435,  # NotPrimaryNoSecondaryOk
        13436,  # NotPrimaryOrSecondary
        63,  # StaleShardVersion
        150,  # StaleEpoch
        13388,  # StaleConfig
    }
)
DUPLICATE_KEY = 11000
# 11001 is the older servers' code for a duplicate key on update.
DUPLICATE_KEY_CODES = frozenset({DUPLICATE_KEY, 11001})
AUTH_CODES = frozenset({13, 18})  # Unauthorized, AuthenticationFailed


def is_transient_mongo(exc: BaseException) -> bool:
    if isinstance(exc, TransientError):
        return True
    if isinstance(exc, ConnectionFailure | WriteConcernError | WTimeoutError | ExecutionTimeout):
        return True
    if isinstance(exc, OperationFailure):
        if exc.code in AUTH_CODES:
            return False
        return exc.code in TRANSIENT_MONGO_CODES or exc.has_error_label("RetryableWriteError")
    if isinstance(exc, PyMongoError):
        return exc.has_error_label("RetryableWriteError") or exc.has_error_label("TransientTransactionError")
    return False


# librdkafka error codes on commit that mean the partitions are being (or were) taken away from us.
_REBALANCE_CODES = frozenset(
    {
        KafkaError.REBALANCE_IN_PROGRESS,
        KafkaError.ILLEGAL_GENERATION,
        KafkaError.UNKNOWN_MEMBER_ID,
        KafkaError.FENCED_INSTANCE_ID,
        KafkaError._ASSIGNMENT_LOST,
        KafkaError._STATE,
    }
)


def kafka_error_of(exc: BaseException) -> KafkaError | None:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def is_rebalance_error(error: KafkaError) -> bool:
    return error.code() in _REBALANCE_CODES


def is_transient_kafka(error: KafkaError) -> bool:
    if error.fatal():
        return False
    return bool(error.retriable()) or error.code() in (
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError._WAIT_COORD,
        KafkaError.NETWORK_EXCEPTION,
    )


def describe(exc: BaseException) -> str:
    """A one-line description of an exception, without driver stack noise."""
    error = kafka_error_of(exc)
    if error is not None:
        return f"{error.name()}: {error.str()}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, ConnectionFailure):
        # Keep the cause, drop pymongo's timeout settings and topology dump.
        text = _TOPOLOGY_NOISE.sub("", text.split(", Timeout:")[0])
    if isinstance(exc, OperationFailure):
        details: Mapping[str, Any] = exc.details or {}
        text = str(details.get("errmsg") or text)
        return f"{type(exc).__name__} (code {exc.code}): {text}"[:500]
    return f"{type(exc).__name__}: {text}"[:500]
