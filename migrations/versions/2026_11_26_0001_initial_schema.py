"""initial schema: orgs, accounts, keys, items, users, events, aliases, served log, training runs

Revision ID: 0001
Revises:
Create Date: 2026-11-26 10:40:10.357005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('orgs',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('slug', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('domain', sa.String(length=64), server_default='commerce', nullable=False),
    sa.Column('rate_limit', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slug')
    )
    op.create_table('accounts',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('password_hash', sa.Text(), nullable=False),
    sa.Column('org_id', sa.UUID(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('email')
    )
    op.create_table('api_keys',
    sa.Column('id', sa.UUID(), nullable=False),
    sa.Column('pair_id', sa.UUID(), nullable=False),
    sa.Column('org_id', sa.UUID(), nullable=False),
    sa.Column('key_type', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=32), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("key_type IN ('publishable', 'secret')", name='api_keys_key_type'),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    op.create_index('ix_api_keys_org_pair', 'api_keys', ['org_id', 'pair_id'], unique=False)
    op.create_table('events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('org_id', sa.UUID(), nullable=False),
    sa.Column('event_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=False),
    sa.Column('event_family', sa.String(length=16), nullable=False),
    sa.Column('event_name', sa.Text(), nullable=False),
    sa.Column('item_id', sa.Text(), nullable=True),
    sa.Column('previous_user_id', sa.Text(), nullable=True),
    sa.Column('recommendation_id', sa.Text(), nullable=True),
    sa.Column('context', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('org_id', 'event_id', name='uq_events_org_event')
    )
    op.create_index('ix_events_org_recommendation', 'events', ['org_id', 'recommendation_id'], unique=False, postgresql_where=sa.text('recommendation_id IS NOT NULL'))
    op.create_index('ix_events_org_time', 'events', ['org_id', 'occurred_at'], unique=False)
    op.create_index('ix_events_org_user_time', 'events', ['org_id', 'user_id', 'occurred_at'], unique=False)
    op.create_table('identity_aliases',
    sa.Column('org_id', sa.UUID(), nullable=False),
    sa.Column('alias_id', sa.Text(), nullable=False),
    sa.Column('canonical_id', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'alias_id')
    )
    op.create_index('ix_identity_aliases_canonical', 'identity_aliases', ['org_id', 'canonical_id'], unique=False)
    op.create_table('items',
    sa.Column('org_id', sa.UUID(), nullable=False),
    sa.Column('item_id', sa.Text(), nullable=False),
    sa.Column('item_type', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attributes', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('active', 'inactive', 'deleted')", name='items_status'),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'item_id')
    )
    op.create_index('ix_items_org_updated', 'items', ['org_id', 'updated_at'], unique=False)
    op.create_table('served_recommendations',
    sa.Column('org_id', sa.UUID(), nullable=False),
    sa.Column('recommendation_id', sa.UUID(), nullable=False),
    sa.Column('strategy', sa.String(length=64), nullable=False),
    sa.Column('mode', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=True),
    sa.Column('context_item_id', sa.Text(), nullable=True),
    sa.Column('item_ids', postgresql.ARRAY(sa.Text()), nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=True),
    sa.Column('served_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'recommendation_id')
    )
    op.create_index('ix_served_org_time', 'served_recommendations', ['org_id', 'served_at'], unique=False)
    op.create_table('training_runs',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('org_id', sa.UUID(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('items', sa.Integer(), server_default='0', nullable=False),
    sa.Column('users', sa.Integer(), server_default='0', nullable=False),
    sa.Column('interactions', sa.Integer(), server_default='0', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_training_runs_org_finished', 'training_runs', ['org_id', 'finished_at'], unique=False)
    op.create_table('users',
    sa.Column('org_id', sa.UUID(), nullable=False),
    sa.Column('user_id', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attributes', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'"), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('active', 'inactive', 'deleted')", name='users_status'),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('org_id', 'user_id')
    )


def downgrade() -> None:
    op.drop_table('users')
    op.drop_index('ix_training_runs_org_finished', table_name='training_runs')
    op.drop_table('training_runs')
    op.drop_index('ix_served_org_time', table_name='served_recommendations')
    op.drop_table('served_recommendations')
    op.drop_index('ix_items_org_updated', table_name='items')
    op.drop_table('items')
    op.drop_index('ix_identity_aliases_canonical', table_name='identity_aliases')
    op.drop_table('identity_aliases')
    op.drop_index('ix_events_org_user_time', table_name='events')
    op.drop_index('ix_events_org_time', table_name='events')
    op.drop_index('ix_events_org_recommendation', table_name='events', postgresql_where=sa.text('recommendation_id IS NOT NULL'))
    op.drop_table('events')
    op.drop_index('ix_api_keys_org_pair', table_name='api_keys')
    op.drop_table('api_keys')
    op.drop_table('accounts')
    op.drop_table('orgs')
