"""Rotation under continuous load: every response, signed before, during or after a rotation, verifies.

The in-process API (cache TTL 0) serves create-meta requests from two threads, one for a product that
signs with the global key and one for a product with its own key, while a third thread rotates both
scopes: emergency rotations (``--now``) and scheduled ones with an overlap of 0. Each rotation waits for
more responses to arrive before the next one, so responses are collected before, between and after them.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from starlette.testclient import TestClient

from domain import catalog
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.signing import rotation
from domain.signing.keys import GLOBAL_SCOPE, product_scope
from domain.signing.verification import EnvelopeInvalid, key_set_from_document, verify_envelope
from tests.conftest import World, make_world

ENDPOINT = "/api/v1/create-license-key-meta"
RESPONSES_BETWEEN_ROTATIONS = 5
# Creates per license key before the load moves on to another: under the per-license cap of meta keys.
CREATES_PER_LICENSE = 50


def another_license_key(world: World) -> str:
    """A new license key of the world's product (so of its signing scope), activated for its identifier."""
    with unit_of_work() as session:
        row = catalog.create_license_key(session, product_id=world.product_id,
                                         key=f"LK-{uuid.uuid4().hex[:10].upper()}", status="assigned")
        catalog.activate(session, license_key=row.key, identifier=world.identifier)
        return row.key


@dataclass(frozen=True)
class Collected:
    scope: str
    started: float  # monotonic, before the request was sent
    status: int
    body: bytes
    kid: str


@dataclass(frozen=True)
class Rotation:
    scope: str
    committed: float  # monotonic, after the transaction committed
    replaced: str  # the kid that stopped being active


def test_rotations_under_load_never_produce_an_unverifiable_response(client: TestClient, settings: Settings) -> None:
    assert settings.cache_ttl_seconds == 0
    no_overlap = settings.model_copy(update={"key_overlap_seconds": 0})
    own = make_world(own_key=True)
    shared = make_world()
    own_scope = product_scope(own.product_id)

    collected: list[Collected] = []
    rotations: list[Rotation] = []
    errors: list[BaseException] = []
    arrived = threading.Condition()
    stop = threading.Event()

    def load(world: World, scope: str) -> None:
        try:
            sent = 0
            while not stop.is_set():
                if sent % CREATES_PER_LICENSE == 0:
                    license_key = another_license_key(world)
                sent += 1
                started = time.monotonic()
                response = client.post(ENDPOINT, data=world.form(license_key=license_key))
                item = Collected(scope, started, response.status_code, response.content,
                                 response.headers.get("x-signature-key-id", ""))
                with arrived:
                    collected.append(item)
                    arrived.notify_all()
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    def more_responses() -> None:
        """Wait (for a condition, not a time) until both scopes have answered several more requests."""
        with arrived:
            base = {s: sum(1 for c in collected if c.scope == s) for s in (GLOBAL_SCOPE, own_scope)}
            assert arrived.wait_for(
                lambda: stop.is_set() or all(sum(1 for c in collected if c.scope == s) >= base[s]
                                             + RESPONSES_BETWEEN_ROTATIONS for s in base), timeout=60)

    def active(scope: str) -> str:
        with unit_of_work() as session:
            state = rotation.scope_state(session, scope)
            assert state.active is not None
            return state.active.kid

    def rotate(scope: str, how: str) -> None:
        replaced = active(scope)
        with unit_of_work() as session:
            if how == "now":
                rotation.rotate(session, scope, immediate=True, settings=settings)
            else:  # a scheduled rotation with an overlap of 0: pending now, promoted by the next beat run
                rotation.rotate(session, scope, settings=no_overlap)
        if how == "overlap-0":
            more_responses()  # the pending key is published while requests keep coming
            with unit_of_work() as session:
                rotation.advance(session, no_overlap, scopes=[scope])
        rotations.append(Rotation(scope, time.monotonic(), replaced))

    def rotator() -> None:
        try:
            more_responses()
            for scope, how in [(GLOBAL_SCOPE, "now"), (own_scope, "now"), (GLOBAL_SCOPE, "overlap-0"),
                               (own_scope, "overlap-0"), (own_scope, "now"), (GLOBAL_SCOPE, "now")]:
                rotate(scope, how)
                more_responses()
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    threads = [threading.Thread(target=load, args=(shared, GLOBAL_SCOPE)),
               threading.Thread(target=load, args=(own, own_scope)),
               threading.Thread(target=rotator)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(rotations) == 6

    keys = key_set_from_document(client.get("/api/v1/public-keys").json())
    failures = []
    for item in collected:
        try:
            assert item.status == 200 and b'"code":453' in item.body, item.body[:200]
            # By kid: the header names the key, and exactly that published key must verify it.
            assert verify_envelope(item.body, {item.kid: keys.pems[item.kid]}, states=keys.states) == item.kid
        except (AssertionError, KeyError, EnvelopeInvalid) as exc:
            failures.append((item.kid, repr(exc)))
    assert len(collected) >= 7 * 2 * RESPONSES_BETWEEN_ROTATIONS
    assert failures == [], f"{len(failures)} of {len(collected)} responses do not verify: {failures[:3]}"

    for scope in (GLOBAL_SCOPE, own_scope):
        used = {c.kid for c in collected if c.scope == scope}
        assert len(used) == 4, f"{scope}: expected the initial key and three rotated-in keys, got {len(used)}"
    # With a cache TTL of 0, a request sent after a rotation committed is never signed by the replaced key.
    late = [(c.kid, r.replaced) for r in rotations for c in collected
            if c.scope == r.scope and c.started > r.committed and c.kid == r.replaced]
    assert late == []
    assert {keys.states[r.replaced] for r in rotations} == {"retired"}
