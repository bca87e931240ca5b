"""Keys, passwords and session tokens. Pure functions: no I/O, nothing here is ever logged."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass

import jwt

PUBLISHABLE_PREFIX = "lehnz_pk_"
SECRET_PREFIX = "lehnz_sk_"
KEY_PREFIXES = {"publishable": PUBLISHABLE_PREFIX, "secret": SECRET_PREFIX}
_KEY_RANDOM_BYTES = 32  # -> 43 URL-safe characters after the prefix
_DISPLAY_CHARS = 6

# scrypt: memory-hard (N * r * 128 bytes = 16 MiB per hash), about 50 ms here.
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_SCRYPT_MAXMEM = 64 * 1024 * 1024


@dataclass(frozen=True)
class NewKeyPair:
    pair_id: uuid.UUID
    publishable_key: str
    secret_key: str


def new_key(key_type: str) -> str:
    return KEY_PREFIXES[key_type] + secrets.token_urlsafe(_KEY_RANDOM_BYTES)


def new_key_pair() -> NewKeyPair:
    return NewKeyPair(uuid.uuid4(), new_key("publishable"), new_key("secret"))


def key_type_of(key: str) -> str | None:
    for key_type, prefix in KEY_PREFIXES.items():
        if key.startswith(prefix):
            return key_type
    return None


def hash_key(key: str) -> str:
    """Keys are random with 256 bits of entropy, so a plain sha256 is a safe lookup hash."""
    return hashlib.sha256(key.encode()).hexdigest()


def keys_match(key: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_key(key), stored_hash)


def display_prefix(key: str) -> str:
    """What may be shown again later: the type prefix and a few characters, never the key."""
    key_type = key_type_of(key) or "secret"
    return key[: len(KEY_PREFIXES[key_type]) + _DISPLAY_CHARS]


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt), _b64(digest)]
    )


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        candidate = _scrypt(password, _unb64(salt), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate, _unb64(digest))


@functools.cache
def dummy_password_hash() -> str:
    """Verified against when the email is unknown, so both failures cost the same time."""
    return hash_password(secrets.token_urlsafe(16))


def issue_session_token(*, account_id: uuid.UUID, org_id: uuid.UUID, secret: str, ttl_s: int) -> str:
    now = int(time.time())
    claims = {"sub": str(account_id), "org": str(org_id), "iat": now, "exp": now + ttl_s, "typ": "session",
              # unique per sign-in, so signing out one session never signs out another one issued that second
              "jti": secrets.token_urlsafe(12)}
    return jwt.encode(claims, secret, algorithm="HS256")


def read_session_token(token: str, *, secret: str) -> dict[str, str] | None:
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp", "sub", "org"]})
    except jwt.PyJWTError:
        return None
    if claims.get("typ") != "session":
        return None
    return claims


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
