"""The live catalog an api process serves from: immutable, replaced whole on every change.

Its order starts with the trained model's items (so model-indexed arrays line up with catalog
indices 0..n_model-1 without translation), followed by items upserted since the last train.

Compact, because a catalog can have a million items: ids are one UTF-8 buffer with a hashed
index (app/ml/id_index.py), attributes one buffer of JSON text (a JsonColumn, about a sixth of
the memory of the dicts), and a row is decoded only when read
(a page's results). Attribute columns for filters are built on first use per key (in a worker
thread, the request's keys in one pass; "category" when the org is loaded), then carried to
every later version of the catalog (apply patches only the changed rows, realign permutes), so
a catalog change never makes a request wait for a column to be rebuilt from a million rows.
"""

from __future__ import annotations

import functools
import math
import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from app.ml.columns import JsonColumn
from app.ml.id_index import IdIndex, Ids

# Keys a catalog version remembers having no column (each would otherwise cost a scan of the
# attribute text per request); past this many, made-up filter keys are scanned for each time.
_ABSENT_KEYS_KEPT = 256

# Built when an org is loaded, not by a request: every request may read "category"
# (category-popular, and the fallbacks that end there).
COLUMNS_AT_LOAD = ("category",)

# A row: (item_id, item_type, status, attributes JSON text, created_at unix, updated_at unix)
Row = tuple[str, str, str, str, float, float]


def value_key(value: Any) -> tuple[str, Any] | None:
    """Equality key for filters: 1 == 1.0, but True is not 1 and "1" is not 1."""
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, (int, float)):
        return ("n", float(value))
    if isinstance(value, str):
        return ("s", value)
    return None


class Members(Mapping[tuple[str, Any], np.ndarray]):
    """value -> the (sorted) item indices whose value it is or whose list holds it, stored as one
    sorted array of (value code, item) pairs: rebuilt, patched and permuted with whole-array
    operations whatever the number of distinct values (a title column has one per item)."""

    def __init__(self, vocab: dict[tuple[str, Any], int], codes: np.ndarray, items: np.ndarray, *,
                 in_order: bool = False) -> None:
        """`in_order`: the pairs are already sorted by (code, item) and distinct."""
        if not in_order:
            order = np.lexsort((items, codes))
            codes, items = codes[order], items[order]
        self._vocab = vocab
        self._codes = codes
        self._items = items
        self._starts = np.searchsorted(self._codes, np.arange(len(vocab) + 1))

    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        return self._codes, self._items

    def __getitem__(self, value: tuple[str, Any]) -> np.ndarray:
        code = self._vocab[value]
        members = self._items[self._starts[code]:self._starts[code + 1]]
        if members.size == 0:
            raise KeyError(value)
        return members

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        present = set(np.unique(self._codes).tolist())
        return (value for value, code in self._vocab.items() if code in present)

    def __len__(self) -> int:
        return int(np.unique(self._codes).size)


@dataclass(frozen=True, eq=False)
class AttributeColumn:
    numbers: np.ndarray  # float64, NaN where the value is not a number
    codes: np.ndarray  # int32 equality code per item, -1 where missing / not a scalar
    vocab: dict[tuple[str, Any], int]  # every value seen (scalars and list elements) -> code
    members: Members  # value -> item indices whose value is it or whose list holds it

    @classmethod
    def build(cls, attributes: Sequence[dict[str, Any] | None], key: str) -> AttributeColumn:
        return cls.build_many(attributes, [key])[key]

    @classmethod
    def build_many(
        cls, attributes: Sequence[dict[str, Any] | None], keys: Iterable[str],
    ) -> dict[str, AttributeColumn]:
        """The columns of these keys, from one pass over the rows (each row decoded once)."""
        gathered = {key: _Gathered({}) for key in keys}
        n = len(attributes)
        for i, attrs in enumerate(attributes):
            if attrs:
                for key, values in gathered.items():
                    value = attrs.get(key)
                    if value is not None:
                        values.add(i, value)
        return {key: values.column(n) for key, values in gathered.items()}

    def patched(self, n: int, rows: dict[int, dict[str, Any] | None], key: str) -> AttributeColumn:
        """This column grown to n items, with the given rows' attributes replaced."""
        gathered = _Gathered(dict(self.vocab))
        for i, attrs in rows.items():
            value = attrs.get(key) if attrs else None
            if value is not None:
                gathered.add(i, value)
        return gathered.column(n, base=self, replaced=np.fromiter(rows, np.int64, len(rows)))

    def permuted(self, old: np.ndarray) -> AttributeColumn:
        """The column for a catalog whose row j was row old[j] of this one's (-1: not there)."""
        has = old >= 0
        source = np.where(has, old, 0)
        numbers = np.where(has, self.numbers[source], np.nan) if len(self.numbers) else np.full(len(old), np.nan)
        codes = np.where(has, self.codes[source], -1).astype(np.int32) if len(self.codes) else np.full(
            len(old), -1, np.int32)
        new_of_old = np.full(len(self.codes), -1, dtype=np.int64)
        new_of_old[old[has]] = np.flatnonzero(has)
        pair_codes, pair_items = self.members.pairs()
        moved = new_of_old[pair_items] if pair_items.size else pair_items
        present = moved >= 0
        return AttributeColumn(numbers, codes, self.vocab, Members(self.vocab, pair_codes[present], moved[present]))


