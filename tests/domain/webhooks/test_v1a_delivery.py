"""Endpoints that opt into ``v1a`` (Ed25519): real deliveries to a sink verify with the endpoint's published
``whpk_`` public key only, the private key stays sealed, and rotation publishes both keys while both sign."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.signing.master_key import load_master_key, seal, unseal
from domain.webhooks import endpoints, jobs, ssrf
from domain.webhooks.audit_events import CLI
from domain.webhooks.models import WebhookEndpoint
from domain.webhooks.signatures import SecretError, SignatureScheme, generate_secret
from tests.conftest import World
from tests.domain.webhooks import v1a_consumer
from tests.webhook_sink import Received, Reply, Sink
from tests.webhook_support import meta_events


def create_v1a(settings: Settings, url: str) -> endpoints.WithSecret:
    with unit_of_work() as session:
        return endpoints.create_endpoint(session, url=url, event_types=None, master_key=load_master_key(settings),
                                         allowed=ssrf.parse_allowed(settings.webhook_allowed_cidrs), actor=CLI,
                                         signature_scheme=SignatureScheme.V1A)


def published(endpoint_id: int) -> dict[str, object]:
    with unit_of_work() as session:
        return endpoints.view(endpoints.get_endpoint(session, endpoint_id))


def verify(public_key: object, request: Received) -> None:
    assert isinstance(public_key, str)
    v1a_consumer.verify(public_key, request.body, request.headers, now=int(time.time()))


def deliver_one(world: World, settings: Settings) -> None:
    assert jobs.deliver(jobs.fan_out_events(meta_events(world)), settings).outcomes == {"succeeded": 1}


def test_a_v1a_delivery_verifies_with_the_published_public_key_only(settings: Settings, world: World,
                                                                    sink: Sink) -> None:
    created = create_v1a(settings, sink.on("/v1a", Reply(200)))
    view = published(created.endpoint.id)
    assert view["signature_scheme"] == "v1a" and view["public_key"] == created.secret
    assert str(view["public_key"]).startswith("whpk_")
    deliver_one(world, settings)
    [request] = sink.at("/v1a")
    assert request.headers["webhook-signature"].startswith("v1a,") and " " not in request.headers["webhook-signature"]
    verify(view["public_key"], request)
    other = create_v1a(settings, sink.url("/other"))  # another endpoint's key: refused
    with pytest.raises(v1a_consumer.Unverified):
        verify(other.secret, request)


def test_the_private_key_is_sealed_and_never_in_the_view(settings: Settings, sink: Sink) -> None:
    created = create_v1a(settings, sink.url("/sealed"))
    with unit_of_work() as session:
        row = session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.id == created.endpoint.id)).one()
        private = unseal(load_master_key(settings), row.secret_encrypted,
                         endpoints.secret_context(row.id, row.secret_version)).decode()
        assert private.startswith("whsk_") and private[5:].encode() not in row.secret_encrypted
    assert private not in repr(published(created.endpoint.id))


def test_rotation_publishes_both_keys_while_both_sign(settings: Settings, world: World, sink: Sink) -> None:
    created = create_v1a(settings, sink.on("/rotate", Reply(200)))
    master_key = load_master_key(settings)
    with unit_of_work() as session:
        rotated = endpoints.rotate_secret(session, created.endpoint.id, master_key=master_key,
                                          overlap_seconds=3600, actor=CLI)
    view = published(created.endpoint.id)
    assert view["public_key"] == rotated.secret != created.secret and view["previous_public_key"] == created.secret
    assert isinstance(view["previous_secret_expires_at"], dt.datetime)
    deliver_one(world, settings)
    [request] = sink.at("/rotate")
    assert [s.split(",")[0] for s in request.headers["webhook-signature"].split(" ")] == ["v1a", "v1a"]
    verify(created.secret, request)  # a consumer still holding the old public key
    verify(rotated.secret, request)  # one that already switched

    with unit_of_work() as session:
        again = endpoints.rotate_secret(session, created.endpoint.id, master_key=master_key, overlap_seconds=0,
                                        actor=CLI)
    assert published(created.endpoint.id)["previous_public_key"] is None
    deliver_one(world, settings)
    latest = sink.at("/rotate")[-1]
    verify(again.secret, latest)
    with pytest.raises(v1a_consumer.Unverified):
        verify(rotated.secret, latest)


def test_an_unknown_scheme_is_refused(settings: Settings, sink: Sink) -> None:
    with unit_of_work() as session, pytest.raises(endpoints.EndpointError, match="unknown signature scheme 'v2'"):
        endpoints.create_endpoint(session, url=sink.url("/v2"), event_types=None,
                                  master_key=load_master_key(settings),
                                  allowed=ssrf.parse_allowed(settings.webhook_allowed_cidrs), actor=CLI,
                                  signature_scheme="v2")


def test_the_previous_public_key_is_shown_only_while_it_signs(settings: Settings, sink: Sink) -> None:
    created = create_v1a(settings, sink.url("/overlap"))
    with unit_of_work() as session:
        endpoints.rotate_secret(session, created.endpoint.id, master_key=load_master_key(settings),
                                overlap_seconds=60, actor=CLI, now=dt.datetime(2026, 11, 28, 12, 0, tzinfo=dt.UTC))
        row = endpoints.get_endpoint(session, created.endpoint.id)
        during = endpoints.view(row, now=dt.datetime(2026, 11, 28, 12, 0, 59, tzinfo=dt.UTC))
        after = endpoints.view(row, now=dt.datetime(2026, 11, 28, 12, 1, tzinfo=dt.UTC))
    assert during["previous_public_key"] == created.secret and after["previous_public_key"] is None


@pytest.mark.parametrize("public_key", [None, "", "whpk_short=", "whsec_" + "A" * 43 + "="])
def test_the_database_refuses_a_v1a_endpoint_without_a_well_formed_public_key(settings: Settings, sink: Sink,
                                                                               public_key: str | None) -> None:
    made = create_v1a(settings, sink.url("/checked"))
    with pytest.raises(IntegrityError, match="ck_webhook_endpoints_signature_scheme"), unit_of_work() as session:
        session.get_one(WebhookEndpoint, made.endpoint.id).public_key = public_key
        session.flush()


def test_a_key_of_another_scheme_than_the_endpoints_is_never_used_to_sign(settings: Settings, sink: Sink) -> None:
    made = create_v1a(settings, sink.url("/mixed"))
    master_key = load_master_key(settings)
    with unit_of_work() as session:
        row = session.get_one(WebhookEndpoint, made.endpoint.id)
        row.secret_encrypted = seal(master_key, generate_secret().encode(), endpoints.secret_context(row.id, 1))
    with unit_of_work() as session, pytest.raises(SecretError, match="another scheme"):
        row = session.get_one(WebhookEndpoint, made.endpoint.id)
        endpoints.signing_secrets(row, master_key, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
