"""OpenAPI helpers: the envelope on every error status, and request bodies we parse ourselves.

Ingest bodies are read with orjson and validated in one batch (for speed and for our own
400 shape), so FastAPI does not see their models; they are declared here instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.schemas.envelope import ErrorEnvelope

_EXTRA_MODELS: dict[str, type[BaseModel]] = {}

_DESCRIPTIONS = {
    400: "Malformed JSON, wrong Content-Type, schema violation (every bad record listed by index)",
    401: "Missing, invalid or revoked X-API-KEY",
    403: "Wrong key type for this endpoint",
    404: "Unknown path or id",
    409: "Conflict",
    413: "Body over the size limit or batch over the record limit",
    422: "The strategy's required input is missing",
    429: "Rate limited; see RateLimit-Reset and Retry-After",
    503: "Queue or database unreachable: nothing was accepted, retry with backoff",
}


# For routes that read X-API-KEY themselves (deps.PublishableJson) instead of through `_api_key`.
PUBLISHABLE_KEY: dict[str, Any] = {"security": [{"APIKeyHeader": []}]}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    responses: dict[int | str, dict[str, Any]] = {
        code: {"model": ErrorEnvelope, "description": _DESCRIPTIONS[code]} for code in codes
    }
    responses[500] = {"model": ErrorEnvelope, "description": "Unexpected error; the body leaks nothing"}
    return responses


def json_body_schema(model: type[BaseModel], *, allow_array: bool = True, required: bool = True) -> dict[str, Any]:
    """requestBody: one object, or (ingest) an array of up to LEHNZ_MAX_BATCH of them."""
    _EXTRA_MODELS[model.__name__] = model
    ref = {"$ref": f"#/components/schemas/{model.__name__}"}
    extra = model.model_config.get("json_schema_extra")  # our schemas set a dict (or nothing)
    examples = extra.get("examples", [None]) if isinstance(extra, dict) else [None]
    example = examples[0] if isinstance(examples, list) else None
    schema = {"anyOf": [ref, {"type": "array", "items": ref}]} if allow_array else ref
    content: dict[str, Any] = {"schema": schema}
    if example is not None:
        content["example"] = example
    return {"requestBody": {"required": required, "content": {"application/json": content}}}


def install(app: FastAPI) -> None:
    def custom_openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, model in _EXTRA_MODELS.items():
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for def_name, definition in model_schema.pop("$defs", {}).items():
                components.setdefault(def_name, definition)
            components[name] = model_schema
        # FastAPI documents 422 on every route with parameters; we never send it (400 instead),
        # except on /v1/recommend where 422 has its own meaning and is declared explicitly.
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                responses = operation.get("responses", {})
                if "422" in responses and "HTTPValidationError" in str(responses["422"]):
                    del responses["422"]
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        app.openapi_schema = schema
        return schema

    app.openapi = custom_openapi  # type: ignore[method-assign]
