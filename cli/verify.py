"""``keymeta verify``: check a signed response envelope against the published public keys."""

from __future__ import annotations

import base64
import json
from typing import IO, Any

import click
import httpx

from cli import main
from cli.support import CliError, json_option
from domain.platform.database import unit_of_work
from domain.signing.public_keys import MalformedPublicKey, checked_public_key, published_keys
from domain.signing.verification import (
    EnvelopeInvalid,
    KeySet,
    KeySetInvalid,
    RevokedKeyUsed,
    key_set_from_document,
    key_set_from_pem,
    verify_envelope,
)

PUBLIC_KEYS_PATH = "/api/v1/public-keys"
HTTP_TIMEOUT_SECONDS = 10.0


def _keys_from_url(url: str) -> KeySet:
    target = url.rstrip("/")
    if not target.endswith(PUBLIC_KEYS_PATH) and not target.endswith(".json"):
        target += PUBLIC_KEYS_PATH
    try:
        response = httpx.get(target, timeout=HTTP_TIMEOUT_SECONDS, follow_redirects=False)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot fetch public keys from {target}: {exc}") from exc
    if response.status_code != 200:
        raise CliError(f"cannot fetch public keys from {target}: HTTP {response.status_code}")
    try:
        return key_set_from_document(response.json())
    except ValueError as exc:  # KeySetInvalid, or not JSON at all
        raise CliError(f"public keys from {target}: {exc}") from exc


def _keys_from_file(path: str) -> KeySet:
    try:
        with open(path, encoding="utf-8") as handle:
            content = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read keys file {path}: {exc}") from exc
    try:
        if content.lstrip().startswith("-----BEGIN"):
            return key_set_from_pem(content)
        return key_set_from_document(json.loads(content))
    except ValueError as exc:
        raise CliError(f"keys file {path}: {exc}") from exc


def _keys_from_database() -> KeySet:
    keys = KeySet()
    with unit_of_work() as session:
        for key in published_keys(session):
            try:
                checked_public_key(key)
            except MalformedPublicKey as exc:
                raise CliError(str(exc)) from exc
            keys.pems[key.kid] = key.public_pem
            keys.states[key.kid] = key.state
            keys.scopes[key.kid] = key.client_scope
    return keys


@main.command("verify")
@click.argument("envelope", type=click.File("rb"), default="-")
@click.option("--url", default=None, help="Base URL of a keymeta API: fetch its /api/v1/public-keys.")
@click.option("--keys", "keys_file", default=None, metavar="FILE",
              help="Public keys from a file: the /api/v1/public-keys JSON, a JWKS, or one PEM public key.")
@click.option("--kid", default=None, help="The X-Signature-Key-Id header of the response (tried first).")
@json_option
def verify(envelope: IO[bytes], url: str | None, keys_file: str | None, kid: str | None) -> dict[str, Any]:
    """Verify a signed envelope read from ENVELOPE (a file, or - for stdin; the default).

    Keys come from --url, --keys, or by default from the database. Exits 1 when the signature does not
    verify, or when the key that made it is revoked.
    """
    if url and keys_file:
        raise CliError("give --url or --keys, not both")
    body = envelope.read()
    if url:
        keys, source = _keys_from_url(url), url
    elif keys_file:
        keys, source = _keys_from_file(keys_file), keys_file
    else:
        keys, source = _keys_from_database(), "database"
    if not keys.pems:
        raise CliError(f"no public keys found in {source}")
    try:
        verified = verify_envelope(body, keys.pems, kid, states=keys.states)
    except RevokedKeyUsed as exc:
        raise CliError(f"invalid: the signature was made by key {exc.kid}, which is revoked") from exc
    except EnvelopeInvalid as exc:
        raise CliError(f"invalid: {exc}") from exc
    except KeySetInvalid as exc:
        raise CliError(str(exc)) from exc
    document = json.loads(body)  # verify_envelope has checked it: an object with base64 of a JSON response
    response = json.loads(base64.b64decode(document["response_base64"]))
    return {
        "valid": True,
        "kid": verified,
        "state": keys.states.get(verified),
        "scope": keys.scopes.get(verified),
        "private_key_used": document.get("private_key_used"),
        "code": response.get("code") if isinstance(response, dict) else None,
        "message": response.get("message") if isinstance(response, dict) else None,
        "keys_from": source,
    }
