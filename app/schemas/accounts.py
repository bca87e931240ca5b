"""Wire shapes of /auth/* and /v1/keys (API.md section 7)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from app.schemas.validation import no_nul

# No whitespace and no NUL (Postgres text cannot hold it: it would be a 500, not a 400).
_EMAIL = re.compile(r"^[^@\s\x00]{1,64}@[^@\s\x00]+\.[^@\s\x00]{2,}$")


def _email(value: str) -> str:
    value = value.strip().lower()
    if len(value) > 320 or not _EMAIL.match(value):
        raise ValueError("must be an email address")
    return value


Email = Annotated[str, AfterValidator(_email)]
# Long passphrases welcome; the upper bound only stops a KDF denial of service.
Password = Annotated[str, Field(min_length=10, max_length=1024)]


class RegisterIn(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"email": "ops@glow.example", "password": "correct horse battery",
                                         "org_name": "Glow Beauty", "domain": "commerce"}]},
    )
    email: Email
    password: Password
    org_name: Annotated[str, Field(min_length=1, max_length=200), AfterValidator(no_nul)]
    domain: Annotated[str, Field(min_length=1, max_length=64), AfterValidator(no_nul)] = "commerce"


class LoginIn(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={"examples": [{"email": "ops@glow.example", "password": "correct horse battery"}]},
    )
    email: Email
    password: str = Field(min_length=1, max_length=1024)
    session: Literal["bearer", "cookie"] = Field(
        default="bearer",
        description="bearer: the token is in the response body. cookie (the dashboard): the token is set "
        "as an HttpOnly cookie and only a CSRF token is returned (docs/dashboard.md)",
    )


class KeyPairCreated(BaseModel):
    key_id: str
    publishable_key: str = Field(examples=["lehnz_pk_..."])
    secret_key: str = Field(examples=["lehnz_sk_..."], description="shown only in this response")


class Registered(KeyPairCreated):
    account_id: str
    org_id: str
    tenant_id: str = Field(examples=["glow-beauty"])
    domain: str


class Session(BaseModel):
    token: str | None = Field(
        description="the session token; null for a cookie session (it is in the cookie)"
    )
    token_type: str = Field(default="bearer", examples=["bearer", "cookie"])
    expires_in: int = Field(examples=[3600])
    csrf_token: str | None = Field(
        default=None, description="cookie sessions: send it as X-CSRF-Token on every state-changing request"
    )


class SignedOut(BaseModel):
    signed_out: bool = True


class KeyPairListed(BaseModel):
    key_id: str
    publishable_key_prefix: str = Field(examples=["lehnz_pk_Abc123"],
                                        description="keys are stored only as hashes; this prefix identifies it")
    created_at: str
    revoked_at: str | None
    last_used_at: str | None = Field(
        default=None,
        description="last request with either key of the pair (to about a minute); null if never",
    )


class KeyRevoked(BaseModel):
    key_id: str
    revoked: bool = True
