"""The envelope as pydantic models: used for the OpenAPI document (responses are built by api/envelope.py)."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, Field

T = TypeVar("T")


class FieldError(BaseModel):
    field: str = Field(examples=["items[3].status"])
    issue: str = Field(examples=["Input should be 'active', 'inactive' or 'deleted'"])


class Envelope(BaseModel, Generic[T]):
    success: bool = True
    message: str = Field(examples=["Success"])
    data: T | None = None
    error: str | list[FieldError] | None = None


class ErrorEnvelope(BaseModel):
    success: bool = Field(default=False, examples=[False])
    message: str = Field(examples=["Validation failed: 1 problem(s)"])
    data: None = None
    error: str | list[FieldError] = Field(
        examples=[[{"field": "items[3].status", "issue": "Input should be 'active', 'inactive' or 'deleted'"}]]
    )


class Accepted(BaseModel):
    accepted: int = Field(examples=[1])


class JobQueued(BaseModel):
    job_id: str = Field(examples=["train:6f1c..."])
