"""The only place the {success, message, data, error} body is built (API.md section 2)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=_OPTIONS)


def ok(
    data: Any,
    *,
    message: str = "Success",
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    body = {"success": True, "message": message, "data": data, "error": None}
    return JsonResponse(body, status_code=status_code, headers=headers)


def failure(
    status_code: int,
    message: str,
    error: Any = None,
    *,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    body = {"success": False, "message": message, "data": None, "error": error if error is not None else message}
    return JsonResponse(body, status_code=status_code, headers=headers)
