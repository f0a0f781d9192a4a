"""``keymeta``: the operator CLI (docs/operations.md). Commands are thin: they own the transaction, services flush.

Each command group lives in its own module and registers itself on ``main``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import click

from domain.platform import startup
from domain.platform.startup import START_PROBLEMS


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
        except START_PROBLEMS as exc:  # settings, or the embedded server a command that needs the database starts
            click.echo(f"error: {startup.describe(exc)}", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


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
