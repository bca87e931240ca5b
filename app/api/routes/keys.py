"""GET/POST/DELETE /v1/keys with a dashboard session (Authorization: Bearer)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Path

from app.api import key_usage
from app.api.deps import CurrentAccount, Session, State
from app.api.envelope import ok
from app.api.openapi import error_responses
from app.errors import BadRequest, NotFound
from app.key_epoch import announce_key_change
from app.schemas.accounts import KeyPairCreated, KeyPairListed, KeyRevoked
from app.schemas.envelope import Envelope
from app.storage import orgs

router = APIRouter(prefix="/v1/keys", tags=["accounts"])


@router.get(
    "",
    response_model=Envelope[list[KeyPairListed]],
    responses=error_responses(401, 429, 503),
    summary="List key pairs: key ids and publishable key prefixes (keys are stored only as hashes)",
)
async def list_keys(account: CurrentAccount, session: Session, state: State) -> Any:
    pairs = await orgs.list_key_pairs(session, account.org_id)
    used = await key_usage.last_used(state.redis, account.org_id)
    return ok(
        [
            {
                "key_id": str(p.key_id),
                "publishable_key_prefix": p.publishable_prefix,
                "created_at": p.created_at.isoformat(),
                "revoked_at": p.revoked_at.isoformat() if p.revoked_at else None,
                "last_used_at": _unix_iso(used[str(p.key_id)]) if str(p.key_id) in used else None,
            }
            for p in pairs
        ]
    )


@router.post(
    "",
    status_code=201,
    response_model=Envelope[KeyPairCreated],
    responses=error_responses(401, 429, 503),
    summary="Create a key pair (the secret is shown only in this response)",
)
async def create_key(account: CurrentAccount, session: Session) -> Any:
    async with session.begin():
        pair = await orgs.add_key_pair(session, account.org_id)
    data = {"key_id": str(pair.pair_id), "publishable_key": pair.publishable_key, "secret_key": pair.secret_key}
    return ok(data, message="key pair created; the secret key is shown only now", status_code=201)


@router.delete(
    "/{key_id}",
    response_model=Envelope[KeyRevoked],
    responses=error_responses(400, 401, 404, 429, 503),
    summary="Revoke a key pair; every api replica refuses it within a second",
)
async def revoke_key(account: CurrentAccount, session: Session, state: State, key_id: str = Path()) -> Any:
    try:
        pair_id = uuid.UUID(key_id)
    except ValueError:
        raise BadRequest("key_id must be a UUID", error=[{"field": "key_id", "issue": "not a UUID"}]) from None
    async with session.begin():
        revoked = await orgs.revoke_key_pair(session, account.org_id, pair_id)
    if not revoked:
        raise NotFound("No live key pair with this id in your organisation")
    state.keys.clear()  # this replica refuses it at once; the others on their next sync tick
    await announce_key_change(state.redis)
    return ok({"key_id": key_id, "revoked": True}, message="key pair revoked")


def _unix_iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat()
