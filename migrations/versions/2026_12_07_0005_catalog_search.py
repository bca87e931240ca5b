"""items: a trigram index for catalog search (GET /v1/items?q=)

The search is a case-insensitive substring of the id or the title. Without an index a word that no
item has scanned the whole catalog (360 ms at 100k items). pg_trgm would do it, but the embedded
PostgreSQL wheel ships no contrib extensions, so this is the same idea with built-ins: a GIN index
over each item's trigrams (every 3 consecutive characters of its lower-cased id and title). A
needle of 3 or more characters can only be inside an item that has all of its trigrams; the
index finds those, and the LIKE of app/storage/browse.py checks each. Shorter needles read the
catalog in id order, as before (nearly every item matches them, so the first page comes at once).

The functions use only built-ins, so maintenance (VACUUM, ANALYZE, REINDEX) evaluates them under
any search_path. Built CONCURRENTLY, like 0002: a plain CREATE INDEX would block item upserts
for the whole build (seconds per 100k items). Then ANALYZE, for the expression's statistics.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 12:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The needle's trigrams (app/storage/browse.py passes it lower-cased, as its LIKE compares). In
# PL/pgSQL: a loop is 4-5 times cheaper per item than a SQL function over generate_series (measured),
# and the index computes it for every item written.
_SEARCH_TRIGRAMS = """
CREATE OR REPLACE FUNCTION search_trigrams(needle text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    trigrams text[] := '{}';
BEGIN
    FOR i IN 1 .. length(needle) - 2 LOOP
        trigrams := trigrams || substr(needle, i, 3);
    END LOOP;
    RETURN trigrams;
END $$
"""
# An item's: of its id and title, each lower-cased on its own exactly as the search's LIKE does,
# joined by a newline (a needle that spans it finds an extra candidate, which the LIKE drops).
_ITEM_SEARCH_TRIGRAMS = """
CREATE OR REPLACE FUNCTION item_search_trigrams(item_id text, attributes jsonb) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    searched text := lower(item_id) || E'\\n' || lower(coalesce(attributes ->> 'title', ''));
    trigrams text[] := '{}';
BEGIN
    FOR i IN 1 .. length(searched) - 2 LOOP
        trigrams := trigrams || substr(searched, i, 3);
    END LOOP;
    RETURN trigrams;
END $$
"""


def upgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute(_SEARCH_TRIGRAMS)
        op.execute(_ITEM_SEARCH_TRIGRAMS)
        # An interrupted build leaves an INVALID index that IF NOT EXISTS would keep (as in 0002).
        invalid = op.get_bind().execute(sa.text(
            "SELECT NOT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = 'ix_items_search'"
        )).scalar()
        if invalid:
            op.drop_index('ix_items_search', table_name='items', postgresql_concurrently=True)
        op.create_index(
            'ix_items_search', 'items', [sa.text('item_search_trigrams(item_id, attributes)')], unique=False,
            postgresql_using='gin', postgresql_concurrently=True, if_not_exists=True,
        )
        # Statistics of the new expression now, not at the next auto-analyze: without them the
        # planner takes every needle for rare and reads a common one's matches in full (0.5 s).
        op.execute("ANALYZE items")


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index('ix_items_search', table_name='items', postgresql_concurrently=True, if_exists=True)
        op.execute("DROP FUNCTION IF EXISTS item_search_trigrams(text, jsonb)")
        op.execute("DROP FUNCTION IF EXISTS search_trigrams(text)")
