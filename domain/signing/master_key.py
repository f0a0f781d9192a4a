"""The master key that encrypts signing private keys and webhook secrets at rest (AES-256-GCM)."""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from domain.platform.settings import Settings

KEY_BYTES = 32
NONCE_BYTES = 12


class MasterKeyError(RuntimeError):
    """The master key is missing, malformed, or does not open what it should."""


def decode_master_key(text: str) -> bytes:
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), altchars=b"-_", validate=False)
    except (binascii.Error, ValueError) as exc:
        raise MasterKeyError("KEYMETA_MASTER_KEY is not base64") from exc
    if len(raw) != KEY_BYTES:
        raise MasterKeyError(
            f"KEYMETA_MASTER_KEY must be {KEY_BYTES} bytes of base64 (got {len(raw)} bytes); "
            "generate one with: openssl rand -base64 32"
        )
    return raw


def master_key_file(settings: Settings) -> Path:
    return settings.var_dir / "master.key"


def load_master_key(settings: Settings, *, create: bool = False) -> bytes:
    """From ``KEYMETA_MASTER_KEY``, else the embedded default file under ``./var/``.

    Only ``create=True`` (``db upgrade`` and ``bootstrap``) may generate the file; everything else
    fails loudly rather than silently starting over with a key that opens nothing.
    """
    if settings.master_key:
        return decode_master_key(settings.master_key)
    path = master_key_file(settings)
    if path.exists():
        return decode_master_key(path.read_text())
    if not create:
        raise MasterKeyError(
            f"no master key: set KEYMETA_MASTER_KEY or run 'keymeta bootstrap' to create {path}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(encoded + "\n")
    return decode_master_key(encoded)


def seal(master_key: bytes, plaintext: bytes, context: str) -> bytes:
    """Encrypt; ``context`` (e.g. the kid) is bound as associated data so ciphertexts can't be swapped."""
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(master_key).encrypt(nonce, plaintext, context.encode())


def unseal(master_key: bytes, sealed: bytes, context: str) -> bytes:
    try:
        return AESGCM(master_key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode())
    except InvalidTag as exc:
        raise MasterKeyError(f"the master key does not open the secret of {context}") from exc
