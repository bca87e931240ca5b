"""Validate wire payloads with pydantic and turn its errors into our field-error list."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)

from app.errors import FieldErrors, ValidationFailed, field_error

M = TypeVar("M", bound=BaseModel)


def no_nul(value: str) -> str:
    """Postgres text cannot hold NUL: refuse it at the door (400), not in a worker or a 500."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


MAX_ID_CHARS = 256
# The integers orjson reads as integers (beyond them it reads a float, which is refused).
_INT_RANGE = {"minimum": -(2**63), "maximum": 2**64 - 1}


def id_from_number(value: Any) -> Any:
    """Shop platforms number their products and customers, and their JSON carries those ids as
    numbers: an integer is the id written in decimal (`123` and `"123"` are the same item).
    A float (`123.0`, `1e3`) is refused rather than guessed at, and so is a boolean."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError("must be a string or an integer")  # pydantic reports a ValueError as a field error


# An item or user id on the wire: a string of 1-256 characters without NUL, or an integer.
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS),
    BeforeValidator(id_from_number),
    AfterValidator(no_nul),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
                {"type": "integer", **_INT_RANGE},
            ]
        },
        mode="validation",
    ),
]


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
