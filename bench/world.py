"""A fresh, migrated database of the run's own with a signing key and the data the meta requests need.

The world holds many license keys, each activated for the bench identifier: the bench spreads its requests over
them, as real clients are spread, so that neither the per-license cap on meta keys nor the per-license lock
creates take decides what it measures.

Backends: ``embedded`` (keymeta's embedded PostgreSQL server under the run's own var dir, stopped afterwards)
or ``postgres`` (a scratch database on a machine PostgreSQL server, dropped afterwards).
"""

from __future__ import annotations

import base64
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from sqlalchemy import func, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.embedded import embedded_server
from domain import catalog
from domain.access import api_keys
from domain.catalog.models import LicenseKey
from domain.license_meta.codes import META_CAPABILITIES
from domain.license_meta.models import LicenseKeyMeta
from domain.platform.database import make_sync_engine
from domain.platform.migrate import upgrade_to_head
from domain.platform.models import utcnow
from domain.platform.settings import Settings
from domain.signing.keys import GLOBAL_SCOPE, create_signing_key
from domain.signing.master_key import decode_master_key
from domain.signing.models import SigningKey

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
BACKENDS = ("embedded", "postgres")
DEFAULT_LICENSES = 1024


@dataclass(frozen=True)
class BenchWorld:
    settings: Settings
    api_key: str
    license_key: str
    identifier: str
    public_keys: dict[str, str]  # kid -> PEM, what a client verifies envelopes with
    license_keys: tuple[str, ...] = field(default=())  # every license key activated for ``identifier``

    def __post_init__(self) -> None:
        if not self.license_keys:
            object.__setattr__(self, "license_keys", (self.license_key,))

    def env(self) -> dict[str, str]:
        """The KEYMETA_* variables every child process gets (no database URL: the embedded server)."""
        env = {
            "KEYMETA_MASTER_KEY": self.settings.master_key,
            "KEYMETA_VAR_DIR": str(self.settings.var_dir),
            "KEYMETA_LOG_LEVEL": "WARNING",
            # One key from one address at thousands of requests a second: with the production rate limits the
            # bench would measure refusals. The bench measures the service, so it turns them off, explicitly.
            "KEYMETA_RATE_LIMIT_ENABLED": "false",
        }
        if self.settings.database_url:
            env["KEYMETA_DATABASE_URL"] = self.settings.database_url
        return env

    def form(self, key: str, value: str = "bench value") -> dict[str, str]:
        return {"api_key": self.api_key, "license_key": self.license_key, "identifier": self.identifier,
                "key": key, "value": value}

    def seed_meta(self, rows: list[tuple[str, str]], value: str = "seed") -> None:
        """Write meta rows (license key, meta key) straight into the table, before any API process runs."""
        engine = make_sync_engine(self.settings)
        try:
            with engine.begin() as conn:
                ids = dict(conn.execute(select(LicenseKey.key, LicenseKey.id).where(
                    LicenseKey.key.in_(sorted({license_key for license_key, _ in rows})))).tuples().all())
                now = utcnow()
                for start in range(0, len(rows), 5000):
                    conn.execute(insert(LicenseKeyMeta), [
                        {"license_key_id": ids[license_key], "key": key, "value": value,
                         "identifier": self.identifier, "version": 1, "created_at": now}
                        for license_key, key in rows[start:start + 5000]])
        finally:
            engine.dispose()

    def backend_pids(self) -> set[int]:
        """PostgreSQL server processes serving this database (their CPU is part of the cost)."""
        engine = make_sync_engine(self.settings)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                         "AND pid <> pg_backend_pid()")).all()
        finally:
            engine.dispose()
        # Only processes of a local server are ours to measure.
        return {int(row[0]) for row in rows if _command(int(row[0])) == "postgres"}

    def count_meta(self, key_prefix: str) -> int:
        """Meta rows whose key starts with ``key_prefix`` (the prefix must hold no LIKE wildcards)."""
        engine = make_sync_engine(self.settings)
        try:
            with engine.connect() as conn:
                stmt = select(func.count()).select_from(LicenseKeyMeta).where(
                    LicenseKeyMeta.key.like(f"{key_prefix}%"))
                return int(conn.scalar(stmt) or 0)
        finally:
            engine.dispose()


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@contextmanager
def scratch_postgres_database(admin_url: str) -> Iterator[str]:
    admin = make_url(admin_url).set(drivername="postgresql")
    dsn = admin.render_as_string(hide_password=False)
    name = f"keymeta_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def database_url(backend: str, postgres_admin_url: str, var_dir: Path) -> Iterator[str]:
    """The ``KEYMETA_DATABASE_URL`` of a fresh, migrated database: empty for the embedded server of ``var_dir``."""
    if backend == "embedded":
        with embedded_server(var_dir):
            yield ""
    elif backend == "postgres":
        with scratch_postgres_database(postgres_admin_url) as url:
            engine = make_sync_engine(Settings(database_url=url, var_dir=var_dir))
            try:
                upgrade_to_head(engine)
            finally:
                engine.dispose()
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r} (use one of {', '.join(BACKENDS)})")


def _bootstrap(settings: Settings, licenses: int) -> BenchWorld:
    engine = make_sync_engine(settings)
    try:
        master_key = decode_master_key(settings.master_key)
        suffix = uuid.uuid4().hex[:10].upper()
        identifier = f"bench-{suffix.lower()}.example"
        with Session(engine, expire_on_commit=False) as session, session.begin():
            create_signing_key(session, master_key, GLOBAL_SCOPE, key_size=settings.key_size)
            product = catalog.create_product(session, name=f"bench product {suffix}")
            license_keys = []
            for n in range(licenses):
                license_row = catalog.create_license_key(session, product_id=product.id,
                                                         key=f"BENCH-{suffix}-{n:05d}", status="assigned")
                catalog.activate(session, license_key=license_row.key, identifier=identifier)
                license_keys.append(license_row.key)
            issued = api_keys.create_api_key(session, name=f"bench {suffix}", capabilities=list(META_CAPABILITIES))
        with Session(engine) as session:
            public_keys = {row.kid: row.public_pem for row in session.scalars(select(SigningKey))}
    finally:
        engine.dispose()
    return BenchWorld(settings=settings, api_key=issued.secret, license_key=license_keys[0],
                      identifier=identifier, public_keys=public_keys, license_keys=tuple(license_keys))


@contextmanager
def prepared_world(backend: str, postgres_admin_url: str = DEFAULT_POSTGRES_URL,
                   licenses: int = DEFAULT_LICENSES, temp_root: Path | None = None) -> Iterator[BenchWorld]:
    """Temp dir (under ``temp_root``, else the system's) + fresh database (dropped or stopped afterwards), migrated
    and bootstrapped with ``licenses`` license keys activated for the bench identifier."""
    if licenses < 1:
        raise ValueError("a bench world needs at least one license key")
    with tempfile.TemporaryDirectory(prefix="keymeta-bench-", dir=temp_root) as tmp:
        var_dir = Path(tmp) / "var"
        var_dir.mkdir()
        with database_url(backend, postgres_admin_url, var_dir) as url:
            settings = Settings(
                database_url=url,
                master_key=base64.b64encode(secrets.token_bytes(32)).decode("ascii"),
                var_dir=var_dir,
                log_level="WARNING",
            )
            yield _bootstrap(settings, licenses)
