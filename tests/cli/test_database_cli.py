"""``keymeta db backup`` / ``restore`` round-trip the whole database; ``db stop`` is embedded-only."""

from __future__ import annotations

import datetime as dt
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, text

from cli import database
from domain.events.audit import record_events
from domain.events.models import AuditRecord, OutboxEvent
from domain.license_meta.models import LicenseKeyMeta
from domain.platform import embedded_postgres
from domain.platform.database import reset_engines, unit_of_work
from domain.platform.settings import Settings, get_settings
from domain.signing.keys import product_scope, signer_from_row
from domain.signing.master_key import load_master_key
from domain.signing.models import SigningKey
from domain.webhooks.endpoints import signing_secrets
from domain.webhooks.models import WebhookEndpoint
from tests.backends import fresh_postgres_database
from tests.cli.invoke import fails, ok_json
from tests.conftest import configure, make_world
from tests.webhook_support import WEBHOOK_ENV, meta_events, register


def use_database(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("KEYMETA_DATABASE_URL", url)
    get_settings.cache_clear()
    reset_engines()


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row a backup must carry, and the schema's tables, indexes and grants, as plain tuples."""
    with unit_of_work() as session:
        return {
            "tables": [tuple(r) for r in session.execute(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))],
            "indexes": [tuple(r) for r in session.execute(text(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"))],
            "schema": [tuple(r) for r in session.execute(text(
                "SELECT nspowner::regrole::text, nspacl::text, obj_description(oid, 'pg_namespace') "
                "FROM pg_namespace WHERE nspname = 'public'"))],
            "meta": [(m.id, m.license_key_id, m.key, m.value, m.identifier) for m in
                     session.scalars(select(LicenseKeyMeta).order_by(LicenseKeyMeta.id))],
            "outbox": [(e.id, e.type, e.subject_id, e.audited_at) for e in
                       session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))],
            "audit": [(r.seq, r.event_id, r.status, r.prev_hash, r.hash) for r in
                      session.scalars(select(AuditRecord).order_by(AuditRecord.seq))],
            "endpoints": [(w.id, w.url, w.secret_version, w.secret_encrypted) for w in
                          session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.id))],
            "signing_keys": [(k.kid, k.scope, k.state, k.private_key_encrypted) for k in
                             session.scalars(select(SigningKey).order_by(SigningKey.kid))],
        }


