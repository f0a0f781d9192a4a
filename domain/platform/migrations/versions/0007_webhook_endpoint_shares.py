"""webhook endpoint shares: attempts at once and attempts per second per endpoint

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('webhook_endpoints', sa.Column('max_in_flight', sa.Integer(), server_default='8', nullable=False))
    op.add_column('webhook_endpoints', sa.Column('rate_limit', sa.Float(), nullable=True))
    op.create_check_constraint('ck_webhook_endpoints_max_in_flight', 'webhook_endpoints',
                               'max_in_flight BETWEEN 1 AND 256')
    op.create_check_constraint('ck_webhook_endpoints_rate_limit', 'webhook_endpoints',
                               'rate_limit IS NULL OR rate_limit > 0')


def downgrade() -> None:
    op.drop_constraint('ck_webhook_endpoints_rate_limit', 'webhook_endpoints', type_='check')
    op.drop_constraint('ck_webhook_endpoints_max_in_flight', 'webhook_endpoints', type_='check')
    op.drop_column('webhook_endpoints', 'rate_limit')
    op.drop_column('webhook_endpoints', 'max_in_flight')