def _as_array(values: array, dtype: Any) -> np.ndarray:  # type: ignore[type-arg]
    return np.frombuffer(values, dtype=dtype) if len(values) else np.zeros(0, dtype=dtype)


class _Gathered:
    """One key's values as rows are read, in C arrays: a million Python ints would cost ~70 MB
    per column while it is built (and the api's RSS would keep the high-water mark), and
    setting numpy elements one by one costs more than the decoding. value_key has the rules."""

    __slots__ = ("codes", "number_rows", "numbers", "pair_codes", "pair_items", "rows", "vocab")

    def __init__(self, vocab: dict[tuple[str, Any], int]) -> None:
        self.vocab = vocab
        self.rows, self.codes = array("q"), array("i")  # row -> its scalar's code
        self.number_rows, self.numbers = array("q"), array("d")  # row -> its finite number
        self.pair_items, self.pair_codes = array("q"), array("i")  # (row, list element)

    def add(self, i: int, value: Any) -> None:
        if isinstance(value, list):
            for element in value:
                element_key = value_key(element)
                if element_key is not None:
                    self.pair_items.append(i)
                    self.pair_codes.append(self._code(element_key))
            return
        scalar = value_key(value)
        if scalar is None:
            return
        if scalar[0] == "n" and math.isfinite(scalar[1]):
            self.number_rows.append(i)
            self.numbers.append(scalar[1])
        self.rows.append(i)
        self.codes.append(self._code(scalar))

    def _code(self, value: tuple[str, Any]) -> int:
        code = self.vocab.get(value)
        if code is None:
            code = self.vocab[value] = len(self.vocab)
        return code

    def column(self, n: int, *, base: AttributeColumn | None = None,
               replaced: np.ndarray | None = None) -> AttributeColumn:
        """n items: these rows' values over `base`'s other rows (`replaced`: rows re-read)."""
        numbers = np.full(n, np.nan)
        codes = np.full(n, -1, dtype=np.int32)
        pair_codes: list[np.ndarray] = []
        pair_items: list[np.ndarray] = []
        if base is not None:
            m = min(n, len(base.codes))
            numbers[:m], codes[:m] = base.numbers[:m], base.codes[:m]
            old_codes, old_items = base.members.pairs()
            kept = old_items < n
            if replaced is not None and replaced.size:
                keep = np.ones(n, dtype=bool)
                keep[replaced] = False
                numbers[replaced], codes[replaced] = np.nan, -1
                kept &= keep[np.minimum(old_items, n - 1)]
            pair_codes.append(old_codes[kept])
            pair_items.append(old_items[kept])
        rows, row_codes = _as_array(self.rows, np.int64), _as_array(self.codes, np.int32)
        codes[rows] = row_codes
        numbers[_as_array(self.number_rows, np.int64)] = _as_array(self.numbers, np.float64)
        pair_codes += [row_codes, _as_array(self.pair_codes, np.int32)]
        pair_items += [rows, _as_array(self.pair_items, np.int64)]
        # (code, item) as one sortable int64; sorted, then repeats dropped (a list may repeat an
        # element): a plain sort, several times faster than np.unique's hashing at a million pairs.
        width = max(n, 1)
        pairs = np.concatenate(pair_codes).astype(np.int64) * width + np.concatenate(pair_items)
        pairs.sort()
        if pairs.size:
            pairs = pairs[np.concatenate(([True], pairs[1:] != pairs[:-1]))]
        members = Members(self.vocab, (pairs // width).astype(np.int32), pairs % width, in_order=True)
        return AttributeColumn(numbers, codes, self.vocab, members)


class CatalogTable:
    """The items table's rows gathered as compact columns, a chunk of rows at a time (a
    million items are loaded without a million row objects alive at once)."""

    def __init__(self) -> None:
        self.item_ids: list[str] = []
        self.item_types: list[str] = []
        self.active: list[bool] = []
        self.created_at: list[float] = []
        self.watermark = 0.0
        self._texts: list[JsonColumn] = []
        self._shared: dict[str, str] = {}  # one object per distinct item type, not one per item

    def add(self, rows: Sequence[Row]) -> None:
        if not rows:
            return
        self.item_ids.extend(row[0] for row in rows)
        self.item_types.extend(self._shared.setdefault(row[1], row[1]) for row in rows)
        self.active.extend(row[2] == "active" for row in rows)
        self.created_at.extend(row[4] for row in rows)
        self.watermark = max(self.watermark, max(row[5] for row in rows))
        self._texts.append(JsonColumn.of_texts(row[3] for row in rows))

    def attributes(self) -> JsonColumn:
        return JsonColumn.concat(self._texts) if self._texts else JsonColumn.of_texts([])


@dataclass(frozen=True, eq=False)
class Catalog:
    item_ids: Ids  # position -> item id
    index: IdIndex  # item id -> position
    known: np.ndarray  # bool: the item is in the items table (events may name unknown items)
    active: np.ndarray  # bool: known and status == active
    item_types: np.ndarray  # object
    created_at: np.ndarray  # float64 unix, NaN when unknown
    attributes: JsonColumn  # one JSON object per item (None where unknown), decoded when read
    watermark: float  # newest updated_at applied (unix s)
    _columns: dict[str, AttributeColumn] = field(default_factory=dict, repr=False)
    _absent: set[str] = field(default_factory=set, repr=False)  # keys no item of this version has
    _building: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def empty(cls) -> Catalog:
        return cls.build([], order=None)

    @classmethod
    def build(cls, rows: Sequence[Row], *, order: Iterable[str] | None) -> Catalog:
        """From database rows; `order` (the model's item ids) comes first when given."""
        table = CatalogTable()
        table.add(rows)
        return cls.of_table(table, order=order)

    @classmethod
    def of_table(cls, table: CatalogTable, *, order: Iterable[str] | None) -> Catalog:
        """From the items table's columns; `order` (the model's item ids) comes first when given."""
        position = {item_id: j for j, item_id in enumerate(table.item_ids)}
        ids: list[str] = list(order) if order is not None else []
        seen = set(ids)
        ids.extend(sorted(i for i in position if i not in seen))
        n = len(ids)
        source = np.fromiter((position.get(item_id, -1) for item_id in ids), np.int64, n)
        known = source >= 0
        types = np.full(n, None, dtype=object)
        active = np.zeros(n, dtype=bool)
        created = np.full(n, np.nan)
        if position:
            row = source[known]
            table_types = np.empty(len(table.item_types), dtype=object)
            table_types[:] = table.item_types
            types[known] = table_types[row]
            active[known] = np.asarray(table.active, dtype=bool)[row]
            created[known] = np.asarray(table.created_at, dtype=np.float64)[row]
        item_ids = Ids.of(ids)
        return cls(item_ids, IdIndex(item_ids), known, active, types, created,
                   table.attributes().take(source), table.watermark)

    def apply(self, rows: Sequence[Row]) -> Catalog:
        """A new catalog with these changed rows applied (new ids appended)."""
        if not rows:
            return self
        latest = {row[0]: row for row in rows}  # one change per item: the last one read
        found = self.index.positions(list(latest))
        new_ids = [item_id for item_id, i in zip(latest, found.tolist()) if i < 0]
        n_old, n = len(self), len(self) + len(new_ids)
        grow = n - n_old
        item_ids = self.item_ids.appended(new_ids) if grow else self.item_ids
        index = self.index.extended(item_ids) if grow else self.index
        found[found < 0] = np.arange(n_old, n)
        position = dict(zip(latest, found.tolist()))
        known = np.concatenate([self.known, np.zeros(grow, dtype=bool)])
        active = np.concatenate([self.active, np.zeros(grow, dtype=bool)])
        types = np.concatenate([self.item_types, np.full(grow, None, dtype=object)])
        created = np.concatenate([self.created_at, np.full(grow, np.nan)])
        texts: dict[int, bytes] = {}
        watermark = max(self.watermark, max(row[5] for row in rows))
        for item_id, item_type, status, attrs, created_at, _ in latest.values():
            i = position[item_id]
            known[i] = True
            active[i] = status == "active"
            types[i] = item_type
            texts[i] = attrs.encode() if isinstance(attrs, str) else attrs
            created[i] = created_at
        attributes = self.attributes.patched(n, texts)
        decoded = {i: orjson.loads(text) for i, text in texts.items()}
        columns = {key: column.patched(n, decoded, key) for key, column in self._columns.items()}
        return Catalog(item_ids, index, known, active, types, created, attributes, watermark, columns)

    def realign(self, order: Iterable[str]) -> Catalog:
        """The same items re-ordered so that `order` (a new model's item ids) comes first."""
        if isinstance(self.item_ids, Ids) and self.item_ids.same_as(order):
            # A train with no item added since the last: nothing moves (checking a million ids
            # one by one took a second of every swap).
            return self
        first = list(order)
        in_order = set(first)
        ids = first + [i for i, known in zip(self.item_ids, self.known.tolist()) if known and i not in in_order]
        old = self.index.positions(ids)
        has = old >= 0
        src = np.where(has, old, 0)

        def take(values: np.ndarray, missing: Any) -> np.ndarray:
            taken = values[src] if len(values) else np.empty(len(ids), dtype=values.dtype)
            return np.where(has, taken, missing) if len(ids) else taken

        item_ids = Ids.of(ids)
        return Catalog(
            item_ids,
            IdIndex(item_ids),
            take(self.known, False).astype(bool),
            take(self.active, False).astype(bool),
            take(self.item_types, None),
            take(self.created_at, np.nan).astype(np.float64),
            self.attributes.take(old),
            self.watermark,
            {key: column.permuted(old) for key, column in self._columns.items()},
        )

    def column(self, key: str) -> AttributeColumn:
        """Built on first use per key (then carried to later versions). Requests have theirs
        built off the event loop first (`missing_columns`, `with_columns`).

        A key no item has (a filter a client made up) gets one shared empty column: made-up
        keys must not each cost a pass over the catalog and a column kept for its lifetime.
        """
        column = self._columns.get(key)
        if column is None:
            self.with_columns([key])
            column = self._columns.get(key, self._absent_column)
        return column

    def missing_columns(self, keys: Iterable[str]) -> list[str]:
        """Of these keys, those not yet known to have a column or to have none."""
        return [key for key in keys if key not in self._columns and key not in self._absent]

    def with_columns(self, keys: Iterable[str]) -> Catalog:
        """Build these columns now, in one pass over the items (a loader thread or a worker
        thread does it, so the event loop is never held for a million rows). One build at a
        time: a second request for the same column waits for it instead of building it again."""
        with self._building:
            wanted = []
            for key in dict.fromkeys(self.missing_columns(keys)):
                if self.attributes.may_have_key(key):
                    wanted.append(key)
                elif len(self._absent) < _ABSENT_KEYS_KEPT:  # made-up keys: bounded, like their columns
                    self._absent.add(key)
            if wanted:
                self._columns.update(AttributeColumn.build_many(self.attributes, wanted))
        return self

    @property
    def column_keys(self) -> list[str]:
        return list(self._columns)

    @functools.cached_property
    def _absent_column(self) -> AttributeColumn:
        return AttributeColumn.build([None] * len(self), "")

    def lookup(self, item_id: str | None) -> int | None:
        if item_id is None:
            return None
        return self.index.get(item_id)

