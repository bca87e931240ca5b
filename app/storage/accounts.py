"""Dashboard accounts (API.md section 7)."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict
from app.storage.tables import Account


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
