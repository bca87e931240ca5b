"""served log: index (org_id, user_id) for erasures

An erasure unties the user's rows of the served-recommendation log (user_id -> NULL). Without an
index on the user it read every row the org was ever served, inside the erasure's transaction.
Built CONCURRENTLY: on a large served log a plain CREATE INDEX would block the worker's inserts
for as long as the build takes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 21:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # A build that was interrupted (or lost a deadlock) leaves an INVALID index behind, which
        # IF NOT EXISTS would keep for good: drop it and build again.
        invalid = op.get_bind().execute(sa.text(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'ix_served_org_user'"
        )).scalar()
        if invalid:
            op.drop_index('ix_served_org_user', table_name='served_recommendations', postgresql_concurrently=True)
        op.create_index(
            'ix_served_org_user', 'served_recommendations', ['org_id', 'user_id'], unique=False,
            postgresql_where=sa.text('user_id IS NOT NULL'), postgresql_concurrently=True, if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_served_org_user', table_name='served_recommendations', postgresql_concurrently=True,
                      if_exists=True)
