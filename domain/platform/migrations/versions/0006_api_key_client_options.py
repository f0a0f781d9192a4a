"""api key client options: management keys and the signature scheme

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('api_keys', sa.Column('management', sa.Boolean(), server_default=sa.false(), nullable=False))
    op.add_column('api_keys', sa.Column('signature_scheme', sa.String(length=32),
                                        server_default='response_base64', nullable=False))
    op.create_check_constraint('ck_api_keys_signature_scheme', 'api_keys',
                               "signature_scheme IN ('response_base64', 'envelope')")


def downgrade() -> None:
    op.drop_constraint('ck_api_keys_signature_scheme', 'api_keys', type_='check')
    op.drop_column('api_keys', 'signature_scheme')
    op.drop_column('api_keys', 'management')
