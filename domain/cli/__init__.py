"""``keymeta``: the operator CLI (SPEC §4). Commands are thin: they own the transaction, services flush.

Each command group lives in its own module and registers itself on ``main``.
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Operate keymeta: schema, bootstrap, API keys, products, license keys, block list."""


def _register() -> None:
    from domain.cli import access, audit, catalog, setup, signing_keys, verify, webhooks  # noqa: F401 - importing registers the commands


_register()
