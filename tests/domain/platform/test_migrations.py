"""The migrations build exactly the schema every concern's models declare, and reach the head revision."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import domain.access.models
import domain.catalog.models
import domain.events.models
import domain.idempotency.models
import domain.license_meta.models
import domain.signing.models
import domain.webhooks.models  # noqa: F401 - every concern's tables on Base.metadata
from domain.platform.database import make_sync_engine
from domain.platform.migrate import current_revision, head_revision
from domain.platform.models import Base
from domain.platform.settings import Settings


def test_migrated_schema_matches_the_models(settings: Settings) -> None:
    engine = make_sync_engine(settings)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    assert differences == []
