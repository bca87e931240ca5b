"""training runs: the model search's findings (quality) per run

Each training run records what `personalized` was chosen to be and how every candidate scored
on the org's own holdout (app/ml/selection.py), so a tenant's quality can be followed version by
version and the next train can refit the last winner without searching again. A nullable column:
adding it rewrites nothing.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('training_runs', sa.Column('quality', postgresql.JSONB(astext_type=sa.Text()), nullable=True))


def downgrade() -> None:
    op.drop_column('training_runs', 'quality')
