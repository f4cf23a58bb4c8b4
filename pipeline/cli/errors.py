"""Errors of the command line itself (imported only when a command runs: `pipeline --help` stays instant)."""

from __future__ import annotations

from pipeline.core.errors import PipelineError


class UsageError(PipelineError):
    """Bad input found after parsing (a topic name, a topic that does not exist): one line, exit 2."""

    exit_code = 2
