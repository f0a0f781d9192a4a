"""webhook endpoints, deliveries and attempts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 18:49:53.058698
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import domain.platform.models

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_endpoints',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('event_types', sa.JSON(), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('disabled_reason', sa.String(length=255), nullable=True),
    sa.Column('disabled_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('failing_since', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('secret_version', sa.Integer(), nullable=False),
    sa.Column('secret_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('previous_secret_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('previous_secret_expires_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('fingerprint')
    )
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('endpoint_id', sa.BigInteger(), nullable=False),
    sa.Column('msg_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('retry_step', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('locked_until', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('rung_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.String(length=512), nullable=True),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('completed_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'in_progress', 'succeeded', 'failed', 'cancelled')", name='ck_webhook_deliveries_status'),
    sa.ForeignKeyConstraint(['endpoint_id'], ['webhook_endpoints.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', 'endpoint_id', name='uq_webhook_deliveries_event_endpoint'),
    sa.UniqueConstraint('msg_id')
    )
    op.create_index('ix_webhook_deliveries_created', 'webhook_deliveries', ['created_at'], unique=False)
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['status', 'next_attempt_at'], unique=False)
    op.create_index('ix_webhook_deliveries_endpoint', 'webhook_deliveries', ['endpoint_id', 'id'], unique=False)

    op.create_table('webhook_attempts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('delivery_id', sa.BigInteger(), nullable=False),
    sa.Column('attempt_no', sa.Integer(), nullable=False),
    sa.Column('started_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.Column('error', sa.String(length=512), nullable=True),
    sa.Column('response_excerpt', sa.Text(), nullable=True),
    sa.Column('response_truncated', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['delivery_id'], ['webhook_deliveries.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('delivery_id', 'attempt_no', name='uq_webhook_attempts_delivery_no')
    )


def downgrade() -> None:
    op.drop_table('webhook_attempts')
    op.drop_index('ix_webhook_deliveries_endpoint', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_due', table_name='webhook_deliveries')
    op.drop_index('ix_webhook_deliveries_created', table_name='webhook_deliveries')

    op.drop_table('webhook_deliveries')
    op.drop_table('webhook_endpoints')
