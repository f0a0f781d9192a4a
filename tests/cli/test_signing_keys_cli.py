"""``keymeta signing-keys list|rotate|revoke|advance`` and ``keymeta verify``, run in-process."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner, Result
from sqlalchemy import select, update
from starlette.testclient import TestClient

from cli import main
from domain import catalog
from domain.platform.database import unit_of_work
from domain.platform.models import utcnow
from domain.platform.settings import Settings, get_settings
from domain.signing.keys import GLOBAL_SCOPE, product_scope
from domain.signing.master_key import load_master_key
from domain.signing.models import SigningKey
from tests.conftest import make_world
from tests.processes import wait_until

ENDPOINT = "/api/v1/create-license-key-meta"


def keymeta(*args: str, stdin: bytes | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=stdin, catch_exceptions=False)


def ok_json(*args: str, stdin: bytes | None = None) -> Any:
    result = keymeta(*args, "--json", stdin=stdin)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fails(*args: str, stdin: bytes | None = None) -> str:
    """Exit 1 with exactly one line on stderr; returns that line."""
    result = keymeta(*args, stdin=stdin)
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def all_keys() -> list[tuple[str, str, str, bool]]:
    with unit_of_work() as session:
        return [(k.kid, k.scope, k.state, k.private_key_encrypted is not None)
                for k in session.scalars(select(SigningKey).order_by(SigningKey.id))]


def active_kid(scope: str) -> str:
    with unit_of_work() as session:
        return session.scalars(select(SigningKey.kid).where(SigningKey.scope == scope,
                                                            SigningKey.state == "active")).one()


@pytest.fixture
def scope(settings: Settings) -> str:
    with unit_of_work() as session:
        product = catalog.create_product(session, name="cli keys", own_key=True, master_key=load_master_key(settings))
        return product_scope(product.id)


# --- signing-keys ----------------------------------------------------------------------------------------
def test_list_shows_states_without_secrets(scope: str) -> None:
    everything = ok_json("signing-keys", "list")["keys"]
    assert {k["kid"] for k in everything} == {kid for kid, *_ in all_keys()}
    [only] = ok_json("signing-keys", "list", "--scope", scope)["keys"]
    assert (only["scope"], only["state"], only["private_key"], only["key_size"]) == (scope, "active", "sealed", 2048)
    assert set(only) == {"kid", "scope", "state", "key_size", "created_at", "activated_at", "retired_at",
                         "revoked_at", "private_key"}
    human = keymeta("signing-keys", "list", "--scope", scope)
    assert human.exit_code == 0 and f"kid={only['kid']}, scope={scope}, state=active" in human.stdout


def test_rotate_publishes_a_pending_key_then_now_activates_it(scope: str, settings: Settings) -> None:
    old = active_kid(scope)
    started = ok_json("signing-keys", "rotate", "--scope", scope)
    [pending] = started["pending"]
    assert started["active"] == old
    assert [(t["from"], t["to"], t["event"]) for t in started["transitions"]] == [
        (None, "pending", "signing_key.created")]
    activates = dt.datetime.fromisoformat(pending["activates_after"].replace("Z", "+00:00"))
    assert abs((activates - utcnow()).total_seconds() - settings.key_overlap_seconds) < 60

    again = ok_json("signing-keys", "rotate", "--scope", scope)
    assert again["transitions"] == [] and again["pending"] == started["pending"]

    emergency = ok_json("signing-keys", "rotate", "--scope", scope, "--now")
    assert emergency["active"] == pending["kid"] and emergency["pending"] == []
    assert [(t["kid"], t["to"]) for t in emergency["transitions"]] == [(old, "retired"), (pending["kid"], "active")]
    assert [(kid, state, private) for kid, s, state, private in all_keys() if s == scope] == [
        (old, "retired", False), (pending["kid"], "active", True)]


def test_rotate_defaults_to_the_global_scope(settings: Settings) -> None:
    result = ok_json("signing-keys", "rotate")
    assert result["scope"] == GLOBAL_SCOPE and len(result["pending"]) == 1


def test_revoke_rotates_the_scope_and_is_idempotent(scope: str) -> None:
    old = active_kid(scope)
    revoked = ok_json("signing-keys", "revoke", old)
    assert revoked["revoked"] == old and revoked["active"] not in (None, old)
    assert [t["event"] for t in revoked["transitions"]] == [
        "signing_key.revoked", "signing_key.created", "signing_key.activated"]
    assert ok_json("signing-keys", "revoke", old)["transitions"] == []


def test_advance_runs_the_beat_step(scope: str) -> None:
    with unit_of_work() as session:
        then = utcnow() - dt.timedelta(days=get_settings().key_rotation_days + 1)
        session.execute(update(SigningKey).where(SigningKey.scope == scope).values(activated_at=then))
    transitions = ok_json("signing-keys", "advance")["transitions"]
    assert [(t["scope"], t["to"]) for t in transitions if t["scope"] == scope] == [(scope, "pending")]


@pytest.mark.parametrize(("args", "message"), [
    (("signing-keys", "rotate", "--scope", "product:99999999"), "error: no product with id 99999999"),
    (("signing-keys", "rotate", "--scope", "planet:1"), "error: unknown scope 'planet:1' (use global or product:ID)"),
    (("signing-keys", "revoke", "not-a-kid"), "error: no signing key with kid 'not-a-kid'"),
    (("signing-keys", "list", "--scope", "product:99999999"), "error: no product with id 99999999"),
])
def test_bad_requests_name_the_thing_and_change_nothing(settings: Settings, args: tuple[str, ...],
                                                        message: str) -> None:
    before = all_keys()
    assert fails(*args) == message
    assert all_keys() == before


def test_a_master_key_of_the_wrong_length_is_refused(scope: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = all_keys()
    monkeypatch.setenv("KEYMETA_MASTER_KEY", base64.b64encode(b"too short").decode())
    get_settings.cache_clear()
    for args in (("signing-keys", "rotate", "--scope", scope, "--now"), ("signing-keys", "advance"),
                 ("signing-keys", "revoke", active_kid(scope))):
        assert fails(*args).startswith("error: KEYMETA_MASTER_KEY must be 32 bytes of base64 (got 9 bytes)")
    assert all_keys() == before


def test_a_master_key_that_opens_nothing_is_refused(scope: str, monkeypatch: pytest.MonkeyPatch) -> None:
    before = all_keys()
    monkeypatch.setenv("KEYMETA_MASTER_KEY", base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
    get_settings.cache_clear()
    assert fails("signing-keys", "rotate", "--scope", scope) == \
        f"error: the master key does not open the secret of {active_kid(GLOBAL_SCOPE)}"
    assert all_keys() == before


# --- verify ----------------------------------------------------------------------------------------------
@pytest.fixture
def signed(client: TestClient, tmp_path: Path) -> dict[str, Any]:
    world = make_world(own_key=True)
    response = client.post(ENDPOINT, data=world.form())
    path = tmp_path / "response.json"
    path.write_bytes(response.content)
    return {"path": str(path), "body": response.content, "kid": response.headers["x-signature-key-id"],
            "product_id": world.product_id}


def test_verify_with_keys_from_the_database(signed: dict[str, Any]) -> None:
    result = ok_json("verify", signed["path"])
    assert result == {"valid": True, "kid": signed["kid"], "state": "active", "scope": signed["product_id"],
                      "private_key_used": "product", "code": 453, "message": "Metadata created",
                      "keys_from": "database"}
    assert ok_json("verify", "--kid", signed["kid"], stdin=signed["body"])["kid"] == signed["kid"]
    human = keymeta("verify", signed["path"])
    assert human.exit_code == 0 and f"kid: {signed['kid']}" in human.stdout and "state: active" in human.stdout


def test_verify_with_keys_from_files(signed: dict[str, Any], client: TestClient, tmp_path: Path) -> None:
    listing = tmp_path / "public-keys.json"
    listing.write_bytes(client.get("/api/v1/public-keys").content)
    jwks = tmp_path / "jwks.json"
    jwks.write_bytes(client.get("/.well-known/jwks.json").content)
    pem = tmp_path / "pubkey.pem"
    pem.write_text({e["kid"]: e["pem"] for e in json.loads(listing.read_text())["keys"]}[signed["kid"]])
    assert ok_json("verify", signed["path"], "--keys", str(listing))["state"] == "active"
    from_jwks = ok_json("verify", signed["path"], "--keys", str(jwks))
    assert (from_jwks["kid"], from_jwks["state"]) == (signed["kid"], None)
    assert ok_json("verify", signed["path"], "--keys", str(pem))["kid"] == signed["kid"]


def test_verify_fails_on_a_tampered_envelope(signed: dict[str, Any], tmp_path: Path) -> None:
    body = json.loads(signed["body"])
    body["signature"] = base64.b64encode(b"\0" * 256).decode()
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(body))
    assert fails("verify", str(tampered)) == "error: invalid: no known key verifies this signature"
    body = json.loads(signed["body"])
    body["response"]["code"] = 200
    assert fails("verify", stdin=json.dumps(body).encode()) == \
        "error: invalid: response does not match response_base64"
    assert fails("verify", stdin=b"not json") == "error: invalid: envelope is not JSON"


def test_verify_reports_a_revoked_key(signed: dict[str, Any]) -> None:
    ok_json("signing-keys", "revoke", signed["kid"])
    assert fails("verify", signed["path"]) == \
        f"error: invalid: the signature was made by key {signed['kid']}, which is revoked"


def test_verify_names_a_malformed_key_in_the_database(signed: dict[str, Any]) -> None:
    with unit_of_work() as session:
        good = session.scalars(select(SigningKey.public_pem).where(SigningKey.kid == signed["kid"])).one()
        session.execute(update(SigningKey).where(SigningKey.kid == signed["kid"]).values(public_pem="garbage"))
    try:
        assert fails("verify", signed["path"]) == \
            f"error: signing key {signed['kid']}: the stored public key is not a readable RSA PEM"
    finally:
        with unit_of_work() as session:
            session.execute(update(SigningKey).where(SigningKey.kid == signed["kid"]).values(public_pem=good))


def test_verify_option_errors(signed: dict[str, Any], tmp_path: Path) -> None:
    assert fails("verify", signed["path"], "--url", "http://127.0.0.1:9", "--keys", signed["path"]) == \
        "error: give --url or --keys, not both"
    (tmp_path / "empty.json").write_text('{"keys": []}')
    assert fails("verify", signed["path"], "--keys", str(tmp_path / "empty.json")) == \
        f"error: no public keys found in {tmp_path / 'empty.json'}"
    assert fails("verify", signed["path"], "--keys", signed["path"]) == \
        f"error: keys file {signed['path']}: not a key set: expected an object with a 'keys' list"
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    assert fails("verify", signed["path"], "--url", f"http://127.0.0.1:{port}").startswith(
        f"error: cannot fetch public keys from http://127.0.0.1:{port}/api/v1/public-keys:")


@pytest.fixture
def live_api(settings: Settings) -> Iterator[str]:
    """The real API on a real socket (127.0.0.1, a free port), served from a thread."""
    from api.app import create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    # uvicorn offers no event to wait on; stop early if its thread died.
    wait_until(lambda: server.started or not thread.is_alive(), timeout=15, interval=0.02, message="the API")
    assert server.started, "the API did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_verify_fetches_public_keys_from_a_running_api(signed: dict[str, Any], live_api: str) -> None:
    result = ok_json("verify", signed["path"], "--url", live_api)
    assert (result["kid"], result["state"], result["keys_from"]) == (signed["kid"], "active", live_api)
    assert ok_json("verify", signed["path"], "--url", f"{live_api}/.well-known/jwks.json")["kid"] == signed["kid"]


def test_a_kid_that_begins_with_a_dash_is_an_argument_not_an_option(settings: Settings) -> None:
    line = fails("signing-keys", "revoke", "-gNoSuchKidButShapedLikeOne", "--json")
    assert "-gNoSuchKidButShapedLikeOne" in line and "option" not in line
