"""`pipeline run`: the long-running worker."""

from __future__ import annotations

import argparse
import signal
from types import FrameType
from typing import TYPE_CHECKING

from pipeline.cli.common import add_config_option, fail, settings_from
from pipeline.ops.logs import get_logger

if TYPE_CHECKING:
    from pipeline.ingest.worker import Worker

log = get_logger("pipeline.cli")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "run",
        help="run the worker: consume ticks from Kafka, store them in MongoDB, commit after durable writes",
        description="Run the worker until SIGTERM/SIGINT (then flush, commit and exit 0; a second signal "
        "stops without waiting for unfinished writes, which stay uncommitted).",
    )
    add_config_option(parser)
    parser.set_defaults(func=run)


def install_signal_handlers(worker: Worker) -> None:
    def handle(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if worker.stopping:
            log.warning("second signal: stopping now; unfinished writes stay uncommitted", signal=name)
            worker.request_stop(abort=True)
        else:
            log.info("stopping: flushing and committing", signal=name)
            worker.request_stop()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def run(args: argparse.Namespace) -> int:
    # A signal while the configuration is read and the clients are made: nothing to flush yet, so the
    # worker is not started at all (exit 0), rather than the process dying of the signal.
    early: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _f: early.append(signum)) for sig in STOP_SIGNALS}
    try:
        from pipeline.ingest.worker import Worker

        settings = settings_from(args)
        worker = Worker(settings)
    except BaseException:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        raise
    install_signal_handlers(worker)
    if early:
        log.info("stopping before the worker started", signal=signal.Signals(early[0]).name)
        worker.request_stop()
    code = worker.run()
    if worker.error is not None:  # the log has it too; the operator's terminal gets one line
        return fail(str(worker.error), code)
    return code


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
