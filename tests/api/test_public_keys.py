"""GET /api/v1/public-keys and /.well-known/jwks.json; which key signs; start-up with a bad master key."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import select, update
from starlette.testclient import TestClient

from domain import catalog
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.signing import rotation
from domain.signing.keys import GLOBAL_SCOPE, product_scope
from domain.signing.master_key import MasterKeyError, load_master_key
from domain.signing.models import SigningKey
from domain.signing.public_keys import cache_max_age
from domain.signing.rsa_keys import load_public_pem, thumbprint
from domain.signing.verification import RevokedKeyUsed, key_set_from_document, verify_envelope
from tests.conftest import make_world

ENDPOINT = "/api/v1/create-license-key-meta"
SIGNING_KEYS_DOC = Path(__file__).resolve().parents[2] / "docs" / "signing-keys.md"


def active_kid(scope: str) -> str:
    with unit_of_work() as session:
        return session.scalars(select(SigningKey.kid).where(SigningKey.scope == scope,
                                                            SigningKey.state == "active")).one()


def rotate(scope: str, settings: Settings, immediate: bool = True) -> rotation.Outcome:
    with unit_of_work() as session:
        return rotation.rotate(session, scope, immediate=immediate, settings=settings)


def own_key_scope(settings: Settings) -> str:
    with unit_of_work() as session:
        product = catalog.create_product(session, name="keys", own_key=True, master_key=load_master_key(settings))
        return product_scope(product.id)


def listing(client: TestClient) -> dict[str, dict[str, Any]]:
    response = client.get("/api/v1/public-keys")
    assert response.status_code == 200, response.text
    return {entry["kid"]: entry for entry in response.json()["keys"]}


# --- the listing and the JWKS ----------------------------------------------------------------------------
def test_public_keys_list_every_state_with_scope_pem_and_times(client: TestClient, settings: Settings) -> None:
    scope = own_key_scope(settings)
    product_id = int(scope.split(":")[1])
    retired = active_kid(scope)
    rotate(scope, settings)
    active = active_kid(scope)
    pending = rotate(scope, settings, immediate=False).transitions[0].kid
    revoked = rotate(own_key_scope(settings), settings, immediate=False).transitions[0].kid
    with unit_of_work() as session:
        rotation.revoke(session, revoked, settings=settings)

    keys = listing(client)
    assert {kid: keys[kid]["state"] for kid in (retired, active, pending, revoked)} == {
        retired: "retired", active: "active", pending: "pending", revoked: "revoked"}
    entry = keys[retired]
    assert entry["scope"] == product_id
    assert keys[active_kid(GLOBAL_SCOPE)]["scope"] == "global"
    assert thumbprint(load_public_pem(entry["pem"])) == retired
    assert entry["created_at"].endswith("Z") and entry["activated_at"] and entry["retired_at"]
    assert keys[pending]["activated_at"] is None and keys[revoked]["revoked_at"]
    assert all(not re.search("PRIVATE", e["pem"]) for e in keys.values())


def test_jwks_has_rs256_signing_keys_with_thumbprint_kids_and_no_revoked_ones(client: TestClient,
                                                                              settings: Settings) -> None:
    scope = own_key_scope(settings)
    retired = active_kid(scope)
    rotate(scope, settings)
    pending = rotate(scope, settings, immediate=False).transitions[0].kid
    revoked = active_kid(scope)
    with unit_of_work() as session:
        rotation.revoke(session, revoked, settings=settings)  # promotes the pending key

    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    jwks = {jwk["kid"]: jwk for jwk in response.json()["keys"]}
    assert retired in jwks and pending in jwks
    assert revoked not in jwks, "a revoked key must not verify anything for JWKS consumers"
    for kid, jwk in jwks.items():
        assert (jwk["kty"], jwk["use"], jwk["alg"]) == ("RSA", "sig", "RS256")
        n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4)), "big")
        e = int.from_bytes(base64.urlsafe_b64decode(jwk["e"] + "=" * (-len(jwk["e"]) % 4)), "big")
        assert thumbprint(rsa.RSAPublicNumbers(e, n).public_key()) == kid
    assert set(jwks) == {kid for kid, entry in listing(client).items() if entry["state"] != "revoked"}


@pytest.mark.parametrize(("overlap", "max_age"), [(172800, 3600), (600, 300), (1, 0), (0, 0)])
def test_cache_max_age_is_at_most_half_the_overlap(settings: Settings, overlap: int, max_age: int) -> None:
    assert cache_max_age(overlap) == max_age
    assert overlap >= 2 * max_age
    from api.app import create_app

    with TestClient(create_app(settings.model_copy(update={"key_overlap_seconds": overlap}))) as client:
        for path in ("/.well-known/jwks.json", "/api/v1/public-keys"):
            assert client.get(path).headers["cache-control"] == f"public, max-age={max_age}"


def test_etag_answers_not_modified_until_a_key_changes(client: TestClient, settings: Settings) -> None:
    first = client.get("/.well-known/jwks.json")
    etag = first.headers["etag"]
    again = client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    rotate(own_key_scope(settings), settings, immediate=False)
    changed = client.get("/.well-known/jwks.json", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


@pytest.fixture
def malformed_public_key(settings: Settings) -> Iterator[str]:
    """A retired key of a scope of its own whose stored public PEM is damaged; repaired afterwards."""
    scope = own_key_scope(settings)
    kid = active_kid(scope)
    rotate(scope, settings)
    with unit_of_work() as session:
        row = session.scalars(select(SigningKey).where(SigningKey.kid == kid)).one()
        good, row.public_pem = row.public_pem, "-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n"
    yield kid
    with unit_of_work() as session:
        session.execute(update(SigningKey).where(SigningKey.kid == kid).values(public_pem=good))


def test_a_malformed_pem_in_the_database_is_an_error_naming_the_key(client: TestClient,
                                                                   malformed_public_key: str) -> None:
    for path in ("/.well-known/jwks.json", "/api/v1/public-keys"):
        response = client.get(path)
        assert response.status_code == 500
        assert response.json() == {"error": f"signing key {malformed_public_key}: the stored public key "
                                            "is not a readable RSA PEM"}
        assert response.headers["cache-control"] == "no-store"


# --- who signs -------------------------------------------------------------------------------------------
def test_a_product_without_its_own_key_signs_with_global_and_says_global(client: TestClient) -> None:
    world = make_world()
    response = client.post(ENDPOINT, data=world.form())
    assert response.json()["private_key_used"] == "global"
    assert response.headers["x-signature-key-id"] == active_kid(GLOBAL_SCOPE)
    keys = key_set_from_document(client.get("/api/v1/public-keys").json())
    assert verify_envelope(response.content, keys.pems, states=keys.states) == active_kid(GLOBAL_SCOPE)


def test_a_product_with_its_own_key_signs_with_it_and_says_product(client: TestClient) -> None:
    world = make_world(own_key=True)
    response = client.post(ENDPOINT, data=world.form())
    assert response.json()["private_key_used"] == "product"
    kid = active_kid(product_scope(world.product_id))
    assert response.headers["x-signature-key-id"] == kid
    assert listing(client)[kid]["scope"] == world.product_id


def test_an_old_response_still_verifies_after_two_rotations(client: TestClient, settings: Settings) -> None:
    world = make_world(own_key=True)
    scope = product_scope(world.product_id)
    old = client.post(ENDPOINT, data=world.form())
    kid = old.headers["x-signature-key-id"]
    rotate(scope, settings)
    rotate(scope, settings)
    newer = client.post(ENDPOINT, data=world.form())
    assert newer.headers["x-signature-key-id"] not in (kid, old.headers["x-signature-key-id"])
    keys = key_set_from_document(client.get("/api/v1/public-keys").json())
    assert keys.states[kid] == "retired"
    assert verify_envelope(old.content, {kid: keys.pems[kid]}, states=keys.states) == kid
    jwks = key_set_from_document(client.get("/.well-known/jwks.json").json())
    assert verify_envelope(old.content, jwks.pems, kid) == kid


def test_a_response_signed_by_a_revoked_key_is_reported_as_revoked(client: TestClient,
                                                                   settings: Settings) -> None:
    world = make_world(own_key=True)
    response = client.post(ENDPOINT, data=world.form())
    kid = response.headers["x-signature-key-id"]
    with unit_of_work() as session:
        rotation.revoke(session, kid, settings=settings)
    keys = key_set_from_document(client.get("/api/v1/public-keys").json())
    assert keys.states[kid] == "revoked"
    with pytest.raises(RevokedKeyUsed, match=f"signed by revoked key {kid}") as raised:
        verify_envelope(response.content, keys.pems, kid, states=keys.states)
    assert raised.value.kid == kid
    after = client.post(ENDPOINT, data=world.form())
    assert after.headers["x-signature-key-id"] == active_kid(product_scope(world.product_id)) != kid


# --- start-up ---------------------------------------------------------------------------------------------
def _start(settings: Settings) -> None:
    from api.app import create_app

    with TestClient(create_app(settings)):
        pass


def test_the_api_refuses_to_start_with_a_master_key_that_opens_nothing(settings: Settings) -> None:
    wrong = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    with pytest.raises(MasterKeyError, match=f"does not open the secret of {active_kid(GLOBAL_SCOPE)}"):
        _start(settings.model_copy(update={"master_key": wrong}))


def test_the_api_refuses_to_start_with_a_master_key_of_the_wrong_length(settings: Settings) -> None:
    with pytest.raises(MasterKeyError, match="must be 32 bytes of base64 \\(got 8 bytes\\)"):
        _start(settings.model_copy(update={"master_key": base64.b64encode(b"8 bytes!").decode()}))


def test_the_api_refuses_to_start_without_a_master_key(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(MasterKeyError, match="no master key: set KEYMETA_MASTER_KEY"):
        _start(settings.model_copy(update={"master_key": "", "var_dir": tmp_path / "empty"}))
    assert not (tmp_path / "empty" / "master.key").exists(), "a new master key was generated silently"


# --- the documented openssl recipe, run as written ---------------------------------------------------------
def _documented_recipe() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", SIGNING_KEYS_DOC.read_text(), flags=re.DOTALL)
    [recipe] = [block for block in blocks if "openssl dgst" in block]
    return recipe


# CI installs both (.ci/run) and must run this; a laptop without them skips it.
@pytest.mark.skipif(not (shutil.which("openssl") and shutil.which("jq")) and os.environ.get("CI") != "true",
                    reason="needs openssl and jq")
def test_the_documented_openssl_recipe_verifies_a_real_response(client: TestClient, tmp_path: Path) -> None:
    world = make_world()
    response = client.post(ENDPOINT, data=world.form())
    (tmp_path / "response.json").write_bytes(response.content)
    (tmp_path / "public-keys.json").write_bytes(client.get("/api/v1/public-keys").content)
    recipe = _documented_recipe()
    env = {"PATH": os.environ["PATH"], "KID": response.headers["x-signature-key-id"]}
    ok = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe], cwd=tmp_path, env=env, capture_output=True,
                        text=True, timeout=30)
    assert ok.returncode == 0 and "Verified OK" in ok.stdout, ok.stdout + ok.stderr

    body = response.json()
    body["response_base64"] = base64.b64encode(base64.b64decode(body["response_base64"]).replace(
        b'"code":453', b'"code":999')).decode()
    (tmp_path / "response.json").write_text(json.dumps(body))
    tampered = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=30)
    assert tampered.returncode != 0 and "Verification failure" in tampered.stdout + tampered.stderr
