"""POST /auth/register and POST /auth/login (dashboard accounts; per-IP rate limit)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request

from app import security
from app.api import sessions
from app.api.deps import AuthIpLimit, JsonBody, Session, SettingsDep
from app.api.envelope import ok
from app.api.openapi import error_responses, json_body_schema
from app.errors import Conflict, Unauthorized
from app.schemas.accounts import LoginIn, Registered, RegisterIn
from app.schemas.accounts import Session as SessionOut
from app.schemas.envelope import Envelope
from app.schemas.validation import validate_object
from app.storage import accounts, orgs

router = APIRouter(prefix="/auth", tags=["accounts"], dependencies=[AuthIpLimit])


@router.post(
    "/register",
    status_code=201,
    response_model=Envelope[Registered],
    responses=error_responses(400, 409, 429, 503),
    summary="Create an account, its organisation and its first key pair (secret shown once)",
    openapi_extra=json_body_schema(RegisterIn, allow_array=False),
)
async def register(body: JsonBody, session: Session) -> Any:
    request = validate_object(RegisterIn, body)
    # scrypt is CPU-bound (~50 ms): off the event loop.
    password_hash = await asyncio.to_thread(security.hash_password, request.password)
    async with session.begin():
        if await accounts.email_taken(session, request.email):
            raise Conflict("An account with this email already exists")
        slug = await orgs.unique_slug(session, request.org_name)
        org = await orgs.create_org(session, name=request.org_name, slug=slug, domain=request.domain)
        account = await accounts.create_account(
            session, email=request.email, password_hash=password_hash, org_id=org.id
        )
        pair = await orgs.add_key_pair(session, org.id)
    data = {
        "account_id": str(account.id),
        "org_id": str(org.id),
        "tenant_id": org.slug,
        "domain": org.domain,
        "key_id": str(pair.pair_id),
        "publishable_key": pair.publishable_key,
        "secret_key": pair.secret_key,
    }
    return ok(data, message="account created; the secret key is shown only now", status_code=201)


@router.post(
    "/login",
    response_model=Envelope[SessionOut],
    responses=error_responses(400, 401, 429, 503),
    summary="Exchange email and password for a short-lived session token",
    openapi_extra=json_body_schema(LoginIn, allow_array=False),
)
async def login(body: JsonBody, session: Session, settings: SettingsDep, http: Request) -> Any:
    request = validate_object(LoginIn, body)
    account = await accounts.find_by_email(session, request.email)
    # Unknown email: verify against a dummy hash anyway, so both failures take the same time
    # and say the same thing.
    stored = account.password_hash if account is not None else security.dummy_password_hash()
    valid = await asyncio.to_thread(security.verify_password, request.password, stored)
    if account is None or not valid:
        raise Unauthorized("Invalid email or password")
    token = security.issue_session_token(
        account_id=account.id,
        org_id=account.org_id,
        secret=settings.resolved_jwt_secret(),
        ttl_s=settings.jwt_ttl_s,
    )
    if request.session == "cookie":  # the dashboard: the token goes where no script can read it
        csrf = sessions.csrf_token(token, secret=settings.resolved_jwt_secret())
        data = {"token": None, "token_type": "cookie", "expires_in": settings.jwt_ttl_s, "csrf_token": csrf}
        response = ok(data, message="logged in")
        sessions.set_cookies(response, http, token, csrf=csrf, ttl_s=settings.jwt_ttl_s)
        return response
    return ok({"token": token, "token_type": "bearer", "expires_in": settings.jwt_ttl_s}, message="logged in")
