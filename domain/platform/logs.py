"""structlog setup: JSON lines in production, pretty output on a terminal; context vars carry request ids."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from domain.platform.settings import Settings


def configure_logging(settings: Settings) -> None:
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger


REQUEST_IDS_LOGGED = 20  # a summary line names at most this many request ids


def request_id_fields(request_ids: list[str]) -> dict[str, Any]:
    """Log fields of a batch summary line: ``request_ids`` (capped), and ``request_id`` when there is one.

    A task's message carries a request id only when it was rung for a single item, so a batch line names
    the request ids of the rows it handled instead; per-row lines carry their own ``request_id``.
    """
    fields: dict[str, Any] = {"request_ids": request_ids[:REQUEST_IDS_LOGGED]}
    if len(request_ids) > REQUEST_IDS_LOGGED:
        fields["request_ids_omitted"] = len(request_ids) - REQUEST_IDS_LOGGED
    if len(request_ids) == 1:
        fields["request_id"] = request_ids[0]
    return fields
