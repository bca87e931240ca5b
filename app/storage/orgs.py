"""Organisations (tenants) and their key pairs."""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app import security
from app.errors import Conflict, NotFound
from app.storage.tables import ApiKey, Org

_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$")


@dataclass(frozen=True)
class KeyOwner:
    """What an API key resolves to; cached by the api."""

    org_id: uuid.UUID
    org_slug: str
    org_domain: str
    rate_limit: str | None
    key_type: str
    pair_id: uuid.UUID
    key_hash: str


@dataclass(frozen=True)
class KeyPairInfo:
    key_id: uuid.UUID
    publishable_prefix: str
    secret_prefix: str
    created_at: datetime
    revoked_at: datetime | None


def slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64].strip("-")
    return slug or "org"


def valid_slug(slug: str) -> bool:
    return bool(_SLUG_RE.match(slug))


async def create_org(session: AsyncSession, *, name: str, slug: str, domain: str) -> Org:
    org = Org(name=name, slug=slug, domain=domain)
    session.add(org)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"An organisation with slug '{slug}' already exists") from None
    return org


async def unique_slug(session: AsyncSession, name: str) -> str:
    base = slugify(name)
    taken = set(
        (await session.scalars(select(Org.slug).where(Org.slug.like(f"{base}%")))).all()
    )
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}"[:64] in taken:
        n += 1
    return f"{base}-{n}"[:64]


async def get_org_by_slug(session: AsyncSession, slug: str) -> Org:
    org = await session.scalar(select(Org).where(Org.slug == slug))
    if org is None:
        raise NotFound(f"No organisation with slug '{slug}'")
    return org


async def get_org(session: AsyncSession, org_id: uuid.UUID) -> Org:
    org = await session.get(Org, org_id)
    if org is None:
        raise NotFound("No such organisation")
    return org


async def exists(session: AsyncSession, org_id: uuid.UUID) -> bool:
    return await session.get(Org, org_id) is not None


async def lookup_org(session: AsyncSession, ref: str) -> Org | None:
    """By org id or by slug (tenant id), as the CLI's --org takes it. (A slug may look like a
    UUID: an id that matches no org is tried as a slug.)"""
    org = None
    with contextlib.suppress(ValueError):
        org = await session.get(Org, uuid.UUID(ref))
    if org is None:
        org = await session.scalar(select(Org).where(Org.slug == ref))
    return org


async def find_org(session: AsyncSession, ref: str) -> Org:
    """lookup_org, or NotFound saying where the orgs are listed."""
    org = await lookup_org(session, ref)
    if org is None:
        raise NotFound(f"no organisation {ref!r} (`lehnz org list` shows them)")
    return org


async def list_orgs(session: AsyncSession) -> list[Org]:
    return list((await session.scalars(select(Org).order_by(Org.created_at, Org.slug))).all())


async def revoke_all_keys(session: AsyncSession, org_id: uuid.UUID) -> None:
    await session.execute(
        update(ApiKey).where(ApiKey.org_id == org_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now().astimezone())
    )


async def delete_org(session: AsyncSession, org_id: uuid.UUID) -> None:
    """The org and, by ON DELETE CASCADE, everything it owns: keys, accounts, items, users,
    events, aliases, training runs, the served log."""
    await session.execute(delete(Org).where(Org.id == org_id))


async def list_org_ids(session: AsyncSession) -> list[uuid.UUID]:
    return list((await session.scalars(select(Org.id))).all())


async def set_rate_limit(session: AsyncSession, org_id: uuid.UUID, rate_limit: str | None) -> None:
    await session.execute(update(Org).where(Org.id == org_id).values(rate_limit=rate_limit))


async def add_key_pair(session: AsyncSession, org_id: uuid.UUID) -> security.NewKeyPair:
    """Store only hashes; the caller shows the returned secret once and forgets it."""
    pair = security.new_key_pair()
    for key_type, key in (("publishable", pair.publishable_key), ("secret", pair.secret_key)):
        session.add(
            ApiKey(
                pair_id=pair.pair_id,
                org_id=org_id,
                key_type=key_type,
                key_hash=security.hash_key(key),
                prefix=security.display_prefix(key),
            )
        )
    await session.flush()
    return pair


async def find_key_owner(session: AsyncSession, key_hash: str) -> KeyOwner | None:
    """The live (not revoked) key with this hash, with its org; None if unknown or revoked."""
    row = (
        await session.execute(
            select(ApiKey.key_type, ApiKey.pair_id, ApiKey.key_hash, Org.id, Org.slug, Org.domain, Org.rate_limit)
            .join(Org, Org.id == ApiKey.org_id)
            .where(ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    key_type, pair_id, stored_hash, org_id, slug, domain, rate_limit = row
    return KeyOwner(
        org_id=org_id,
        org_slug=slug,
        org_domain=domain,
        rate_limit=rate_limit,
        key_type=key_type,
        pair_id=pair_id,
        key_hash=stored_hash,
    )


async def list_key_pairs(session: AsyncSession, org_id: uuid.UUID) -> list[KeyPairInfo]:
    rows = (
        await session.execute(
            select(ApiKey.pair_id, ApiKey.key_type, ApiKey.prefix, ApiKey.created_at, ApiKey.revoked_at)
            .where(ApiKey.org_id == org_id)
            .order_by(ApiKey.created_at, ApiKey.pair_id)
        )
    ).all()
    pairs: dict[uuid.UUID, dict[str, object]] = {}
    for pair_id, key_type, prefix, created_at, revoked_at in rows:
        entry = pairs.setdefault(pair_id, {"created_at": created_at, "revoked_at": revoked_at})
        entry[f"{key_type}_prefix"] = prefix
    return [
        KeyPairInfo(
            key_id=pair_id,
            publishable_prefix=str(entry.get("publishable_prefix", "")),
            secret_prefix=str(entry.get("secret_prefix", "")),
            created_at=entry["created_at"],  # type: ignore[arg-type]
            revoked_at=entry["revoked_at"],  # type: ignore[arg-type]
        )
        for pair_id, entry in pairs.items()
    ]


async def revoke_key_pair(session: AsyncSession, org_id: uuid.UUID, pair_id: uuid.UUID) -> bool:
    """Revoke both keys of a pair; False if the org has no such live pair."""
    result = await session.execute(
        update(ApiKey)
        .where(ApiKey.org_id == org_id, ApiKey.pair_id == pair_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now().astimezone())
    )
    return (result.rowcount or 0) > 0  # type: ignore[attr-defined]
