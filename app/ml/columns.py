"""Compact columns of many small documents: one byte buffer plus offsets, no object per row.

A million items' attributes as Python dicts take about a gigabyte (a train holds them through
all its parts, the api for as long as it serves the org); as one buffer of their JSON text they
take a few hundred bytes per item, and a row is decoded only when something reads it (the 20
results of a page, the items a filter column is built from).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import orjson


class JsonColumn(Sequence[dict[str, Any] | None]):
    """Row i is the JSON object (or None) whose UTF-8 text is blob[offsets[i]:offsets[i + 1]];
    an empty slice stands for None. Immutable."""

    __slots__ = ("_blob", "_offsets")

    def __init__(self, blob: bytes, offsets: np.ndarray) -> None:
        self._blob = blob
        self._offsets = offsets

    @classmethod
    def of_texts(cls, texts: Iterable[bytes | str | None]) -> JsonColumn:
        """From JSON texts (e.g. jsonb::text from the database); None stays None."""
        parts = [b"" if t is None else t.encode() if isinstance(t, str) else t for t in texts]
        return cls._of_parts(parts)

    @classmethod
    def of_values(cls, values: Iterable[dict[str, Any] | None]) -> JsonColumn:
        return cls._of_parts([b"" if v is None else orjson.dumps(v) for v in values])

    @classmethod
    def concat(cls, columns: Sequence[JsonColumn]) -> JsonColumn:
        blobs = [c._blob for c in columns]
        shifts = np.cumsum([0, *(len(b) for b in blobs[:-1])], dtype=np.int64)
        offsets = [np.zeros(1, np.int64)] + [c._offsets[1:] + shift for c, shift in zip(columns, shifts)]
        return cls(b"".join(blobs), np.concatenate(offsets))

    @classmethod
    def _of_parts(cls, parts: list[bytes]) -> JsonColumn:
        offsets = np.zeros(len(parts) + 1, dtype=np.int64)
        np.cumsum(np.fromiter((len(p) for p in parts), np.int64, len(parts)), out=offsets[1:])
        return cls(b"".join(parts), offsets)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> dict[str, Any] | None: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any] | None]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("JsonColumn index out of range")
        return self._decode(int(self._offsets[index]), int(self._offsets[index + 1]))

    def __iter__(self) -> Iterator[dict[str, Any] | None]:
        bounds = self._offsets.tolist()
        for start, stop in itertools.pairwise(bounds):
            yield self._decode(start, stop)

    def text(self, index: int) -> bytes:
        """Row `index`'s JSON text as stored (b"" for None), without decoding it."""
        return self._blob[int(self._offsets[index]):int(self._offsets[index + 1])]

    def take(self, rows: np.ndarray) -> JsonColumn:
        """The rows at these positions (-1: None), as a new column."""
        return JsonColumn._of_parts([b"" if r < 0 else self.text(r) for r in np.asarray(rows).tolist()])

    def patched(self, n: int, rows: dict[int, bytes]) -> JsonColumn:
        """n rows: the given ones replaced by these texts, the others as before (None past the
        end). Copies the buffer once, in runs of unchanged rows."""
        lengths = np.zeros(n, dtype=np.int64)
        kept = min(n, len(self))
        lengths[:kept] = np.diff(self._offsets[: kept + 1])
        pieces: list[bytes | memoryview] = []
        view = memoryview(self._blob)
        position = 0
        for i in sorted(rows):
            stop = min(i, kept)
            if stop > position:
                pieces.append(view[int(self._offsets[position]):int(self._offsets[stop])])
            pieces.append(rows[i])
            lengths[i] = len(rows[i])
            position = i + 1
        if kept > position:
            pieces.append(view[int(self._offsets[position]):int(self._offsets[kept])])
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return JsonColumn(b"".join(pieces), offsets)

    def may_have_key(self, key: str) -> bool:
        """Whether some row may have this top-level key: its JSON string followed by a colon
        appears in the buffer (a nested key also counts; the same string as a value does not).
        One scan of the buffer, no decoding."""
        needle = orjson.dumps(key)
        start = self._blob.find(needle)
        while start >= 0:
            after = start + len(needle)
            while after < len(self._blob) and self._blob[after] in b" \t\r\n":
                after += 1
            if after < len(self._blob) and self._blob[after] == ord(":"):
                return True
            start = self._blob.find(needle, start + 1)
        return False

    @property
    def nbytes(self) -> int:
        return len(self._blob) + self._offsets.nbytes

    def _decode(self, start: int, stop: int) -> dict[str, Any] | None:
        if start == stop:
            return None
        value: dict[str, Any] = orjson.loads(memoryview(self._blob)[start:stop])
        return value
