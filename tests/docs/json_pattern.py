"""Compare what a command printed with what the docs show it prints.

The docs show JSON as it comes (one line, as curl prints it) or pretty-printed, and shorten it with
`...`: a member `...` of an object stands for the members not shown, an element `...` of an array for
the elements after those shown, `{...}` for any object, `"..."` for any string and `"lehnz_pk_..."`
for a string starting so. Object key order does not matter. Values that differ on every run (ids,
keys, times, latencies, versions) are compared by type only: MASKED lists them by key.
"""

from __future__ import annotations

import json
import re
from typing import Any

ELLIPSIS = ...
MASKED = frozenset({
    "recommendation_id", "org_id", "account_id", "key_id", "job_id", "publishable_key", "secret_key",
    "version", "model_version", "searched_version", "trained_at", "duration_ms", "latency_ms",
    "search_seconds", "since", "until", "day",
})


class PatternError(ValueError):
    pass


def parse_pattern(text: str) -> list[Any]:
    """The JSON documents of a docs block, `...` included; PatternError when it is not JSON."""
    parser = _Parser(text)
    documents = []
    while parser.more():
        documents.append(parser.value())
    if not documents:
        raise PatternError("no JSON document")
    return documents


def split_documents(output: str) -> tuple[list[Any], str]:
    """The JSON documents a command printed one after another (curl prints no newline between two
    answers), and whatever text is left when the output is not all JSON."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    position = 0
    while True:
        while position < len(output) and output[position].isspace():
            position += 1
        if position >= len(output):
            return documents, ""
        try:
            document, position = decoder.raw_decode(output, position)
        except json.JSONDecodeError:
            return documents, output[position:]
        documents.append(document)


def mismatches(pattern: Any, actual: Any, *, path: str = "$", shape: bool = False) -> list[str]:
    """Where `actual` differs from the documented `pattern` (empty: it matches)."""
    if pattern is ELLIPSIS:
        return []
    key = path.rsplit(".", 1)[-1]
    if shape or key in MASKED:
        return [] if _kind(pattern) == _kind(actual) or _kind(pattern) == "any" else [
            f"{path}: documented a {_kind(pattern)}, got {actual!r}"]
    if isinstance(pattern, dict):
        return _object(pattern, actual, path, shape)
    if isinstance(pattern, list):
        return _array(pattern, actual, path, shape)
    if isinstance(pattern, str) and isinstance(actual, str) and pattern.endswith("...") and (
            actual.startswith(pattern[:-3])):
        return []  # "..." is any string; "lehnz_pk_..." any string starting so
    if type(pattern) is bool or type(actual) is bool:
        return [] if pattern is actual else [f"{path}: documented {pattern!r}, got {actual!r}"]
    return [] if pattern == actual else [f"{path}: documented {pattern!r}, got {actual!r}"]


def _kind(value: Any) -> str:
    if value is ELLIPSIS or value == "...":
        return "any"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "array", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def _object(pattern: dict[Any, Any], actual: Any, path: str, shape: bool) -> list[str]:
    if not isinstance(actual, dict):
        return [f"{path}: documented an object, got {actual!r}"]
    open_ended = ELLIPSIS in pattern
    found = []
    for key, value in pattern.items():
        if key is ELLIPSIS:
            continue
        if key not in actual:
            found.append(f"{path}.{key}: documented, missing from the answer")
            continue
        found += mismatches(value, actual[key], path=f"{path}.{key}", shape=shape)
    if not open_ended:
        extra = sorted(set(actual) - set(pattern))
        if extra:
            found.append(f"{path}: the answer also has {extra} (show them, or mark the rest with ...)")
    return found


def _array(pattern: list[Any], actual: Any, path: str, shape: bool) -> list[str]:
    if not isinstance(actual, list):
        return [f"{path}: documented an array, got {actual!r}"]
    shown = pattern[:pattern.index(ELLIPSIS)] if ELLIPSIS in pattern else pattern
    if ELLIPSIS not in pattern and len(actual) != len(shown):
        return [f"{path}: documented {len(shown)} element(s), got {len(actual)}: {actual!r}"]
    if len(actual) < len(shown):
        return [f"{path}: documented at least {len(shown)} element(s), got {len(actual)}: {actual!r}"]
    found = []
    for index, (expected, got) in enumerate(zip(shown, actual, strict=False)):
        found += mismatches(expected, got, path=f"{path}[{index}]", shape=shape)
    return found


class _Parser:
    """JSON with `...` as an object member, an array element or a value."""

    _TOKEN = re.compile(r'\s*(\.\.\.|[{}\[\],:]|"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)')

    def __init__(self, text: str) -> None:
        self.tokens: list[str] = []
        position = 0
        while position < len(text):
            if text[position:].strip() == "":
                break
            found = self._TOKEN.match(text, position)
            if not found:
                raise PatternError(f"not JSON at {text[position:position + 40]!r}")
            self.tokens.append(found.group(1))
            position = found.end()
        self.index = 0

    def more(self) -> bool:
        return self.index < len(self.tokens)

    def _next(self) -> str:
        if not self.more():
            raise PatternError("unexpected end")
        token = self.tokens[self.index]
        self.index += 1
        return token

    def _peek(self) -> str | None:
        return self.tokens[self.index] if self.more() else None

    def value(self) -> Any:
        token = self._next()
        if token == "...":
            return ELLIPSIS
        if token == "{":
            return self._members()
        if token == "[":
            return self._elements()
        if token in "}],:":
            raise PatternError(f"unexpected {token!r}")
        return json.loads(token)

    def _members(self) -> dict[Any, Any]:
        members: dict[Any, Any] = {}
        while self._peek() != "}":
            token = self._next()
            if token == "...":
                members[ELLIPSIS] = ELLIPSIS
            else:
                if not token.startswith('"') or self._next() != ":":
                    raise PatternError(f"bad object member at {token!r}")
                members[json.loads(token)] = self.value()
            if self._peek() == ",":
                self._next()
        self._next()
        return members

    def _elements(self) -> list[Any]:
        elements: list[Any] = []
        while self._peek() != "]":
            elements.append(self.value())
            if self._peek() == ",":
                self._next()
        self._next()
        return elements
