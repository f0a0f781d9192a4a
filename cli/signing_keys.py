"""``keymeta signing-keys list | rotate | revoke | advance``."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click
from sqlalchemy import select

from cli import main
from cli.setup import master_key_or_fail
from cli.support import CliError, json_option
from domain.platform.database import unit_of_work
from domain.platform.settings import get_settings
from domain.signing import rotation
from domain.signing.keys import SigningKeyError
from domain.signing.master_key import MasterKeyError
from domain.signing.models import SigningKey

_FAILURES = (rotation.KeyRotationError, MasterKeyError, SigningKeyError)


@main.group("signing-keys")
def signing_keys() -> None:
    """Signing keys: lifecycle pending → active → retired (or revoked), one active key per scope."""


def _key(row: SigningKey) -> dict[str, Any]:
    return {"kid": row.kid, "scope": row.scope, "state": row.state, "key_size": row.key_size,
            "created_at": row.created_at, "activated_at": row.activated_at, "retired_at": row.retired_at,
            "revoked_at": row.revoked_at,
            "private_key": "sealed" if row.private_key_encrypted is not None else "destroyed"}


def _transitions(outcome: rotation.Outcome) -> list[dict[str, Any]]:
    return [{"kid": t.kid, "scope": t.scope, "from": t.from_state, "to": t.to_state, "event": t.event_type}
            for t in outcome.transitions]


def _scope_summary(scope: str) -> dict[str, Any]:
    overlap = dt.timedelta(seconds=get_settings().key_overlap_seconds)
    with unit_of_work() as session:
        state = rotation.scope_state(session, scope)
        return {
            "scope": scope,
            "active": state.active.kid if state.active else None,
            "pending": [{"kid": k.kid, "activates_after": k.created_at + overlap} for k in state.pending],
        }


@signing_keys.command("list")
@click.option("--scope", default=None, help="Only this scope: global or product:ID.")
@json_option
def list_keys(scope: str | None) -> dict[str, Any]:
    """Every signing key and its state (private halves are never shown)."""
    with unit_of_work() as session:
        query = select(SigningKey).order_by(SigningKey.scope, SigningKey.id)
        if scope is not None:
            try:
                query = query.where(SigningKey.scope == rotation.parse_scope(session, scope))
            except rotation.KeyRotationError as exc:
                raise CliError(str(exc)) from exc
        return {"keys": [_key(row) for row in session.scalars(query)]}


@signing_keys.command("rotate")
@click.option("--scope", default="global", show_default=True, help="global or product:ID.")
@click.option("--now", "immediate", is_flag=True,
              help="Emergency: activate the new key at once instead of after KEYMETA_KEY_OVERLAP_SECONDS.")
@json_option
def rotate(scope: str, immediate: bool) -> dict[str, Any]:
    """Start a rotation: a pending key is published now and signs after the overlap (or at once, --now)."""
    master_key = master_key_or_fail()
    try:
        with unit_of_work() as session:
            resolved = rotation.parse_scope(session, scope)
            outcome = rotation.rotate(session, resolved, immediate=immediate, master_key=master_key)
    except _FAILURES as exc:
        raise CliError(str(exc)) from exc
    return {**_scope_summary(resolved), "transitions": _transitions(outcome)}


class KidArgumentCommand(click.Command):
    """A kid is base64url and may begin with "-": every word but this command's own options is the kid,
    never an option (``-gX…`` would otherwise be read as the short options ``-g``, ``-X``, … even ``-h``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        own = {name for param in self.get_params(ctx) for name in param.opts if name.startswith("-")}
        options = [arg for arg in args if arg in own]
        return super().parse_args(ctx, [*options, "--", *(arg for arg in args if arg not in own)])


@signing_keys.command("revoke", cls=KidArgumentCommand)
@click.argument("kid")
@json_option
def revoke(kid: str) -> dict[str, Any]:
    """Revoke a key (clients are told to distrust it); revoking the active key rotates its scope now."""
    master_key = master_key_or_fail()
    try:
        with unit_of_work() as session:
            outcome = rotation.revoke(session, kid, master_key=master_key)
            scope = session.scalars(select(SigningKey.scope).where(SigningKey.kid == kid.strip())).one()
    except _FAILURES as exc:
        raise CliError(str(exc)) from exc
    return {"revoked": kid.strip(), **_scope_summary(scope), "transitions": _transitions(outcome)}


@signing_keys.command("advance")
@json_option
def advance() -> dict[str, Any]:
    """Run one step of the rotation state machine now (what beat runs every KEYMETA_KEY_CHECK_INTERVAL_SECONDS)."""
    master_key = master_key_or_fail()
    try:
        with unit_of_work() as session:
            outcome = rotation.advance(session, master_key=master_key, actor="operator")
    except _FAILURES as exc:
        raise CliError(str(exc)) from exc
    return {"transitions": _transitions(outcome)}
