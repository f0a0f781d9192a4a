"""Alembic environment: the caller's connection, else one from keymeta's settings; offline SQL needs no server."""

from __future__ import annotations

from alembic import context

# Every concern's tables, registered on the one metadata for autogenerate.
import domain.access.models
import domain.catalog.models
import domain.events.models
import domain.idempotency.models
import domain.license_meta.models
import domain.signing.models
import domain.webhooks.models  # noqa: F401
from domain.platform.database import make_sync_engine
from domain.platform.models import Base

config = context.config
target_metadata = Base.metadata


def run_migrations_offline() -> None:
    # SQL for someone else to run: only the dialect matters, so no server is needed.
    url = config.get_main_option("sqlalchemy.url") or "postgresql+psycopg://"
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_sync_engine()
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
