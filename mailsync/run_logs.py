"""mailsync's own warnings and errors in the Prefect run's logs (the UI's Logs tab).

The modules below mailsync log through stdlib loggers (``mailsync.sync.rounds`` says a
folder's delta state expired, ``mailsync.graph.delta`` that a link is odd): Prefect sends
only its run loggers' records to its API, so these reached a terminal, never the UI.

Prefect's own answer, ``PREFECT_LOGGING_EXTRA_LOGGERS=mailsync``, attaches its
``APILogHandler`` to the logger for good; a record logged outside any flow or task run (a
CLI command, a test of a module) then makes that handler warn ("attempted to send logs to
the API without a flow run id"), and the test suite treats warnings as errors. The handler
here is the same ``APILogHandler``, with one check before it: a record is sent only while a
flow or task run context is active in the logging thread, and dropped quietly otherwise
(stdlib handlers, the console's, still see it). Records keep their logger's name, so the UI
shows ``mailsync.sync.rounds`` next to the message.

Installed by each flow when it starts, in whatever process runs it (``mailsync sync``, a
worker's flow run process): idempotent, and skipped when the operator already listed
``mailsync`` in PREFECT_LOGGING_EXTRA_LOGGERS (one record would be sent twice).
"""

from __future__ import annotations

import logging
import threading

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

LOGGER = "mailsync"
LEVEL = logging.WARNING  # the run's own logger says what went well; these say what did not
_installing = threading.Lock()  # sync-all starts a flow's body in several threads at once


class RunContextLogHandler(APILogHandler):
    """Prefect's API log handler, for records logged inside a flow or task run only."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            return  # no run to attach it to: a CLI command's setup, a unit test
        super().emit(record)


def forward_to_run_logs() -> None:
    """Send the ``mailsync`` logger's warnings and errors to the current run's logs."""
    logger = logging.getLogger(LOGGER)
    with _installing:
        if any(isinstance(handler, APILogHandler) for handler in logger.handlers):
            return  # installed already, or by PREFECT_LOGGING_EXTRA_LOGGERS
        logger.addHandler(RunContextLogHandler(level=LEVEL))
        if logger.getEffectiveLevel() > LEVEL:  # a quieter root must not drop them first
            logger.setLevel(LEVEL)
