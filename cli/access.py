"""``keymeta api-keys`` and ``keymeta blocklist``."""

from __future__ import annotations

from typing import Any

import click

from cli import main
from cli.support import CliError, json_option, parse_time
from domain.access import api_keys, block_rules
from domain.platform.database import unit_of_work
from domain.signing.envelope import DEFAULT_SCHEME, SignatureScheme


@main.group("api-keys")
def api_keys_group() -> None:
    """API keys (the secret is printed once, at creation)."""


@api_keys_group.command("create")
@click.option("--name", default="api key", show_default=True)
@click.option("--capability", "capabilities", multiple=True,
              help=f"Repeatable; default {api_keys.CAPABILITIES[0]}. Known: {', '.join(api_keys.CAPABILITIES)}.")
@click.option("--allow-ip", "allowed", multiple=True, help="Repeatable CIDR the key may be used from.")
@click.option("--expires-at", default=None, help="ISO 8601 or Unix seconds.")
@click.option("--management", is_flag=True,
              help="A back-office key: may omit the identifier on the metadata endpoints (the vendor's SDKs do).")
@click.option("--signature-scheme", type=click.Choice([s.value for s in SignatureScheme]),
              default=DEFAULT_SCHEME.value, show_default=True,
              help="What signatures cover: response_base64 (documented) or envelope (the vendor's SDKs).")
@json_option
def api_keys_create(name: str, capabilities: tuple[str, ...], allowed: tuple[str, ...],
                    expires_at: str | None, management: bool, signature_scheme: str) -> dict[str, Any]:
    try:
        with unit_of_work() as session:
            issued = api_keys.create_api_key(
                session, name=name, capabilities=list(capabilities), allowed_cidrs=list(allowed),
                expires_at=parse_time(expires_at) if expires_at else None, management=management,
                signature_scheme=signature_scheme)
            row = issued.row
            return {"id": row.id, "name": row.name, "api_key": issued.secret,
                    "capabilities": row.capabilities, "allowed_cidrs": row.allowed_cidrs,
                    "expires_at": row.expires_at, "management": row.management,
                    "signature_scheme": str(row.signature_scheme)}
    except api_keys.ApiKeyError as exc:
        raise CliError(str(exc)) from exc


@api_keys_group.command("deactivate")
@click.argument("key_id", type=int)
@json_option
def api_keys_deactivate(key_id: int) -> dict[str, Any]:
    try:
        with unit_of_work() as session:
            row = api_keys.deactivate_api_key(session, key_id)
            return {"id": row.id, "name": row.name, "active": row.active}
    except api_keys.ApiKeyError as exc:
        raise CliError(str(exc)) from exc

@main.group()
def blocklist() -> None:
    """Addresses and identifiers refused with code 150."""


@blocklist.command("add")
@click.option("--ip", default=None, help="An address or CIDR.")
@click.option("--identifier", default=None)
@json_option
def blocklist_add(ip: str | None, identifier: str | None) -> dict[str, Any]:
    try:
        with unit_of_work() as session:
            row, created = block_rules.add_block_rule(session, ip=ip, identifier=identifier)
            return {"id": row.id, "kind": row.kind, "value": row.value, "created": created}
    except block_rules.BlockRuleError as exc:
        raise CliError(str(exc)) from exc
