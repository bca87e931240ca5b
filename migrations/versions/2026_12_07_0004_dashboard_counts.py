"""counts kept as rows are written: per org, events per hour, recommendations and their outcomes per hour

GET /v1/models/status, the dashboard's overview and GET /v1/analytics/recommendations counted
rows on every call (count(*) over an org's 1M events: 420 ms; joining 100k served rows to their
events: 680 ms). Now the database keeps the counts as rows are written: statement-level triggers
on items, users, events and served_recommendations add each statement's changes, grouped by org
(and hour, and strategy), in the writer's own transaction. Every path that writes rows (the
worker, erasure, retention, `lehnz import`, a COPY, ON DELETE CASCADE of an org) keeps them exact;
a reader sums a handful of rows (app/storage/counts.py, app/storage/analytics.py).

- org_counts: items by status, users, events.
- hourly_event_counts: events by the hour they happened in.
- hourly_recommendation_counts: recommendations by the hour they were served and their strategy,
  with the outcomes of the events that name them (exposures, clicks, conversions, revenue).
- unattributed_events: events naming a recommendation that was not in the served log when they
  were stored (the api logs what it serves in batches, so a quick click can overtake its row).
  The served row's insert moves them into the counts; a reader joins the few left over.

Writers of one org never wait for each other on a count: the trigger adds to any of the org's
count rows that no other transaction holds (FOR UPDATE SKIP LOCKED) and inserts a new one only
when all are held (a long `lehnz import` holds one until it commits). An org has as many rows per
key as its writers ever overlapped; readers sum them. An event attributed to a served row holds a
KEY SHARE lock on it until it commits, so retention cannot delete the row in between.

The backfill runs after the triggers exist, with the four tables locked against writes
(SHARE ROW EXCLUSIVE, until this migration commits): nothing is counted twice or missed. Writers
wait for it (seconds at 1M events). Locked in the order the erasure and the import write them
(events, users, served, items), so neither can deadlock with it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _hour(column: str) -> str:
    """The UTC hour a moment falls in (what the readers bucket by)."""
    return f"date_bin('1 hour', {column}, timestamptz '2000-01-01 00:00:00+00')"


# An event's outcome for analytics (the definitions of GET /v1/analytics/recommendations):
# exposures are exposure-family events, clicks are clicks, conversions are purchases, revenue is a
# purchase's context.price x context.quantity (quantity 1 when absent).
_OUTCOME = """
    (e.event_family = 'exposure')::int AS exposures,
    (e.event_name = 'click')::int AS clicks,
    (e.event_name = 'purchase')::int AS conversions,
    CASE WHEN e.event_name = 'purchase' AND jsonb_typeof(e.context -> 'price') = 'number'
         THEN (e.context ->> 'price')::numeric
              * CASE WHEN jsonb_typeof(e.context -> 'quantity') = 'number'
                     THEN (e.context ->> 'quantity')::numeric ELSE 1 END
         ELSE 0 END AS revenue"""
_HAS_OUTCOME = "(e.event_family = 'exposure' OR e.event_name IN ('click', 'purchase'))"
# Served rows are keyed by a uuid and named by its text: only that exact text can match one.
_SERVED_ID = "'^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'"


def _outcomes(rows: str) -> str:
    """A statement's events that can count for a recommendation: (id, org_id, rid, outcome...).
    Events of an org being deleted (ON DELETE CASCADE) are left out."""
    return f"""
    (SELECT e.id, e.org_id, e.recommendation_id::uuid AS rid, {_OUTCOME}
     FROM (SELECT * FROM {rows} WHERE recommendation_id ~ {_SERVED_ID}) AS e
     WHERE {_HAS_OUTCOME} AND e.org_id IN (SELECT id FROM orgs))"""


# The recommendation an event names, locked against deletion until the event's writer commits.
_SERVED_ROW = f"""
    SELECT strategy, {_hour('served_at')} AS hour FROM served_recommendations
    WHERE org_id = o.org_id AND recommendation_id = o.rid FOR KEY SHARE"""

# Add to one of the key's rows that no other transaction holds; a new row when every one is
# held. Nothing for an org that no longer exists (its rows are being deleted by ON DELETE
# CASCADE, in this very transaction).
_ADDERS = [
    """
