"""DELETE /v1/users/{user_id}: GDPR erasure (secret key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from starlette.convertors import Convertor, register_url_convertor

from app.api.deps import QueueDep, SecretOrg
from app.api.envelope import ok
from app.api.openapi import error_responses
from app.errors import BadRequest
from app.schemas.envelope import Envelope

router = APIRouter(prefix="/v1/users", tags=["operator"])


class _AnyText(Convertor[str]):
    """Starlette's `path` convertor with newlines too: every id the events endpoint accepts
    (any character but NUL, `/` included) must be erasable. Never empty (no id is), so
    `/v1/items/` is the list with a trailing slash, not the item "" (api/middleware.TrailingSlash)."""

    regex = "(?s:.+)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("any_text", _AnyText())


class ErasureQueued(BaseModel):
    user_id: str = Field(examples=["user_42"])
    job_id: str


@router.delete(
    "/{user_id:any_text}",
    status_code=202,
    response_model=Envelope[ErasureQueued],
    responses=error_responses(400, 401, 403, 429, 503),
    summary="Erase a user, their events, aliases and real-time state",
)
async def erase_user(
    org: SecretOrg, queue: QueueDep, user_id: str = Path(min_length=1, max_length=256)
) -> Any:
    if "\x00" in user_id:
        raise BadRequest("user_id must not contain NUL characters")
    job_id = await queue.enqueue_erasure(str(org.org_id), user_id)
    return ok({"user_id": user_id, "job_id": job_id}, message="erasure accepted", status_code=202)
