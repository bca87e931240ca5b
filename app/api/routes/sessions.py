"""POST /auth/logout: end a dashboard session (cookie or bearer); the token is refused afterwards.

Not under the per-IP limit of /auth/register and /auth/login: it needs a valid session already
(nothing to guess here), and a refused sign-out would leave a session open on a shared computer.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from app.api import sessions
from app.api.deps import CurrentAccount, State
from app.api.envelope import ok
from app.api.openapi import error_responses
from app.schemas.accounts import SignedOut
from app.schemas.envelope import Envelope

router = APIRouter(prefix="/auth", tags=["accounts"])


@router.post(
    "/logout",
    operation_id="logout",
    response_model=Envelope[SignedOut],
    responses=error_responses(401, 403, 429, 503),
    summary="Sign out: the session token is refused from now on and the session cookies are cleared",
)
async def logout(account: CurrentAccount, state: State, request: Request) -> Any:
    await sessions.sign_out(state.redis, account.token, expires_at=account.expires_at)
    response = ok({"signed_out": True}, message="signed out")
    sessions.clear_cookies(response, request)
    return response
