"""The vendor's official SDKs work against keymeta unchanged, signature check on (docs/api.md, "Clients of the
vendor's SDKs"): real PHP and node processes post as getkeymanager/php-sdk 3.x and the JavaScript SDK 2.x do,
to a real uvicorn server whose global and product keys are RSA-4096, and verify every answer as the SDKs do."""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.license_meta.codes import META_CAPABILITIES
from domain.platform.database import reset_engines
from domain.platform.settings import get_settings
from tests.backends import fresh_postgres_database
from tests.cli.invoke import ok_json
from tests.processes import Stack

HERE = Path(__file__).parent
IN_CI = os.environ.get("CI") == "true"
# CI installs php-cli, php-curl and node (.ci/run) and must run these; a laptop without them skips them.
PHP_MISSING = shutil.which("php") is None or (
    shutil.which("php") is not None
    and "curl" not in subprocess.run(["php", "-m"], capture_output=True, text=True).stdout.split())
needs_php = pytest.mark.skipif(PHP_MISSING and not IN_CI, reason="needs php-cli with the curl extension")
needs_node = pytest.mark.skipif(shutil.which("node") is None and not IN_CI, reason="needs node")

SLASH_AND_UNICODE = "path/to/é 日本"


@dataclass(frozen=True)
class Server:
    base: str
    api_key: str
    global_pem: str
    product_pem: str  # the own-key product's key
    license_key: str  # of a product without a key of its own: answered by the global key
    own_key_license_key: str  # of a product with its own key


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An operator's setup with ``KEYMETA_KEY_SIZE=4096``, made with the CLI, then the API under uvicorn."""
    tmp = tmp_path_factory.mktemp("sdk")
    with fresh_postgres_database() as url, pytest.MonkeyPatch.context() as env:
        for name, value in {
            "KEYMETA_DATABASE_URL": url, "KEYMETA_VAR_DIR": str(tmp / "var"), "KEYMETA_KEY_SIZE": "4096",
            "KEYMETA_MASTER_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            "KEYMETA_CACHE_TTL_SECONDS": "0", "KEYMETA_LOG_FORMAT": "json",
        }.items():
            env.setenv(name, value)
        get_settings.cache_clear()
        reset_engines()
        stack = Stack(env=dict(os.environ), log_dir=tmp)
        try:
            ok_json("db", "upgrade")
            ok_json("bootstrap")
            plain = ok_json("products", "create", "--name", "sdk product")["id"]
            own = ok_json("products", "create", "--name", "sdk own-key product", "--own-key")["id"]
            licenses = [ok_json("license-keys", "create", "--product", str(product), "--status", "assigned")["key"]
                        for product in (plain, own)]
            capabilities = [arg for capability in META_CAPABILITIES for arg in ("--capability", capability)]
            issued = ok_json("api-keys", "create", "--name", "vendor sdk", "--management",
                             "--signature-scheme", "envelope", *capabilities)
            assert (issued["management"], issued["signature_scheme"]) == (True, "envelope")
            _, base = stack.api()
            keys = httpx.get(f"{base}/api/v1/public-keys", timeout=10).json()["keys"]
            active = {key["scope"]: key for key in keys if key["state"] == "active"}
            assert active["global"]["key_size"] == active[own]["key_size"] == 4096
            yield Server(base=base, api_key=issued["api_key"], global_pem=active["global"]["pem"],
                         product_pem=active[own]["pem"], license_key=licenses[0], own_key_license_key=licenses[1])
        finally:
            stack.stop_all()
            reset_engines()  # close the pool before the database is dropped
            get_settings.cache_clear()


def run_client(command: list[str], server: Server, pem: str, calls: list[dict[str, Any]],
               tmp_path: Path) -> list[dict[str, Any]]:
    pem_file, calls_file = tmp_path / "public.pem", tmp_path / "calls.json"
    pem_file.write_text(pem)
    calls_file.write_text(json.dumps(calls, ensure_ascii=False))
    done = subprocess.run([*command, server.base, server.api_key, str(pem_file), str(calls_file)],
                          capture_output=True, text=True, timeout=120)
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(calls), f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return results


def assert_all_verified(results: list[dict[str, Any]], codes: list[int]) -> None:
    assert [r["code"] for r in results] == codes, results
    assert all(r["scheme"] == "envelope" for r in results), results
    assert [r for r in results if not r["verified"]] == [], "the SDK's signature check failed"
    assert [r for r in results if r["tampered_verified"]] == [], "an altered answer verified: the check is void"


@needs_php
def test_php_sdk_creates_updates_and_deletes_with_its_signature_check_on(server: Server, tmp_path: Path) -> None:
    key = f"sdk/colour-{uuid.uuid4().hex[:6]}"
    lk = server.license_key
    calls = [
        {"operation": "create", "license_key": lk, "meta_key": key, "meta_value": SLASH_AND_UNICODE},
        {"operation": "create", "license_key": lk, "meta_key": key, "meta_value": SLASH_AND_UNICODE},
        # get (keymeta's signed read) answers with the values themselves: "/" and non-ASCII in the signed bytes,
        # and U+2028, which PHP escapes even with JSON_UNESCAPED_UNICODE.
        {"operation": "get", "license_key": lk, "meta_key": key},
        {"operation": "update", "license_key": lk, "meta_key": key, "meta_value": "ändern/to\u2028日本語 ✓ \"q\""},
        {"operation": "get", "license_key": lk, "meta_key": key},
        {"operation": "delete", "license_key": lk, "meta_key": key},
        {"operation": "delete", "license_key": lk, "meta_key": key},
        # An answer with an errors object (901) and one before the license is resolved (210).
        {"operation": "create", "license_key": lk, "meta_key": key, "meta_value": "x" * (10 * 1024 + 1)},
        {"operation": "create", "license_key": "NO-SUCH-LICENSE", "meta_key": key, "meta_value": "v"},
    ]
    results = run_client(["php", str(HERE / "php" / "client.php")], server, server.global_pem, calls, tmp_path)
    assert_all_verified(results, [453, 452, 4540, 353, 4540, 252, 251, 901, 210])


@needs_node
def test_javascript_sdk_at_v1_paths_verifies_every_answer(server: Server, tmp_path: Path) -> None:
    key = f"sdk/size-{uuid.uuid4().hex[:6]}"
    lk = server.own_key_license_key
    calls = [
        {"operation": "create", "license_key": lk, "meta_key": key, "meta_value": SLASH_AND_UNICODE},
        {"operation": "update", "license_key": lk, "meta_key": key, "meta_value": "€ 😀 a/b"},
        {"operation": "update", "license_key": lk, "meta_key": key, "meta_value": "€ 😀 a/b"},
        {"operation": "get", "license_key": lk, "meta_key": key},  # "/" and non-ASCII in the signed bytes
        {"operation": "delete", "license_key": lk, "meta_key": key},
        {"operation": "delete", "license_key": lk, "meta_key": key},
    ]
    results = run_client(["node", str(HERE / "node" / "client.mjs")], server, server.product_pem, calls, tmp_path)
    assert_all_verified(results, [453, 353, 353, 4540, 252, 251])
