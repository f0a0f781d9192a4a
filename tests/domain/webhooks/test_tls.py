"""HTTPS through the pinned transport: the TCP connection goes to the vetted address, while SNI and the
certificate check still use the URL's host name."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select
from standardwebhooks.webhooks import Webhook

from domain.platform.database import unit_of_work
from domain.platform.settings import Settings
from domain.webhooks import jobs, ssrf, transport
from domain.webhooks.models import WebhookAttempt
from tests.conftest import World
from tests.webhook_sink import Reply, Sink
from tests.webhook_support import meta_events, register


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _cert(subject: str, issuer_key: ec.EllipticCurvePrivateKey, key: ec.EllipticCurvePrivateKey, issuer: str,
          ca: bool, san: str | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


@pytest.fixture
def tls_sink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sink]:
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test CA", ca_key, ca_key, "test CA", ca=True)
    leaf = _cert("hooks.test", ca_key, leaf_key, "test CA", ca=False, san="hooks.test")
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + leaf_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tmp_path / "leaf.pem")
    client_tls = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    monkeypatch.setattr(transport, "_ssl_context", client_tls)  # trust the test CA instead of the public ones
    answers = {"hooks.test": "127.0.0.1", "other.test": "127.0.0.1"}
    monkeypatch.setattr(ssrf, "resolve", lambda host, port, timeout: [ipaddress.ip_address(answers[host])])
    server = Sink(tls=server_tls)
    yield server
    server.close()


def test_https_is_pinned_and_still_checks_the_certificate_name(settings: Settings, world: World,
                                                               tls_sink: Sink) -> None:
    good = register(tls_sink.on("/tls", Reply(200)).replace("127.0.0.1", "hooks.test"))
    wrong_name = register(tls_sink.url("/tls", host="other.test"))  # same address, certificate is not for it
    created = jobs.fan_out_events(meta_events(world))
    jobs.deliver(created)

    [request] = tls_sink.at("/tls")
    assert request.headers["host"] == f"hooks.test:{tls_sink.port}"
    Webhook(good.secret).verify(request.body, request.headers)
    with unit_of_work() as session:
        attempts = {a.delivery_id: a for a in session.scalars(select(WebhookAttempt))}
    outcomes = sorted((a.outcome, a.address, "certificate" in (a.error or "")) for a in attempts.values())
    assert outcomes == [("failure", "127.0.0.1", True), ("success", "127.0.0.1", False)]
    assert wrong_name.id != good.id
