"""String ids an api process keeps for a million items, without a Python object per id.

A million ids as str objects cost ~90 MB, and a dict from them to positions ~40 MB more plus
~28 MB of int objects. Worse, when a new model version is swapped in, those millions of small
objects are made while the previous snapshot is still alive and land in the holes of its
memory, so the allocator can give back little of it once it is freed: measured with a
1M-item org, a swapped snapshot kept ~450 MB more resident than the same one loaded cold.

`Ids` keeps the ids as one UTF-8 blob and offsets (as the model store saves them), decoding an
id when it is read (a page of results, a lookup's check). `IdIndex` maps an id to its
position: the ids' hashes (int64), sorted, with the position each belongs to, 12 bytes per id;
a lookup binary-searches the hash and checks the id itself (two ids sharing a hash are told
apart). Python's str hash is salted per process, which is fine: an index never leaves it.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import overload

import numpy as np


class Ids:
    """Immutable sequence of str ids stored as one UTF-8 blob plus n + 1 offsets. Reads like
    the object array it replaces: ids[i], ids[positions], len, iteration, tolist()."""

    __slots__ = ("blob", "offsets")

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self.blob = blob  # uint8
        self.offsets = offsets  # int64, n + 1

    @classmethod
    def of(cls, ids: Iterable[str]) -> Ids:
        encoded = [item_id.encode("utf-8") for item_id in ids]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), np.int64, len(encoded)), out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def size(self) -> int:
        return len(self)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice | np.ndarray | Sequence[int]) -> np.ndarray: ...

    def __getitem__(self, i: int | slice | np.ndarray | Sequence[int]) -> str | np.ndarray:
        """One id, or an object array of the ids at these positions (a slice, an index array)."""
        if isinstance(i, (int, np.integer)):
            n = len(self)
            j = int(i) + n if i < 0 else int(i)
            if not 0 <= j < n:
                raise IndexError(i)
            return self.blob[int(self.offsets[j]):int(self.offsets[j + 1])].tobytes().decode("utf-8")
        if isinstance(i, slice):
            positions = np.arange(*i.indices(len(self)))
        else:
            positions = np.asarray(i)
            positions = np.flatnonzero(positions) if positions.dtype == bool else positions.astype(np.int64)
        out = np.empty(len(positions), dtype=object)
        out[:] = [self[int(j)] for j in positions.tolist()]
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self.tolist())

    def tolist(self) -> list[str]:
        raw = self.blob.tobytes()
        return [raw[start:stop].decode("utf-8") for start, stop in itertools.pairwise(self.offsets.tolist())]

    def same_as(self, other: object) -> bool:
        """Whether other is an Ids holding the same ids in the same order (no id decoded)."""
        return isinstance(other, Ids) and (other is self or (
            np.array_equal(self.offsets, other.offsets) and np.array_equal(self.blob, other.blob)))

    def appended(self, ids: Sequence[str]) -> Ids:
        more = Ids.of(ids)
        return Ids(np.concatenate([self.blob, more.blob]),
                   np.concatenate([self.offsets, more.offsets[1:] + self.offsets[-1]]))


class IdIndex(Mapping[str, int]):
    """Read-only {ids[i]: i} over distinct str ids (Ids, or an object array), which it keeps."""

    __slots__ = ("_hashes", "_ids", "_positions")

    def __init__(self, ids: Ids | np.ndarray, *, _hashes: np.ndarray | None = None) -> None:
        """`_hashes`: the ids' hashes in id order, when the caller has them (extended())."""
        hashes = _hashes if _hashes is not None else _hash_all(ids.tolist())
        order = np.argsort(hashes, kind="stable")  # timsort: two sorted runs merge in one pass
        self._ids = ids
        self._hashes = hashes[order]
        self._positions = order.astype(np.int32) if len(ids) < 2**31 else order

    def extended(self, ids: Ids | np.ndarray) -> IdIndex:
        """The index of `ids`, whose first len(self) entries are this index's ids."""
        n = len(self._ids)
        hashes = np.empty(len(ids), dtype=np.int64)
        hashes[self._positions] = self._hashes
        hashes[n:] = _hash_all(ids[n:].tolist())
        return IdIndex(ids, _hashes=hashes)

    def __getitem__(self, key: str) -> int:
        position = self._find(key, hash(key))
        if position < 0:
            raise KeyError(key)
        return position

    def positions(self, keys: Sequence[str]) -> np.ndarray:
        """The position of each key, -1 where it is not an id here: one search for them all
        (a request's recent activity, its excluded ids)."""
        if not keys:
            return np.zeros(0, dtype=np.int64)
        hashes = _hash_all(keys)
        at = np.minimum(np.searchsorted(self._hashes, hashes), max(len(self._hashes) - 1, 0))
        out = np.full(len(keys), -1, dtype=np.int64)
        if not len(self._hashes):
            return out
        candidates = self._positions[at].tolist()
        hit = (self._hashes[at] == hashes).tolist()
        for j, key in enumerate(keys):
            if hit[j]:
                position = candidates[j]
                out[j] = position if self._ids[position] == key else self._find(key, int(hashes[j]))
        return out

    def _find(self, key: str, hashed: int) -> int:
        j = int(np.searchsorted(self._hashes, hashed))
        while j < len(self._hashes) and self._hashes[j] == hashed:
            position = int(self._positions[j])
            if self._ids[position] == key:
                return position
            j += 1
        return -1

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key, hash(key)) >= 0

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def _hash_all(keys: Sequence[str]) -> np.ndarray:
    return np.fromiter((hash(key) for key in keys), dtype=np.int64, count=len(keys))
