"""Why a keymeta process cannot start, as one line an operator can act on: its settings or its database.

The CLI, the API and the workers all start the same way: read the ``KEYMETA_*`` settings, then reach the
database (starting the embedded server when no URL is set). A failure there is a configuration problem,
never a bug: the process says so in one ``error:`` line and exits non-zero instead of printing a traceback.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from pydantic import ValidationError

from domain.platform.database import database_url
from domain.platform.embedded_postgres import EmbeddedPostgresError
from domain.platform.settings import Settings, get_settings

START_PROBLEMS = (ValidationError, EmbeddedPostgresError)


def describe(exc: BaseException) -> str:
    """The one line for a start problem (one of ``START_PROBLEMS``)."""
    if isinstance(exc, ValidationError):
        error = exc.errors()[0]
        field = ".".join(str(part) for part in error.get("loc", ()))
        message = str(error.get("msg", exc)).removeprefix("Value error, ")
        if field and "KEYMETA_" not in message:
            message = f"{field}: {message}"
        return "invalid configuration: " + " ".join(message.split())
    return " ".join(str(exc).split())


def settings_or_exit() -> Settings:
    """The settings; exit 1 with one line when they are invalid."""
    try:
        return get_settings()
    except START_PROBLEMS as exc:
        _exit(exc)


def ready_settings() -> Settings:
    """The settings, with the database reachable (the embedded server started); exit 1 with one line if not."""
    settings = settings_or_exit()
    try:
        database_url(settings)
    except START_PROBLEMS as exc:
        _exit(exc)
    return settings


def _exit(exc: BaseException) -> NoReturn:
    print(f"error: {describe(exc)}", file=sys.stderr, flush=True)
    raise SystemExit(1) from None
