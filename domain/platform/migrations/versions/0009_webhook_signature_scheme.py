"""webhook signature scheme: an endpoint signs with v1 (HMAC) or v1a (Ed25519, its public key published)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 12:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('webhook_endpoints', sa.Column('signature_scheme', sa.String(length=8), server_default='v1',
                                                 nullable=False))
    op.add_column('webhook_endpoints', sa.Column('public_key', sa.String(length=64), nullable=True))
    op.add_column('webhook_endpoints', sa.Column('previous_public_key', sa.String(length=64), nullable=True))
    op.create_check_constraint(
        'ck_webhook_endpoints_signature_scheme', 'webhook_endpoints',
        "(signature_scheme = 'v1' AND public_key IS NULL AND previous_public_key IS NULL)"
        " OR (signature_scheme = 'v1a' AND public_key IS NOT NULL AND public_key ~ '^whpk_[A-Za-z0-9+/]{43}=$'"
        " AND (previous_public_key IS NULL OR previous_public_key ~ '^whpk_[A-Za-z0-9+/]{43}=$'))")


def downgrade() -> None:
    op.drop_constraint('ck_webhook_endpoints_signature_scheme', 'webhook_endpoints', type_='check')
    op.drop_column('webhook_endpoints', 'previous_public_key')
    op.drop_column('webhook_endpoints', 'public_key')
    op.drop_column('webhook_endpoints', 'signature_scheme')
