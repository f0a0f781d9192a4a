"""Output and error conventions shared by every ``keymeta`` command: the result on stdout, a one-line
error and any log lines on stderr."""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import structlog
from sqlalchemy.exc import SQLAlchemyError

from domain.platform.embedded_postgres import cause_line

F = TypeVar("F", bound=Callable[..., Any])


class CliError(click.ClickException):
    """A one-line reason on stderr and exit code 1."""

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def json_option(func: F) -> F:
    """Adds ``--json`` and turns the command's returned dict into output."""

    @click.option("--json", "as_json", is_flag=True, help="Print a machine-readable JSON result.")
    @functools.wraps(func)
    def wrapper(*args: Any, as_json: bool, **kwargs: Any) -> None:
        if not structlog.is_configured():  # structlog's default writes to stdout, which is the result's
            structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(sys.stderr))
        try:
            result = func(*args, **kwargs)
        except SQLAlchemyError as exc:
            # Unmigrated schema, unreachable server, a lost race on a unique key: one line, not a traceback.
            raise CliError(f"database error: {_first_line(exc)}") from exc
        if result is None:
            return
        if as_json:
            click.echo(json.dumps(result, default=_json_default, sort_keys=False))
        else:
            _print_human(result)

    return wrapper  # type: ignore[return-value]


def _first_line(exc: SQLAlchemyError) -> str:
    cause = getattr(exc, "orig", None) or exc
    return cause_line(str(cause)) or type(cause).__name__


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _print_human(result: dict[str, Any], indent: str = "") -> None:
    for key, value in result.items():
        if isinstance(value, dict):
            click.echo(f"{indent}{key}:")
            _print_human(value, indent + "  ")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            click.echo(f"{indent}{key}:")
            for item in value:
                click.echo(f"{indent}  - " + ", ".join(f"{k}={_plain(v)}" for k, v in item.items()))
        else:
            click.echo(f"{indent}{key}: {_plain(value)}")


def _plain(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return str(_json_default(value))
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    if value is None:
        return "-"
    return str(value)


def parse_time(text: str) -> dt.datetime:
    """ISO 8601 (``Z`` or an offset; naive means UTC) or Unix seconds."""
    stripped = text.strip()
    try:
        if stripped.lstrip("-").isdigit():
            return dt.datetime.fromtimestamp(int(stripped), dt.UTC)
        parsed = dt.datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError) as exc:
        raise CliError(f"not a time: {text!r} (use ISO 8601 or Unix seconds)") from exc
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)
