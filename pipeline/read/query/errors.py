"""Bad input to a query: one line meant for the user, exit code 2 from the command line (`exit_code`)."""

from __future__ import annotations

from pipeline.core.errors import PipelineError


class QueryError(PipelineError, ValueError):
    """Bad input to a query. The message is one line meant for the user."""

    exit_code = 2


class InvalidSymbol(QueryError):
    """Not a string, or does not match the symbol pattern (so it can never be a query operator)."""


class UnknownSymbol(QueryError):
    """No stored tick has this symbol in any tick collection."""


class InvalidRange(QueryError):
    """start is after end, or a bound is not a datetime."""


class InvalidInterval(QueryError):
    """Not one of INTERVALS."""


class InvalidTime(QueryError):
    """A time argument that is neither ISO-8601 nor a relative time such as -1h."""


class InvalidTimezone(QueryError):
    """Not an IANA time zone name (zoneinfo)."""
