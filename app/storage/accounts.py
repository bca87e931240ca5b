"""Dashboard accounts (API.md section 7)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict
from app.storage.orgs import KeyOwner
from app.storage.tables import Account, Org


async def create_account(session: AsyncSession, *, email: str, password_hash: str, org_id: uuid.UUID) -> Account:
    account = Account(email=email, password_hash=password_hash, org_id=org_id)
    session.add(account)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("An account with this email already exists") from None
    return account


async def find_by_email(session: AsyncSession, email: str) -> Account | None:
    return await session.scalar(select(Account).where(Account.email == email))


async def email_taken(session: AsyncSession, email: str) -> bool:
    return await session.scalar(select(Account.id).where(Account.email == email)) is not None


async def find_session_owner(session: AsyncSession, account_id: uuid.UUID, org_id: uuid.UUID) -> KeyOwner | None:
    """The org a session token may act for: its account must still exist and own that org."""
    row = (
        await session.execute(
            select(Org.id, Org.slug, Org.domain, Org.rate_limit)
            .join(Account, Account.org_id == Org.id)
            .where(Account.id == account_id, Org.id == org_id)
        )
    ).first()
    if row is None:
        return None
    return KeyOwner(row.id, row.slug, row.domain, row.rate_limit, "session", account_id, "")
