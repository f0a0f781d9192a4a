"""audit hash chain

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 18:44:21.097675
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import domain.platform.models

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_records',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=True),
    sa.Column('recorded_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('occurred_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('outcome_code', sa.Integer(), nullable=True),
    sa.Column('actor_api_key_id', sa.BigInteger(), nullable=True),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('source_ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=512), nullable=True),
    sa.Column('product_id', sa.BigInteger(), nullable=True),
    sa.Column('license_key_masked', sa.String(length=32), nullable=True),
    sa.Column('identifier', sa.String(length=255), nullable=True),
    sa.Column('meta_key', sa.String(length=255), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=True),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id'),
    sa.UniqueConstraint('seq')
    )
    op.create_index('ix_outbox_events_pending_fan_out', 'outbox_events', ['fanned_out_at', 'id'], unique=False)



def downgrade() -> None:
    op.drop_index('ix_outbox_events_pending_fan_out', table_name='outbox_events')

    op.drop_table('audit_records')
