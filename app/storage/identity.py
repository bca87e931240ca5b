"""Identity aliases: anonymous id -> the final user id. Chains are kept flat (one hop)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.storage.tables import IdentityAlias


@dataclass(frozen=True)
class Stitch:
    """The outcome of one identify: these alias ids now resolve to canonical_id."""

    canonical_id: str
    alias_ids: list[str]


async def resolve(session: AsyncSession, org_id: uuid.UUID, user_id: str) -> str:
    canonical = await session.scalar(
        select(IdentityAlias.canonical_id).where(IdentityAlias.org_id == org_id, IdentityAlias.alias_id == user_id)
    )
    return canonical or user_id


async def stitch(session: AsyncSession, org_id: uuid.UUID, *, previous_id: str, user_id: str) -> Stitch | None:
    """Alias previous_id (and everything that pointed to it) to user_id's final id.

    Returns None when nothing changes: previous_id already belongs to someone (the first
    identify wins, so a shared device cannot move one shopper's history to another), or the
    link would close a cycle (a -> b then b -> a).
    """
    # Serialise stitches of one org: two identifies racing on one chain must not both win.
    await session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"), {"key": str(org_id)})
    canonical = await resolve(session, org_id, user_id)
    if canonical == previous_id:
        return None
    existing = await session.scalar(
        select(IdentityAlias.canonical_id).where(
            IdentityAlias.org_id == org_id, IdentityAlias.alias_id == previous_id
        )
    )
    if existing is not None:
        return None
    session.add(IdentityAlias(org_id=org_id, alias_id=previous_id, canonical_id=canonical))
    # Flatten: whatever resolved to previous_id now resolves to the final id in one hop.
    await session.execute(
        update(IdentityAlias)
        .where(IdentityAlias.org_id == org_id, IdentityAlias.canonical_id == previous_id)
        .values(canonical_id=canonical)
    )
    await session.flush()
    aliases = (
        await session.scalars(
            select(IdentityAlias.alias_id).where(
                IdentityAlias.org_id == org_id, IdentityAlias.canonical_id == canonical
            )
        )
    ).all()
    return Stitch(canonical_id=canonical, alias_ids=list(aliases))


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
