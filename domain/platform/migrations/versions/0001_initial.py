"""initial schema: keys, licenses, meta, signing keys, outbox

Revision ID: 0001
Revises: 
Create Date: 2026-11-26 18:40:02.996661
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import domain.platform.models

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('expires_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('capabilities', sa.JSON(), nullable=False),
    sa.Column('allowed_cidrs', sa.JSON(), nullable=False),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('digest')
    )
    op.create_table('block_rules',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('ip', 'identifier')", name='ck_block_rules_kind'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kind', 'value', name='uq_block_rules_kind_value')
    )
    op.create_table('outbox_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('subject_id', sa.BigInteger(), nullable=True),
    sa.Column('outcome_code', sa.Integer(), nullable=True),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('request_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('audited_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('fanned_out_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_outbox_events_pending_audit', 'outbox_events', ['audited_at', 'id'], unique=False)

    op.create_table('products',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('own_signing_key', sa.Boolean(), nullable=False),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('signing_keys',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('kid', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('key_size', sa.Integer(), nullable=False),
    sa.Column('public_pem', sa.Text(), nullable=False),
    sa.Column('private_key_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('activated_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('retired_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("state IN ('pending', 'active', 'retired', 'revoked')", name='ck_signing_keys_state'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('kid')
    )
    op.create_index(op.f('ix_signing_keys_scope'), 'signing_keys', ['scope'], unique=False)
    op.create_index('uq_signing_keys_one_active_per_scope', 'signing_keys', ['scope'], unique=True, postgresql_where=sa.text("state = 'active'"))

    op.create_table('license_keys',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('product_id', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('validity_days', sa.Integer(), nullable=False),
    sa.Column('assigned_at', domain.platform.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('available', 'assigned', 'reserved', 'blocked')", name='ck_license_keys_status'),
    sa.CheckConstraint('validity_days >= 0', name='ck_license_keys_validity_days'),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    op.create_index(op.f('ix_license_keys_product_id'), 'license_keys', ['product_id'], unique=False)

    op.create_table('activations',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('license_key_id', sa.BigInteger(), nullable=False),
    sa.Column('identifier', sa.String(length=255), nullable=False),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['license_key_id'], ['license_keys.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('license_key_id', 'identifier', name='uq_activations_license_identifier')
    )
    op.create_table('license_key_meta',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('license_key_id', sa.BigInteger(), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.Column('identifier', sa.String(length=255), nullable=False),
    sa.Column('created_at', domain.platform.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['license_key_id'], ['license_keys.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('license_key_id', 'key', name='uq_license_key_meta_license_key')
    )


def downgrade() -> None:
    op.drop_table('license_key_meta')
    op.drop_table('activations')
    op.drop_index(op.f('ix_license_keys_product_id'), table_name='license_keys')

    op.drop_table('license_keys')
    op.drop_index('uq_signing_keys_one_active_per_scope', table_name='signing_keys', postgresql_where=sa.text("state = 'active'"))
    op.drop_index(op.f('ix_signing_keys_scope'), table_name='signing_keys')

    op.drop_table('signing_keys')
    op.drop_table('products')
    op.drop_index('ix_outbox_events_pending_audit', table_name='outbox_events')

    op.drop_table('outbox_events')
    op.drop_table('block_rules')
    op.drop_table('api_keys')
