"""Dashboard sessions in a browser: an HttpOnly cookie next to the bearer token, CSRF, sign-out.

The session token is the one `POST /auth/login` has always issued (a short-lived signed JWT).
A script-free client sends it as `Authorization: Bearer <token>`; the dashboard asks for it as
a cookie instead (`"session": "cookie"` in the login body), so no script on the page can read it:

- `lehnz_session`: the token; HttpOnly, SameSite=Strict, Path=/, Secure when the request came
  over https (directly, or through a LEHNZ_TRUSTED_PROXIES proxy sending X-Forwarded-Proto: https),
  Max-Age = LEHNZ_JWT_TTL_S (the token expires at the same moment anyway).
- `lehnz_csrf`: a CSRF token derived from the session token with the server's secret (so it
  cannot be forged, and it dies with the session); readable by the page's script.

A request authenticated by the cookie that can change state (any method but GET, HEAD and
OPTIONS) must send that CSRF token back in `X-CSRF-Token`, else 403: a page on another site can
make the browser send the cookie (SameSite=Strict already stops that in current browsers) but
cannot read the token. Bearer requests need no CSRF token: a browser never adds that header
on its own.

Sign-out (`POST /auth/logout`) puts a digest of the token on a deny-list in Redis until the
token would have expired, so the token is refused afterwards wherever it was copied to, and
clears both cookies. If Redis cannot be asked, session requests answer 503 (fail closed).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import time
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request
from starlette.responses import Response

from app import redis_keys
from app.errors import Forbidden

SESSION_COOKIE = "lehnz_session"
CSRF_COOKIE = "lehnz_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(session_token: str, *, secret: str) -> str:
    mac = hmac.new(secret.encode(), b"csrf\x00" + session_token.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def token_digest(session_token: str) -> str:
    return hashlib.sha256(session_token.encode()).hexdigest()


def check_csrf(request: Request, session_token: str, *, secret: str) -> None:
    """For cookie-authenticated requests: 403 unless a state-changing one carries the CSRF token."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent or not hmac.compare_digest(sent.encode(), csrf_token(session_token, secret=secret).encode()):
        raise Forbidden(
            f"This request is authenticated by the session cookie and needs the {CSRF_HEADER} header "
            f"(the value of the {CSRF_COOKIE} cookie)",
            error="csrf_token_missing_or_invalid",
        )


async def is_signed_out(redis: Redis, session_token: str) -> bool:
    return bool(await redis.exists(redis_keys.revoked_session(token_digest(session_token))))


async def sign_out(redis: Redis, session_token: str, *, expires_at: float) -> None:
    """Refuse this token from now until it would have expired anyway."""
    ttl_s = max(1, int(expires_at - time.time()) + 1)
    await redis.set(redis_keys.revoked_session(token_digest(session_token)), b"1", ex=ttl_s)


def _https(request: Request) -> bool:
    """Over https, or behind a trusted proxy (LEHNZ_TRUSTED_PROXIES) that says it terminated TLS."""
    if request.url.scheme == "https":
        return True
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if forwarded != "https" or request.client is None:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    trusted = request.app.state.lehnz.settings.trusted_proxies
    return any(peer in ipaddress.ip_network(proxy, strict=False) for proxy in trusted)


def set_cookies(response: Response, request: Request, session_token: str, *, csrf: str, ttl_s: int) -> None:
    secure = _https(request)
    common: dict[str, Any] = {"max_age": ttl_s, "path": "/", "samesite": "strict", "secure": secure}
    response.set_cookie(SESSION_COOKIE, session_token, httponly=True, **common)
    response.set_cookie(CSRF_COOKIE, csrf, httponly=False, **common)


def clear_cookies(response: Response, request: Request) -> None:
    secure = _https(request)
    for name, httponly in ((SESSION_COOKIE, True), (CSRF_COOKIE, False)):
        response.delete_cookie(name, path="/", samesite="strict", secure=secure, httponly=httponly)
