"""meta versions

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import domain.platform.models

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

# Takes the license's transaction-scoped advisory lock (key space 7305003; no row is written), then counts its
# meta rows. VOLATILE: the count runs on a snapshot taken after the lock is granted, so it sees every row a
# concurrent writer committed while this one waited.
COUNT_FUNCTION = """
CREATE FUNCTION license_key_meta_count_locked(license_id bigint) RETURNS bigint
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7305003, (license_id % 2147483647)::integer);
    RETURN (SELECT count(*) FROM license_key_meta WHERE license_key_id = license_id);
END
$$
"""


def upgrade() -> None:
    op.add_column('license_key_meta', sa.Column('version', sa.BigInteger(), server_default=sa.text('1'),
                                                nullable=False))
    op.add_column('license_key_meta', sa.Column('updated_at', domain.platform.models.UTCDateTime(timezone=True),
                                                nullable=True))
    op.alter_column('license_key_meta', 'identifier', existing_type=sa.String(length=255), nullable=True)
    op.execute(COUNT_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION license_key_meta_count_locked(bigint)")
    op.execute("UPDATE license_key_meta SET identifier = '' WHERE identifier IS NULL")
    op.alter_column('license_key_meta', 'identifier', existing_type=sa.String(length=255), nullable=False)
    op.drop_column('license_key_meta', 'updated_at')
    op.drop_column('license_key_meta', 'version')
