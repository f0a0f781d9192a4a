"""``keymeta``: the operator CLI (docs/operations.md). Commands are thin: they own the transaction, services flush.

Each command group lives in its own module and registers itself on ``main``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click
from pydantic import ValidationError

from domain.platform.embedded_postgres import EmbeddedPostgresError


class OneLineErrors(click.Group):
    """Every failure, usage mistakes included, is one ``error: …`` line on stderr and a non-zero exit."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        except EmbeddedPostgresError as exc:  # any command that needs the database starts the embedded server
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)
        except ValidationError as exc:  # KEYMETA_* settings, read by the first command that needs them
            click.echo(f"error: invalid configuration: {_first_problem(exc)}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error.get("loc", ()))
    message = str(error.get("msg", exc)).removeprefix("Value error, ")
    if field and "KEYMETA_" not in message:
        message = f"{field}: {message}"
    return " ".join(message.split())


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate keymeta: schema, bootstrap, API keys, products, license keys, block list, audit, webhooks,
    signing keys."""


def _register() -> None:
    from cli import (  # noqa: F401 - importing registers the commands
        access,
        audit,
        catalog,
        database,
        setup,
        signing_keys,
        verify,
        webhooks,
    )


_register()