@pytest.fixture
def source(master_key_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """A database of the test's own with meta rows, an audit chain, a webhook secret and a product key."""
    with fresh_postgres_database() as url:
        yield configure(monkeypatch, url, master_key_text, tmp_path / "var", **WEBHOOK_ENV)
        reset_engines()
        get_settings.cache_clear()


def test_backup_then_restore_into_an_empty_database_gives_back_every_row_and_secret(
        source: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_world(own_key=True)
    hook = register("http://127.0.0.1:9/hook")
    with unit_of_work() as session:
        record_events(session, meta_events(world, count=3))
    before = snapshot()
    assert len(before["meta"]) == 3 and len(before["audit"]) == 3
    assert ok_json("audit", "verify")["verified"] == 3

    backup = tmp_path / "keymeta.dump"
    written = ok_json("db", "backup", str(backup))
    assert written == {"file": str(backup), "bytes": backup.stat().st_size}
    assert backup.read_bytes().startswith(b"PGDMP")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no partial file left

    with fresh_postgres_database() as target:
        use_database(monkeypatch, target)
        assert ok_json("db", "restore", str(backup)) == {"file": str(backup), "restored": True}
        assert snapshot() == before
        assert ok_json("audit", "verify") == {"verified": 3, "status": "ok"}
        master_key = load_master_key(get_settings())
        with unit_of_work() as session:
            endpoint = session.get(WebhookEndpoint, hook.id)
            assert endpoint is not None
            assert signing_secrets(endpoint, master_key, dt.datetime.now(dt.UTC))[0] == hook.secret
            product_key = session.scalar(select(SigningKey).where(SigningKey.scope == product_scope(world.product_id)))
            assert product_key is not None and product_key.private_key_encrypted is not None
            signer = signer_from_row(master_key, product_key.kid, product_key.private_key_encrypted)
            assert signer.kid == product_key.kid

        # Restoring over a database that has changed since puts it back as the backup has it.
        with unit_of_work() as session:
            session.execute(LicenseKeyMeta.__table__.delete())
        assert ok_json("db", "restore", str(backup))["restored"] is True
        assert snapshot() == before
        reset_engines()


def backed_up_world(tmp_path: Path) -> tuple[Path, dict[str, list[tuple[Any, ...]]]]:
    world = make_world(own_key=True)
    register("http://127.0.0.1:9/hook")
    with unit_of_work() as session:
        record_events(session, meta_events(world, count=3))
    backup = tmp_path / "keymeta.dump"
    ok_json("db", "backup", str(backup))
    return backup, snapshot()


def cut_short(backup: Path, truncated: Path, between_statements: bool) -> None:
    """``backup`` less a few hundred bytes: cut inside a row of data, or where pg_restore's SQL ends with whole
    statements (psql, reaching the end of its input, would find nothing wrong)."""
    data = backup.read_bytes()
    for cut in range(300, 3000):
        truncated.write_bytes(data[:-cut])
        sql = subprocess.run([str(embedded_postgres.binary("pg_restore")), "--file", "-", str(truncated)],
                             capture_output=True, check=False)
        assert sql.returncode != 0
        whole = sql.stdout.endswith(b"\n") and sql.stdout.count(b" FROM stdin;\n") == sql.stdout.count(b"\n\\.\n")
        if whole == between_statements:
            break
    else:
        raise AssertionError("no such cut")
    listing = subprocess.run([str(embedded_postgres.binary("pg_restore")), "--list", str(truncated)],
                             capture_output=True, check=False)
    assert listing.returncode == 0  # its table of contents is whole: only the data is cut short


@pytest.mark.parametrize("between_statements", [True, False], ids=["between statements", "inside a row"])
def test_a_truncated_backup_fails_in_one_line_and_leaves_the_database_as_it_was(
        source: Settings, tmp_path: Path, between_statements: bool) -> None:
    backup, before = backed_up_world(tmp_path)
    truncated = tmp_path / "truncated.dump"
    cut_short(backup, truncated, between_statements)
    fails("db", "restore", str(truncated), match="restore failed, the database is unchanged: .")
    assert snapshot() == before
    assert ok_json("audit", "verify") == {"verified": 3, "status": "ok"}


def test_restore_drops_what_the_backup_does_not_hold(source: Settings, tmp_path: Path) -> None:
    backup, before = backed_up_world(tmp_path)
    with unit_of_work() as session:
        session.execute(text("CREATE TABLE added_after_the_backup (id int PRIMARY KEY)"))
        session.execute(text("CREATE INDEX added_index ON license_key_meta (value)"))
        session.execute(text("CREATE SEQUENCE added_sequence"))
    assert snapshot() != before
    assert ok_json("db", "restore", str(backup)) == {"file": str(backup), "restored": True}
    assert snapshot() == before
    with unit_of_work() as session:
        assert session.scalar(text("SELECT to_regclass('public.added_sequence')")) is None
    assert ok_json("audit", "verify") == {"verified": 3, "status": "ok"}
    assert ok_json("db", "upgrade")["revision"]


def test_restore_gives_the_public_schema_the_grants_of_a_new_database(source: Settings, tmp_path: Path) -> None:
    backup, _ = backed_up_world(tmp_path)
    with fresh_postgres_database() as empty, psycopg.connect(empty) as conn:
        fresh = conn.execute("SELECT nspowner::regrole::text, nspacl::text, obj_description(oid, 'pg_namespace') "
                             "FROM pg_namespace WHERE nspname = 'public'").fetchall()
    ok_json("db", "restore", str(backup))
    assert snapshot()["schema"] == fresh


def test_the_version_check_of_a_restore_uses_the_urls_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEYMETA_DATABASE_URL", "postgresql://keymeta:s3cret@db.example:5433/keymeta")
    get_settings.cache_clear()
    seen: dict[str, Any] = {}

    class Connection:
        class info:
            server_version = 170004

        def __enter__(self) -> Connection:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

    def connect(conninfo: str, **kwargs: Any) -> Connection:
        seen.update(psycopg.conninfo.conninfo_to_dict(conninfo, **kwargs))
        if seen.get("password") != "s3cret":
            raise psycopg.OperationalError("password authentication failed for user \"keymeta\"")
        return Connection()

    monkeypatch.setattr(psycopg, "connect", connect)
    try:
        conninfo, env = database._libpq_target()
        assert "s3cret" not in conninfo and env["PGPASSWORD"] == "s3cret"  # never on a command line
        assert database._server_version(conninfo, env) == 170004
        assert (seen["host"], seen["port"], seen["user"]) == ("db.example", "5433", "keymeta")
    finally:
        get_settings.cache_clear()


def test_restore_refuses_a_file_that_is_not_a_backup(settings: Settings, tmp_path: Path) -> None:
    not_a_dump = tmp_path / "notes.sql"
    not_a_dump.write_text("DROP TABLE license_key_meta;\n")
    fails("db", "restore", str(not_a_dump), match="is not a keymeta backup")
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(b"PGDMP\x01\x0e\x00")
    fails("db", "restore", str(truncated), match="is not a readable keymeta backup")
    fails("db", "restore", str(tmp_path / "missing.dump"), match="cannot read")


def test_backup_into_a_missing_directory_fails_in_one_line(settings: Settings, tmp_path: Path) -> None:
    fails("db", "backup", str(tmp_path / "no-such-dir" / "keymeta.dump"), match="is not a directory")


def test_db_stop_with_an_external_database_is_refused(settings: Settings) -> None:
    fails("db", "stop", match="KEYMETA_DATABASE_URL is set")


def test_db_stop_of_the_embedded_default_stops_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from domain.platform import embedded_postgres

    var = tmp_path / "var"
    monkeypatch.delenv("KEYMETA_DATABASE_URL", raising=False)
    monkeypatch.setenv("KEYMETA_VAR_DIR", str(var))
    get_settings.cache_clear()
    reset_engines()
    try:
        assert ok_json("db", "stop")["stopped"] is False  # nothing running: nothing to do
        embedded_postgres.ensure_running(var)
        assert ok_json("db", "stop") == {"stopped": True,
                                         "data_dir": str(embedded_postgres.Paths.of(var).data_dir)}
        assert embedded_postgres.running_pid(var) is None
    finally:
        embedded_postgres.stop(var)
        get_settings.cache_clear()


def test_a_database_url_that_is_not_postgresql_fails_in_one_line(settings: Settings,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    use_database(monkeypatch, "sqlite:///keymeta.db")
    fails("db", "upgrade", match="KEYMETA_DATABASE_URL must be a PostgreSQL URL")
    get_settings.cache_clear()
