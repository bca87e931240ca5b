"""Identity aliases: anonymous id -> the final user id. Chains are kept flat (one hop)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import delete, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.base import driver_connection
from app.storage.tables import IdentityAlias

# An import can stitch a million links in one statement.
_TIMEOUT_S = 6 * 3600

# Chains are flat (one hop), so these rows are all that resolving and re-pointing the given
# ids can touch: each id's own alias, and the aliases that point at it.
_ALIASES_TOUCHING = """
SELECT alias_id, canonical_id FROM identity_aliases
WHERE org_id = $1 AND (alias_id = ANY($2::text[]) OR canonical_id = ANY($2::text[]))
"""

_WRITE_ALIASES = """
INSERT INTO identity_aliases AS t (org_id, alias_id, canonical_id)
SELECT $1, u.alias_id, u.canonical_id FROM unnest($2::text[], $3::text[]) AS u(alias_id, canonical_id)
ON CONFLICT (org_id, alias_id) DO UPDATE SET canonical_id = EXCLUDED.canonical_id
"""



async def resolve(session: AsyncSession, org_id: uuid.UUID, user_id: str) -> str:
    canonical = await session.scalar(
        select(IdentityAlias.canonical_id).where(IdentityAlias.org_id == org_id, IdentityAlias.alias_id == user_id)
    )
    return canonical or user_id


async def stitch_all(
    session: AsyncSession, org_id: uuid.UUID, links: Sequence[tuple[str, str]]
) -> dict[str, str]:
    """Apply identify links (previous_user_id, user_id) in order, with one read and one write;
    returns every alias whose canonical id was set or changed (alias -> canonical).

    Same rules: the first identify of an anonymous id wins, a link that would close a cycle is
    ignored, and chains are flattened so every alias resolves to the final id in one hop.
    """
    if not links:
        return {}
    conn = await driver_connection(session)
    # Serialise the stitches of one org (worker jobs, lehnz import): two transactions must not
    # both extend one chain from the same snapshot.
    await session.execute(
        text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": str(org_id)}
    )
    ids = sorted({previous_id for previous_id, _ in links} | {user_id for _, user_id in links})
    canonical_of: dict[str, str] = {}
    members: dict[str, set[str]] = {}
    for alias_id, canonical_id in await conn.fetch(_ALIASES_TOUCHING, org_id, ids, timeout=_TIMEOUT_S):
        canonical_of[alias_id] = canonical_id
        members.setdefault(canonical_id, set()).add(alias_id)

    changed: dict[str, str] = {}
    for previous_id, user_id in links:
        canonical = canonical_of.get(user_id, user_id)
        if canonical == previous_id or previous_id in canonical_of:
            continue  # a cycle, or previous_id already belongs to someone (first identify wins)
        moved = members.pop(previous_id, set())
        moved.add(previous_id)
        for alias_id in moved:
            canonical_of[alias_id] = canonical
            changed[alias_id] = canonical
        members.setdefault(canonical, set()).update(moved)

    if changed:
        await conn.execute(
            _WRITE_ALIASES, org_id, list(changed), list(changed.values()), timeout=_TIMEOUT_S
        )
    return changed


async def aliases_of(session: AsyncSession, org_id: uuid.UUID, canonical_id: str) -> list[str]:
    return list(
        (
            await session.scalars(
                select(IdentityAlias.alias_id).where(
                    IdentityAlias.org_id == org_id, IdentityAlias.canonical_id == canonical_id
                )
            )
        ).all()
    )


async def delete_aliases(session: AsyncSession, org_id: uuid.UUID, canonical_id: str) -> None:
    await session.execute(
        delete(IdentityAlias).where(
            IdentityAlias.org_id == org_id,
            (IdentityAlias.canonical_id == canonical_id) | (IdentityAlias.alias_id == canonical_id),
        )
    )


async def all_aliases(session: AsyncSession, org_id: uuid.UUID) -> dict[str, str]:
    rows = (
        await session.execute(
            select(IdentityAlias.alias_id, IdentityAlias.canonical_id).where(IdentityAlias.org_id == org_id)
        )
    ).all()
    return dict(rows)
