"""Validate wire payloads with pydantic and turn its errors into our field-error list."""

from __future__ import annotations

from functools import cache
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from app.errors import FieldErrors, ValidationFailed, field_error

M = TypeVar("M", bound=BaseModel)


def no_nul(value: str) -> str:
    """Postgres text cannot hold NUL: refuse it at the door (400), not in a worker or a 500."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


@cache
def _list_adapter(model: type[BaseModel]) -> TypeAdapter[list[Any]]:
    return TypeAdapter(list[model])  # type: ignore[valid-type]


def validate_batch(model: type[M], records: list[Any], *, name: str, single: bool) -> list[M]:
    """Validate every record; on failure raise with *every* bad record named by index."""
    try:
        return _list_adapter(model).validate_python(records)
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc, prefix=None if single else name, indexed=True)) from None


def validate_object(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(field_errors(exc, prefix=None, indexed=False)) from None


def field_errors(exc: ValidationError, *, prefix: str | None, indexed: bool) -> FieldErrors:
    """pydantic locations as `items[3].attributes.price`; `prefix=None` drops the batch index."""
    errors: FieldErrors = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = list(err["loc"])
        head = ""
        if indexed:
            index = loc.pop(0)
            head = f"{prefix}[{index}]" if prefix else ""
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)
        field = (head + path).lstrip(".") or "(record)"
        message = err["msg"]
        message = message.removeprefix("Value error, ")
        errors.append(field_error(field, message))
    return errors
