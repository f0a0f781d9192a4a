"""The signing-key state machine (domain.signing.rotation) on the session's databases.

Every test works on product scopes of its own (``scopes=[...]``), so the shared global key is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import secrets
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, update

from domain import catalog
from domain.events.models import OutboxEvent
from domain.events.outbox import WEBHOOK_EVENT_TYPES
from domain.platform.database import make_async_engine, unit_of_work
from domain.platform.models import utcnow
from domain.platform.settings import Settings
from domain.signing import rotation
from domain.signing.keys import SignerStore, SigningKeyError, product_scope
from domain.signing.master_key import MasterKeyError, load_master_key, seal
from domain.signing.models import SigningKey

DAY = dt.timedelta(days=1)


def new_scope(settings: Settings) -> str:
    with unit_of_work() as session:
        product = catalog.create_product(session, name=f"rotation {uuid.uuid4().hex[:8]}", own_key=True,
                                         master_key=load_master_key(settings))
        return product_scope(product.id)


def snapshot(scope: str) -> list[tuple[Any, ...]]:
    with unit_of_work() as session:
        return [(k.kid, k.state, k.private_key_encrypted is not None, k.activated_at, k.retired_at, k.revoked_at)
                for k in session.scalars(select(SigningKey).where(SigningKey.scope == scope).order_by(SigningKey.id))]


def states(scope: str) -> list[tuple[str, str]]:
    return [(kid, state) for kid, state, *_ in snapshot(scope)]


def active_kid(scope: str) -> str:
    [kid] = [kid for kid, state in states(scope) if state == "active"]
    return kid


def backdate_active(scope: str, days: int) -> None:
    with unit_of_work() as session:
        then = utcnow() - dt.timedelta(days=days)
        session.execute(update(SigningKey).where(SigningKey.scope == scope, SigningKey.state == "active")
                        .values(created_at=then, activated_at=then))


def backdate_pending(scope: str, seconds: int) -> None:
    with unit_of_work() as session:
        session.execute(update(SigningKey).where(SigningKey.scope == scope, SigningKey.state == "pending")
                        .values(created_at=utcnow() - dt.timedelta(seconds=seconds)))


def events_about(kids: set[str]) -> list[OutboxEvent]:
    with unit_of_work() as session:
        rows = session.scalars(select(OutboxEvent).where(OutboxEvent.type.like("signing_key.%"))
                               .order_by(OutboxEvent.id)).all()
        return [row for row in rows if row.payload.get("kid") in kids]


def run(fn: Callable[..., rotation.Outcome], *args: Any, **kwargs: Any) -> rotation.Outcome:
    with unit_of_work() as session:
        return fn(session, *args, **kwargs)


def other_master_key() -> bytes:
    return secrets.token_bytes(32)


# --- the scheduled path (beat) ---------------------------------------------------------------------------
def test_nothing_happens_before_the_rotation_age(settings: Settings) -> None:
    scope = new_scope(settings)
    before = snapshot(scope)
    outcome = run(rotation.advance, settings, utcnow() + dt.timedelta(days=settings.key_rotation_days) - DAY,
                  scopes=[scope])
    assert outcome.transitions == []
    assert snapshot(scope) == before


def test_scheduled_rotation_creates_pending_then_promotes_after_the_overlap(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    backdate_active(scope, settings.key_rotation_days + 1)

    first = run(rotation.advance, settings, scopes=[scope])
    assert [(t.from_state, t.to_state) for t in first.transitions] == [(None, "pending")]
    new = first.transitions[0].kid
    assert states(scope) == [(old, "active"), (new, "pending")]
    # Idempotent: again, and until the overlap has elapsed, nothing moves.
    assert run(rotation.advance, settings, scopes=[scope]).transitions == []
    backdate_pending(scope, settings.key_overlap_seconds - 5)
    assert run(rotation.advance, settings, scopes=[scope]).transitions == []
    assert states(scope) == [(old, "active"), (new, "pending")]

    backdate_pending(scope, settings.key_overlap_seconds)
    now = utcnow()
    second = run(rotation.advance, settings, now, scopes=[scope])
    assert [(t.kid, t.from_state, t.to_state) for t in second.transitions] == [
        (old, "active", "retired"), (new, "pending", "active")]
    [(_, _, old_private, _, old_retired, _), (_, _, new_private, new_activated, _, _)] = snapshot(scope)
    assert old_private is False, "a retired key's private half must be destroyed"
    assert new_private is True
    assert old_retired == now and new_activated == now
    assert run(rotation.advance, settings, scopes=[scope]).transitions == []

    events = events_about({old, new})
    assert [(e.type, e.payload["kid"]) for e in events] == [
        ("signing_key.created", new), ("signing_key.retired", old), ("signing_key.activated", new)]
    retired = events[1]
    product_id = int(scope.split(":")[1])
    assert retired.subject_id is not None and retired.fanned_out_at is None
    assert {k: retired.payload[k] for k in ("kid", "scope", "product_id", "from_state", "to_state", "actor")} == {
        "kid": old, "scope": scope, "product_id": product_id, "from_state": "active", "to_state": "retired",
        "actor": "beat"}
    assert retired.payload["detail"]["kid"] == old  # what the audit record keeps
    assert "private" not in str(retired.payload).lower()
    assert all(e.type in WEBHOOK_EVENT_TYPES for e in events)


def test_with_no_overlap_one_run_creates_and_promotes(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    backdate_active(scope, settings.key_rotation_days)
    no_overlap = settings.model_copy(update={"key_overlap_seconds": 0})
    outcome = run(rotation.advance, no_overlap, utcnow(), scopes=[scope])
    new = outcome.transitions[0].kid
    assert [(t.kid, t.to_state) for t in outcome.transitions] == [(new, "pending"), (old, "retired"), (new, "active")]
    assert states(scope) == [(old, "retired"), (new, "active")]


def test_advance_without_a_scope_list_visits_every_scope(settings: Settings) -> None:
    scope = new_scope(settings)
    backdate_active(scope, settings.key_rotation_days + 1)
    outcome = run(rotation.advance, settings)
    assert [t.to_state for t in outcome.transitions if t.scope == scope] == ["pending"]


# --- operator rotation -----------------------------------------------------------------------------------
def test_rotate_keeps_the_overlap_and_is_idempotent_while_under_way(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    first = run(rotation.rotate, scope, settings=settings)
    assert [(t.to_state, t.event_type) for t in first.transitions] == [("pending", "signing_key.created")]
    assert first.transitions[0].kid != old
    assert run(rotation.rotate, scope, settings=settings).transitions == [], "a second key was started"
    assert states(scope) == [(old, "active"), (first.transitions[0].kid, "pending")]
    assert events_about({old, first.transitions[0].kid})[0].payload["actor"] == "operator"


def test_rotate_now_promotes_the_pending_key_at_once(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    pending = run(rotation.rotate, scope, settings=settings).transitions[0].kid
    outcome = run(rotation.rotate, scope, immediate=True, settings=settings)
    assert [(t.kid, t.to_state) for t in outcome.transitions] == [(old, "retired"), (pending, "active")]
    assert states(scope) == [(old, "retired"), (pending, "active")]


def test_rotate_now_without_a_pending_key_creates_and_activates_one(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    outcome = run(rotation.rotate, scope, immediate=True, settings=settings)
    new = outcome.transitions[0].kid
    assert [(t.kid, t.to_state) for t in outcome.transitions] == [(new, "pending"), (old, "retired"), (new, "active")]


def test_an_old_key_survives_two_rotations_as_retired(settings: Settings) -> None:
    scope = new_scope(settings)
    first = active_kid(scope)
    run(rotation.rotate, scope, immediate=True, settings=settings)
    run(rotation.rotate, scope, immediate=True, settings=settings)
    kids = states(scope)
    assert [state for _, state in kids] == ["retired", "retired", "active"]
    assert kids[0][0] == first


# --- revocation ------------------------------------------------------------------------------------------
def test_revoking_the_active_key_rotates_its_scope_at_once(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    outcome = run(rotation.revoke, old, settings=settings)
    new = outcome.transitions[1].kid
    assert [(t.kid, t.from_state, t.to_state) for t in outcome.transitions] == [
        (old, "active", "revoked"), (new, None, "pending"), (new, "pending", "active")]
    [(_, state, private, _, _, revoked_at), (_, new_state, *_)] = snapshot(scope)
    assert (state, private, new_state) == ("revoked", False, "active")
    assert revoked_at is not None
    assert run(rotation.revoke, old, settings=settings).transitions == [], "revoking twice changed something"


def test_revoking_the_active_key_promotes_a_pending_one_if_there_is_one(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    pending = run(rotation.rotate, scope, settings=settings).transitions[0].kid
    run(rotation.revoke, old, settings=settings)
    assert states(scope) == [(old, "revoked"), (pending, "active")]


def test_revoking_a_retired_key_changes_nothing_else(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    run(rotation.rotate, scope, immediate=True, settings=settings)
    current = active_kid(scope)
    outcome = run(rotation.revoke, old, settings=settings)
    assert [(t.kid, t.from_state, t.to_state) for t in outcome.transitions] == [(old, "retired", "revoked")]
    assert states(scope) == [(old, "revoked"), (current, "active")]


# --- bad input: a clear error naming the thing, nothing changed --------------------------------------------
@pytest.mark.parametrize(("call", "message"), [
    (lambda s, st: rotation.revoke(s, "no-such-kid", settings=st), "no signing key with kid 'no-such-kid'"),
    (lambda s, st: rotation.rotate(s, "product:987654321", settings=st), "no product with id 987654321"),
    (lambda s, st: rotation.rotate(s, "products:1", settings=st), "unknown scope 'products:1'"),
])
def test_requests_naming_unknown_things_fail_and_change_nothing(settings: Settings, call: Any, message: str) -> None:
    scope = new_scope(settings)
    before = snapshot(scope)
    with pytest.raises(rotation.KeyRotationError, match=message), unit_of_work() as session:
        call(session, settings)
    assert snapshot(scope) == before


def test_a_product_without_its_own_key_cannot_be_rotated(settings: Settings) -> None:
    with unit_of_work() as session:
        product = catalog.create_product(session, name="shared key")
    with pytest.raises(rotation.KeyRotationError, match=f"product {product.id} has no signing key of its own"):
        run(rotation.rotate, f"product:{product.id}", settings=settings)


def test_a_wrong_master_key_is_refused_before_any_key_is_created(settings: Settings) -> None:
    scope = new_scope(settings)
    backdate_active(scope, settings.key_rotation_days + 1)
    before = snapshot(scope)
    with pytest.raises(MasterKeyError, match="the master key does not open the secret of"):
        run(rotation.advance, settings, scopes=[scope], master_key=other_master_key())
    with pytest.raises(MasterKeyError, match="does not open"):
        run(rotation.rotate, scope, immediate=True, settings=settings, master_key=other_master_key())
    with pytest.raises(MasterKeyError, match="does not open"):
        run(rotation.revoke, active_kid(scope), settings=settings, master_key=other_master_key())
    assert snapshot(scope) == before


def test_a_master_key_of_the_wrong_length_is_a_clear_error(settings: Settings) -> None:
    scope = new_scope(settings)
    backdate_active(scope, settings.key_rotation_days + 1)
    before = snapshot(scope)
    short = settings.model_copy(update={"master_key": base64.b64encode(b"sixteen byte key").decode()})
    with pytest.raises(MasterKeyError, match=r"KEYMETA_MASTER_KEY must be 32 bytes .*got 16 bytes"):
        run(rotation.advance, short, scopes=[scope])
    assert snapshot(scope) == before


def test_a_pending_key_whose_private_half_is_unreadable_is_never_promoted(settings: Settings) -> None:
    scope = new_scope(settings)
    pending = run(rotation.rotate, scope, settings=settings).transitions[0].kid
    with unit_of_work() as session:
        session.execute(update(SigningKey).where(SigningKey.kid == pending).values(
            private_key_encrypted=seal(load_master_key(settings), b"-----BEGIN PRIVATE KEY-----\ngarbage\n", pending)))
    before = snapshot(scope)
    later = utcnow() + dt.timedelta(seconds=settings.key_overlap_seconds)
    with pytest.raises(SigningKeyError, match=f"signing key {pending}: the stored private key is not a readable"):
        run(rotation.advance, settings, later, scopes=[scope])
    assert snapshot(scope) == before
    run(rotation.revoke, pending, settings=settings)  # leave no broken key behind for other tests


# --- concurrency: many triggers at once, exactly one new key ---------------------------------------------
def _race(n: int, action: Callable[[], Any]) -> list[BaseException]:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            action()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return errors


def test_concurrent_beat_runs_create_exactly_one_pending_key(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    backdate_active(scope, settings.key_rotation_days + 1)
    now = utcnow()
    assert _race(6, lambda: run(rotation.advance, settings, now, scopes=[scope])) == []
    created = [kid for kid, state in states(scope) if kid != old]
    assert len(created) == 1, f"{len(created)} keys created by concurrent runs"
    assert len([e for e in events_about(set(created)) if e.type == "signing_key.created"]) == 1


def test_concurrent_rotate_requests_create_exactly_one_key(settings: Settings) -> None:
    scope = new_scope(settings)
    assert _race(6, lambda: run(rotation.rotate, scope, settings=settings)) == []
    assert [state for _, state in states(scope)] == ["active", "pending"]


def test_concurrent_revocations_rotate_exactly_once(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)
    assert _race(4, lambda: run(rotation.revoke, old, settings=settings)) == []
    assert [state for _, state in states(scope)] == ["revoked", "active"]
    assert [e.type for e in events_about({old})] == ["signing_key.revoked"]


# --- the API's view of the active key --------------------------------------------------------------------
def test_signer_store_switches_after_the_ttl_and_never_before(settings: Settings) -> None:
    scope = new_scope(settings)
    old = active_kid(scope)

    async def scenario() -> tuple[str | None, ...]:
        engine = make_async_engine(settings)
        store = SignerStore(load_master_key(settings), ttl_seconds=10)
        try:
            first = await store.active(engine.connect, scope, now=100.0)
            run(rotation.rotate, scope, immediate=True, settings=settings)
            cached = await store.active(engine.connect, scope, now=109.9)
            fresh = await store.active(engine.connect, scope, now=110.0)
            remembered = set(store._by_kid)
            return (first.kid if first else None, cached.kid if cached else None,
                    fresh.kid if fresh else None, *sorted(remembered))
        finally:
            await engine.dispose()

    first, cached, fresh, *remembered = asyncio.run(scenario())
    new = active_kid(scope)
    assert (first, cached, fresh) == (old, old, new)
    assert remembered == [new], "the retired key's parsed private half is still held in memory"
