"""audit action index: the console's filter by action reads one action's newest records on an index

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 11:10:00.000000
"""

from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_audit_records_action_seq', 'audit_records', ['action', 'seq'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_audit_records_action_seq', table_name='audit_records')
