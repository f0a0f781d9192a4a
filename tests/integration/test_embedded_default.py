"""The embedded default (docs/operations.md): with no KEYMETA_* configuration at all (only a var dir of its own), the
operator's first commands, the API and the workers run on the embedded PostgreSQL server they start
themselves, a create goes through the whole pipeline, and ``keymeta db stop`` leaves no server behind.

It runs wherever the suite runs, CI included (whatever KEYMETA_TEST_POSTGRES_URL says): nothing here uses
the session's database.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from domain.platform import embedded_postgres
from tests.processes import BIN, Stack, wait_until

pytestmark = pytest.mark.integration


def keymeta(env: dict[str, str], cwd: Path, *args: str) -> Any:
    completed = subprocess.run([str(BIN / "keymeta"), *args, "--json"], env=env, cwd=cwd, capture_output=True,
                               text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[tuple[Stack, Path]]:
    """A process environment with no KEYMETA_* but a fresh var dir; its server stopped at the end."""
    var = tmp_path / "var"
    env = {name: value for name, value in os.environ.items() if not name.startswith("KEYMETA_")}
    env.update(KEYMETA_VAR_DIR=str(var), KEYMETA_LOG_FORMAT="json")
    stack = Stack(env=env, log_dir=tmp_path)
    try:
        yield stack, var
    finally:
        stack.stop_all()
        if var.is_dir():
            embedded_postgres.stop(var)


def server_processes(var: Path) -> list[psutil.Process]:
    data_dir = str(embedded_postgres.Paths.of(var).data_dir)
    return [p for p in psutil.process_iter(["name", "cmdline"])
            if p.info["name"] == "postgres" and data_dir in " ".join(p.info["cmdline"] or ())]


def test_first_run_on_the_embedded_default_creates_audits_and_stops(embedded: tuple[Stack, Path],
                                                                     tmp_path: Path) -> None:
    stack, var = embedded
    assert keymeta(stack.env, tmp_path, "db", "upgrade")["revision"]
    assert len(server_processes(var)) == 1
    demo = keymeta(stack.env, tmp_path, "bootstrap", "--demo")["demo"]

    stack.worker("audit", name="audit")
    stack.worker("webhooks", name="webhooks", pool="threads", concurrency=2)
    _, base = stack.api()
    meta_key = f"embedded-{uuid.uuid4().hex[:8]}"
    response = httpx.post(f"{base}/api/v1/create-license-key-meta", timeout=30, data={
        "api_key": demo["api_key"], "license_key": demo["license_key"], "identifier": demo["identifier"],
        "key": meta_key, "value": "on the embedded default"})
    assert response.json()["response"]["code"] == 453, response.text

    def audited() -> bool:
        records = keymeta(stack.env, tmp_path, "audit", "list", "--limit", "100")["records"]
        return any(r["meta_key"] == meta_key and r["code"] == 453 for r in records)

    wait_until(audited, timeout=90, interval=1, message="the create's audit record")
    assert keymeta(stack.env, tmp_path, "audit", "verify")["status"] == "ok"

    stack.stop_all()
    assert keymeta(stack.env, tmp_path, "db", "stop")["stopped"] is True
    assert server_processes(var) == []
    assert (embedded_postgres.Paths.of(var).data_dir / "PG_VERSION").is_file()  # stopped, not removed
