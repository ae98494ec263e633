"""Prefect logs adapter: messages for the log of the flow or task run they happen in."""

from __future__ import annotations

import logging


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run's logger, or a plain one outside a run (`plain_calls`, tests, the CLI)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("perennial")
