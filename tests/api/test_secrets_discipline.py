"""Secrets never leak: API key, webhook secret, master key and a canary meta value are pushed through the API
(good and bad requests), the CLI, the audit worker path and /metrics; logs, audit records, metrics and
error envelopes are then searched for them. And the master key file is 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from cli import main as cli_main
from domain.access.api_keys import MANAGE_WEBHOOKS_CAPABILITY
from domain.events import audit
from domain.events.models import AuditRecord, OutboxEvent
from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.signing.master_key import load_master_key
from tests.api.conftest import ENDPOINT
from tests.conftest import make_world
from tests.logcapture import logging_to_current_stderr


def test_secrets_appear_in_no_log_audit_record_metric_or_error(client: Any, settings: Settings,
                                                               master_key_text: str,
                                                               capfd: pytest.CaptureFixture[str]) -> None:
    with logging_to_current_stderr(settings):
        _scenario(client, settings, master_key_text, capfd)


def _scenario(client: Any, settings: Settings, master_key_text: str, capfd: pytest.CaptureFixture[str]) -> None:
    world = make_world(capabilities=["create-license-key-meta", MANAGE_WEBHOOKS_CAPABILITY])
    canary = "CANARY-meta-value-7f3e9c"
    guessed_key = "km_guess_" + "q" * 24  # an unknown key must not be echoed either
    bodies: list[bytes] = []

    def send(**kwargs: Any) -> Any:
        response = client.post(ENDPOINT, **kwargs)
        bodies.append(response.content + str(response.headers).encode())
        return response

    assert send(data=world.form(value=canary)).json()["response"]["code"] == 453
    assert send(data=world.form(api_key=guessed_key, value=canary)).status_code == 401
    send(content=f'{{"api_key":"{world.api_key}","value":"{canary}"'.encode(),
         headers={"content-type": "application/json"})  # unparseable: 400
    send(data=world.form(value=canary + "x" * 20000))  # over the limit: 901 with errors
    send(data=world.form(value=canary), headers={"X-API-Key": guessed_key, "Authorization": f"Bearer {guessed_key}"})
    created = client.post("/api/v1/webhook-endpoints", json={"url": "https://hooks.example.com/k"},
                          headers={"X-API-Key": world.api_key})
    assert created.status_code == 201, created.text
    whsec = created.json()["secret"]  # shown once, at creation: the one place it may appear
    assert whsec.startswith("whsec_")
    listed = client.get("/api/v1/webhook-endpoints", headers={"Authorization": f"Bearer {world.api_key}"})
    bodies.append(listed.content)
    bodies.append(client.get("/api/v1/webhook-endpoints", headers={"X-API-Key": guessed_key}).content)
    metrics_text = client.get("/metrics").content

    cli = CliRunner()
    for args in (["webhooks", "list", "--json"], ["audit", "list"], ["signing-keys", "list"]):
        result = cli.invoke(cli_main, args)
        bodies.append(result.output.encode())
    with unit_of_work() as session:
        ids = list(session.scalars(select(OutboxEvent.id)))
        recorded = audit.record_events(session, ids)
    with unit_of_work() as session:
        records = [repr({c.name: getattr(row, c.name) for c in AuditRecord.__table__.columns})
                   for row in session.scalars(select(AuditRecord))]
    assert records
    result = cli.invoke(cli_main, ["audit", "list", "--limit", "1000"])
    bodies.append(result.output.encode())
    logs = capfd.readouterr()
    # The scenario did log (one debug line per audit record at least): the search below is not vacuous.
    assert recorded.appended > 0
    assert logs.err.count('"event": "audit.event_recorded"') == recorded.appended, "no log lines were captured"
    haystacks = {"logs": (logs.out + logs.err).encode(), "metrics": metrics_text,
                 "audit_records": "\n".join(records).encode(), "responses and CLI output": b"\n".join(bodies)}
    secrets = {"api key": world.api_key, "guessed api key": guessed_key, "webhook secret": whsec,
               "webhook secret body": whsec.removeprefix("whsec_"), "master key": master_key_text,
               "meta value": canary}
    for where, text in haystacks.items():
        for what, secret in secrets.items():
            assert secret.encode() not in text, f"{what} found in {where}"
    assert world.license_key.encode() not in haystacks["audit_records"]  # masked there


def test_master_key_file_is_0600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KEYMETA_MASTER_KEY", raising=False)
    settings = Settings(_env_file=None, var_dir=tmp_path / "var", master_key="")  # type: ignore[call-arg]
    old = os.umask(0o022)
    try:
        load_master_key(settings, create=True)
    finally:
        os.umask(old)
    [key_file] = [p for p in (tmp_path / "var").rglob("*") if p.is_file()]
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_no_secret_is_compared_with_double_equals() -> None:
    """Secrets are matched by digest lookup (the database) or hmac.compare_digest; grep for the anti-pattern."""
    root = Path(__file__).resolve().parents[2]
    offenders = []
    for path in [*root.glob("api/**/*.py"), *root.glob("domain/**/*.py"), *root.glob("workers/**/*.py")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if "==" in code and any(word in code for word in ("secret ==", "api_key ==", "signature ==",
                                                              "== secret", "== api_key", "== signature")):
                offenders.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    assert offenders == []