CREATE FUNCTION org_counts_add(org uuid, d_items_active bigint, d_items_inactive bigint,
                               d_items_deleted bigint, d_users bigint, d_events bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    target bigint;
BEGIN
    SELECT id INTO target FROM org_counts WHERE org_id = org LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF target IS NOT NULL THEN
        UPDATE org_counts SET items_active = items_active + d_items_active,
                              items_inactive = items_inactive + d_items_inactive,
                              items_deleted = items_deleted + d_items_deleted,
                              users = users + d_users,
                              events = events + d_events
        WHERE id = target;
    ELSIF EXISTS (SELECT FROM orgs WHERE id = org) THEN
        INSERT INTO org_counts (org_id, items_active, items_inactive, items_deleted, users, events)
        VALUES (org, d_items_active, d_items_inactive, d_items_deleted, d_users, d_events);
    END IF;
END $$
""",
    """
CREATE FUNCTION hourly_event_counts_add(org uuid, at_hour timestamptz, d_events bigint)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    target bigint;
BEGIN
    SELECT id INTO target FROM hourly_event_counts WHERE org_id = org AND hour = at_hour
    LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF target IS NOT NULL THEN
        UPDATE hourly_event_counts SET events = events + d_events WHERE id = target;
    ELSIF EXISTS (SELECT FROM orgs WHERE id = org) THEN
        INSERT INTO hourly_event_counts (org_id, hour, events) VALUES (org, at_hour, d_events);
    END IF;
END $$
""",
    """
CREATE FUNCTION hourly_recommendation_counts_add(org uuid, at_hour timestamptz, strategy_name text,
                                                 d_served bigint, d_exposures bigint, d_clicks bigint,
                                                 d_conversions bigint, d_revenue numeric)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    target bigint;
BEGIN
    SELECT id INTO target FROM hourly_recommendation_counts
    WHERE org_id = org AND hour = at_hour AND strategy = strategy_name
    LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF target IS NOT NULL THEN
        UPDATE hourly_recommendation_counts
        SET served = served + d_served, exposures = exposures + d_exposures, clicks = clicks + d_clicks,
            conversions = conversions + d_conversions, revenue = revenue + d_revenue
        WHERE id = target;
    ELSIF EXISTS (SELECT FROM orgs WHERE id = org) THEN
        INSERT INTO hourly_recommendation_counts
            (org_id, hour, strategy, served, exposures, clicks, conversions, revenue)
        VALUES (org, at_hour, strategy_name, d_served, d_exposures, d_clicks, d_conversions, d_revenue);
    END IF;
END $$
""",
]

# One function per table, for each of its triggers (TG_OP says which). Users, events and the
# served log are never updated in a way that changes a count: identity stitching and erasure
# rewrite user ids only.
_TRIGGER_FUNCTIONS = [
    """
CREATE FUNCTION count_items() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM org_counts_add(org_id, active, inactive, deleted, 0, 0) FROM (
            SELECT org_id, count(*) FILTER (WHERE status = 'active') AS active,
                   count(*) FILTER (WHERE status = 'inactive') AS inactive,
                   count(*) FILTER (WHERE status = 'deleted') AS deleted
            FROM new_rows GROUP BY org_id) AS changed;
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM org_counts_add(org_id, -active, -inactive, -deleted, 0, 0) FROM (
            SELECT org_id, count(*) FILTER (WHERE status = 'active') AS active,
                   count(*) FILTER (WHERE status = 'inactive') AS inactive,
                   count(*) FILTER (WHERE status = 'deleted') AS deleted
            FROM old_rows GROUP BY org_id) AS changed;
    ELSE  -- an update moves a count only when it changes the status
        PERFORM org_counts_add(org_id, active, inactive, deleted, 0, 0) FROM (
            SELECT org_id, sum(CASE WHEN status = 'active' THEN sign ELSE 0 END) AS active,
                   sum(CASE WHEN status = 'inactive' THEN sign ELSE 0 END) AS inactive,
                   sum(CASE WHEN status = 'deleted' THEN sign ELSE 0 END) AS deleted
            FROM (SELECT org_id, status, 1 AS sign FROM new_rows
                  UNION ALL SELECT org_id, status, -1 FROM old_rows) AS versions
            GROUP BY org_id) AS changed
        WHERE (active, inactive, deleted) <> (0, 0, 0);
    END IF;
    RETURN NULL;
END $$
""",
    """
CREATE FUNCTION count_users() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM org_counts_add(org_id, 0, 0, 0, n, 0) FROM (
            SELECT org_id, count(*) AS n FROM new_rows GROUP BY org_id) AS changed;
    ELSE
        PERFORM org_counts_add(org_id, 0, 0, 0, -n, 0) FROM (
            SELECT org_id, count(*) AS n FROM old_rows GROUP BY org_id) AS changed;
    END IF;
    RETURN NULL;
END $$
""",
    f"""
CREATE FUNCTION count_events() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
    unpended bigint[];
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM org_counts_add(org_id, 0, 0, 0, 0, n) FROM (
            SELECT org_id, count(*) AS n FROM new_rows GROUP BY org_id) AS c;
        PERFORM hourly_event_counts_add(org_id, hour, n) FROM (
            SELECT org_id, {_hour('occurred_at')} AS hour, count(*) AS n FROM new_rows GROUP BY 1, 2) AS c;
        -- Outcomes count for the recommendation they name; one not in the served log yet waits.
        WITH matched AS (
            SELECT o.*, s.strategy, s.hour FROM {_outcomes('new_rows')} AS o
            LEFT JOIN LATERAL ({_SERVED_ROW}) AS s ON true
        ),
        pending AS (
            INSERT INTO unattributed_events (event_row_id, org_id, recommendation_id, exposures, clicks,
                                             conversions, revenue)
            SELECT id, org_id, rid, exposures, clicks, conversions, revenue FROM matched WHERE strategy IS NULL
        )
        SELECT count(*) INTO changed FROM (
            SELECT hourly_recommendation_counts_add(org_id, hour, strategy, 0, sum(exposures), sum(clicks),
                                                    sum(conversions), sum(revenue))
            FROM matched WHERE strategy IS NOT NULL GROUP BY org_id, hour, strategy) AS c;
    ELSE
        PERFORM org_counts_add(org_id, 0, 0, 0, 0, -n) FROM (
            SELECT org_id, count(*) AS n FROM old_rows GROUP BY org_id) AS c;
        PERFORM hourly_event_counts_add(org_id, hour, -n) FROM (
            SELECT org_id, {_hour('occurred_at')} AS hour, count(*) AS n FROM old_rows GROUP BY 1, 2) AS c;
        -- A waiting one leaves the queue; an attributed one takes its outcome back. Two
        -- statements: the second sees a served row whose insert just moved one of these.
        WITH gone AS (
            DELETE FROM unattributed_events WHERE event_row_id IN (SELECT id FROM old_rows)
            RETURNING event_row_id
        )
        SELECT array_agg(event_row_id) INTO unpended FROM gone;
        SELECT count(*) INTO changed FROM (
            SELECT hourly_recommendation_counts_add(o.org_id, s.hour, s.strategy, 0, -sum(o.exposures),
                                                    -sum(o.clicks), -sum(o.conversions), -sum(o.revenue))
            FROM {_outcomes('old_rows')} AS o
            JOIN LATERAL ({_SERVED_ROW}) AS s ON true
            WHERE o.id <> ALL (coalesce(unpended, '{{}}'))
            GROUP BY o.org_id, s.hour, s.strategy) AS c;
    END IF;
    RETURN NULL;
END $$
""",
    f"""
CREATE FUNCTION count_served() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM hourly_recommendation_counts_add(org_id, hour, strategy, n, 0, 0, 0, 0) FROM (
            SELECT org_id, {_hour('served_at')} AS hour, strategy, count(*) AS n
            FROM new_rows GROUP BY 1, 2, 3) AS c;
        -- Events stored before their recommendation count for it now.
        WITH moved AS (
            DELETE FROM unattributed_events AS u USING new_rows AS n
            WHERE u.org_id = n.org_id AND u.recommendation_id = n.recommendation_id
            RETURNING u.org_id, {_hour('n.served_at')} AS hour, n.strategy, u.exposures, u.clicks,
                      u.conversions, u.revenue
        )
        SELECT count(*) INTO changed FROM (
            SELECT hourly_recommendation_counts_add(org_id, hour, strategy, 0, sum(exposures), sum(clicks),
                                                    sum(conversions), sum(revenue))
            FROM moved GROUP BY org_id, hour, strategy) AS c;
    ELSE
        -- The recommendation and the outcomes of the events attributed to it.
        PERFORM hourly_recommendation_counts_add(org_id, hour, strategy, -n, 0, 0, 0, 0) FROM (
            SELECT org_id, {_hour('served_at')} AS hour, strategy, count(*) AS n
            FROM old_rows WHERE org_id IN (SELECT id FROM orgs) GROUP BY 1, 2, 3) AS c;
        PERFORM hourly_recommendation_counts_add(org_id, hour, strategy, 0, -exposures, -clicks, -conversions,
                                                 -revenue) FROM (
            SELECT s.org_id, {_hour('s.served_at')} AS hour, s.strategy, sum(o.exposures) AS exposures,
                   sum(o.clicks) AS clicks, sum(o.conversions) AS conversions, sum(o.revenue) AS revenue
            FROM (SELECT * FROM old_rows WHERE org_id IN (SELECT id FROM orgs)) AS s
            JOIN LATERAL (
                SELECT {_OUTCOME} FROM events AS e
                WHERE e.org_id = s.org_id AND e.recommendation_id = s.recommendation_id::text AND {_HAS_OUTCOME}
                  AND NOT EXISTS (SELECT FROM unattributed_events AS u WHERE u.event_row_id = e.id)
            ) AS o ON true
            GROUP BY 1, 2, 3) AS c;
    END IF;
    RETURN NULL;
END $$
""",
]

# (table, trigger function, operations)
_COUNTED = [
    ("items", "count_items", ("INSERT", "UPDATE", "DELETE")),
    ("users", "count_users", ("INSERT", "DELETE")),
    ("events", "count_events", ("INSERT", "DELETE")),
    ("served_recommendations", "count_served", ("INSERT", "DELETE")),
]
_TRANSITIONS = {
    "INSERT": "NEW TABLE AS new_rows",
    "UPDATE": "OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "DELETE": "OLD TABLE AS old_rows",
}

_BACKFILL = [
    """
INSERT INTO org_counts (org_id, items_active, items_inactive, items_deleted, users, events)
SELECT o.id, coalesce(i.active, 0), coalesce(i.inactive, 0), coalesce(i.deleted, 0), coalesce(u.n, 0),
       coalesce(e.n, 0)
FROM orgs AS o
LEFT JOIN (SELECT org_id, count(*) FILTER (WHERE status = 'active') AS active,
                  count(*) FILTER (WHERE status = 'inactive') AS inactive,
                  count(*) FILTER (WHERE status = 'deleted') AS deleted
           FROM items GROUP BY org_id) AS i ON i.org_id = o.id
LEFT JOIN (SELECT org_id, count(*) AS n FROM users GROUP BY org_id) AS u ON u.org_id = o.id
LEFT JOIN (SELECT org_id, count(*) AS n FROM events GROUP BY org_id) AS e ON e.org_id = o.id
WHERE i.org_id IS NOT NULL OR u.org_id IS NOT NULL OR e.org_id IS NOT NULL
""",
    f"""
INSERT INTO hourly_event_counts (org_id, hour, events)
SELECT org_id, {_hour('occurred_at')}, count(*) FROM events GROUP BY 1, 2
""",
    f"""
INSERT INTO hourly_recommendation_counts (org_id, hour, strategy, served, exposures, clicks, conversions, revenue)
SELECT org_id, hour, strategy, sum(served), sum(exposures), sum(clicks), sum(conversions), sum(revenue) FROM (
    SELECT org_id, {_hour('served_at')} AS hour, strategy, count(*) AS served, 0 AS exposures, 0 AS clicks,
           0 AS conversions, 0::numeric AS revenue
    FROM served_recommendations GROUP BY 1, 2, 3
    UNION ALL
    SELECT o.org_id, {_hour('s.served_at')}, s.strategy, 0, sum(o.exposures), sum(o.clicks), sum(o.conversions),
           sum(o.revenue)
    FROM {_outcomes('events')} AS o
    JOIN served_recommendations AS s ON s.org_id = o.org_id AND s.recommendation_id = o.rid
    GROUP BY 1, 2, 3
) AS counts GROUP BY 1, 2, 3
""",
    f"""
INSERT INTO unattributed_events (event_row_id, org_id, recommendation_id, exposures, clicks, conversions, revenue)
SELECT o.id, o.org_id, o.rid, o.exposures, o.clicks, o.conversions, o.revenue FROM {_outcomes('events')} AS o
WHERE NOT EXISTS (SELECT FROM served_recommendations AS s WHERE s.org_id = o.org_id AND s.recommendation_id = o.rid)
""",
]


def _count_table(name: str, *key: sa.Column, counts: list[sa.Column]) -> None:
    op.create_table(name,
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('org_id', sa.UUID(), nullable=False),
    *key,
    *counts,
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )


def _count(name: str, type_: type[sa.types.TypeEngine] = sa.BigInteger) -> sa.Column:
    return sa.Column(name, type_(), server_default='0', nullable=False)


def upgrade() -> None:
    _count_table('org_counts', counts=[_count('items_active'), _count('items_inactive'), _count('items_deleted'),
                                       _count('users'), _count('events')])
    op.create_index('ix_org_counts_org', 'org_counts', ['org_id'], unique=False)
    _count_table('hourly_event_counts', sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
                 counts=[_count('events')])
    op.create_index('ix_hourly_event_counts_org_hour', 'hourly_event_counts', ['org_id', 'hour'], unique=False)
    _count_table('hourly_recommendation_counts', sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
                 sa.Column('strategy', sa.String(length=64), nullable=False),
                 counts=[_count('served'), _count('exposures'), _count('clicks'), _count('conversions'),
                         _count('revenue', sa.Numeric)])
    op.create_index('ix_hourly_recommendation_counts_org_hour', 'hourly_recommendation_counts', ['org_id', 'hour'],
                    unique=False)
    op.create_table('unattributed_events',
    sa.Column('event_row_id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('org_id', sa.UUID(), nullable=False),
    sa.Column('recommendation_id', postgresql.UUID(), nullable=False),
    sa.Column('exposures', sa.Integer(), nullable=False),
    sa.Column('clicks', sa.Integer(), nullable=False),
    sa.Column('conversions', sa.Integer(), nullable=False),
    sa.Column('revenue', sa.Numeric(), nullable=False),
    sa.ForeignKeyConstraint(['org_id'], ['orgs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('event_row_id')
    )
    op.create_index('ix_unattributed_events_org_recommendation', 'unattributed_events',
                    ['org_id', 'recommendation_id'], unique=False)

    op.execute("LOCK TABLE events, users, served_recommendations, items IN SHARE ROW EXCLUSIVE MODE")
    for sql in _ADDERS + _TRIGGER_FUNCTIONS:
        op.execute(sql)
    for table, function, operations in _COUNTED:
        for operation in operations:
            op.execute(
                f"CREATE TRIGGER {table}_counted_{operation.lower()} AFTER {operation} ON {table} "
                f"REFERENCING {_TRANSITIONS[operation]} FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
            )
    for sql in _BACKFILL:
        op.execute(sql)


def downgrade() -> None:
    for table, function, operations in _COUNTED:
        for operation in operations:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_counted_{operation.lower()} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.execute("DROP FUNCTION IF EXISTS org_counts_add(uuid, bigint, bigint, bigint, bigint, bigint)")
    op.execute("DROP FUNCTION IF EXISTS hourly_event_counts_add(uuid, timestamptz, bigint)")
    op.execute("DROP FUNCTION IF EXISTS hourly_recommendation_counts_add(uuid, timestamptz, text, bigint, bigint, "
               "bigint, bigint, numeric)")
    op.drop_index('ix_unattributed_events_org_recommendation', table_name='unattributed_events')
    op.drop_table('unattributed_events')
    for table, index in (('hourly_recommendation_counts', 'ix_hourly_recommendation_counts_org_hour'),
                         ('hourly_event_counts', 'ix_hourly_event_counts_org_hour'),
                         ('org_counts', 'ix_org_counts_org')):
        op.drop_index(index, table_name=table)
        op.drop_table(table)
