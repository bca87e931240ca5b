"""Request filters (API.md section 5) compiled once per request, applied as numpy masks.

`compile_filters` validates the shape (unknown operator -> 400) without touching the catalog;
`Filters.mask(catalog)` is vectorised: per-attribute columns are built once per catalog
version (see Catalog.column), so no per-item Python runs on the hot path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.errors import ValidationFailed, field_error
from app.ml.history import name_bits
from app.recommend.catalog import Catalog, value_key
from app.recommend.ranking import RankContext, memoised_recent, row

_MASKS_KEPT = 128
RANGE_OPERATORS = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}
LIST_OPERATORS = {"contains"}
OWN_FIELDS = {"item_type", "status"}


@dataclass(frozen=True)
class _Equals:
    key: str
    values: tuple[tuple[str, Any], ...]  # any of (one value = equality, several = "is one of")


@dataclass(frozen=True)
class _Range:
    key: str
    bounds: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class _Contains:
    key: str
    value: tuple[str, Any]


@dataclass(frozen=True)
class _OwnField:
    field: str
    values: frozenset[str]


@dataclass(frozen=True)
class ExcludeInteracted:
    """filters.exclude_interacted: items the request's user has had these events for go."""

    names: frozenset[str] | None  # None: any event with an item


@dataclass(frozen=True)
class Filters:
    predicates: tuple[Any, ...]
    exclude_item_ids: tuple[str, ...]
    category: str | None  # filters.category as a plain string (category-popular uses it)
    # Per user, so not part of the catalog mask: the service applies it (history.py).
    exclude_interacted: ExcludeInteracted | None = None

    @property
    def empty(self) -> bool:
        return not self.predicates and not self.exclude_item_ids

    @property
    def attribute_keys(self) -> list[str]:
        """The item attributes these filters read (each needs its catalog column)."""
        return [p.key for p in self.predicates if not isinstance(p, _OwnField)]

    def cached_mask(self, catalog: Catalog, memo: dict[str, Any]) -> np.ndarray:
        """mask(), remembered per catalog snapshot for the most recent distinct filters
        (storefronts repeat the same few category/brand filters); treat it as read-only."""
        key = (self.predicates, self.exclude_item_ids)
        return memoised_recent(memo, "filter-masks", key, lambda: self.mask(catalog), kept=_MASKS_KEPT)

    def mask(self, catalog: Catalog) -> np.ndarray:
        """Items that satisfy every filter (True = keep)."""
        keep = np.ones(len(catalog), dtype=bool)
        for predicate in self.predicates:
            keep &= _predicate_mask(predicate, catalog)
        excluded = catalog.index.positions(list(self.exclude_item_ids))
        keep[excluded[excluded >= 0]] = False
        return keep


NO_FILTERS = Filters((), (), None)


def compile_filters(raw: dict[str, Any] | None) -> Filters:
    if not raw:
        return NO_FILTERS
    predicates: list[Any] = []
    errors: list[dict[str, str]] = []
    exclude: tuple[str, ...] = ()
    interacted: ExcludeInteracted | None = None
    for key, spec in raw.items():
        where = f"filters.{key}"
        if key == "exclude_item_ids":
            if not isinstance(spec, list) or not all(isinstance(v, str) for v in spec):
                errors.append(field_error(where, "must be a list of item ids"))
            else:
                exclude = tuple(spec)
            continue
        if key == "exclude_interacted":
            try:
                interacted = _exclude_interacted(spec)
            except ValueError as exc:
                errors.append(field_error(where, str(exc)))
            continue
        if key in OWN_FIELDS:
            values = spec if isinstance(spec, list) else [spec]
            if not values or not all(isinstance(v, str) for v in values):
                errors.append(field_error(where, "must be a string or a list of strings"))
            else:
                predicates.append(_OwnField(key, frozenset(values)))
            continue
        try:
            predicates.append(_attribute_predicate(key, spec))
        except ValueError as exc:
            errors.append(field_error(where, str(exc)))
    if errors:
        raise ValidationFailed(errors, message="Invalid filters")
    category = raw.get("category") if isinstance(raw.get("category"), str) else None
    return Filters(tuple(predicates), exclude, category, interacted)


def _exclude_interacted(spec: Any) -> ExcludeInteracted | None:
    if spec is True:
        return ExcludeInteracted(None)
    if spec is False:
        return None
    if isinstance(spec, list) and spec and all(isinstance(v, str) and v for v in spec):
        return ExcludeInteracted(frozenset(spec))
    raise ValueError("takes true (any event), false, or a non-empty list of event names")


def _attribute_predicate(key: str, spec: Any) -> Any:
    if isinstance(spec, dict):
        if not spec:
            raise ValueError("an operator object needs at least one operator")
        unknown = set(spec) - set(RANGE_OPERATORS) - LIST_OPERATORS
        if unknown:
            allowed = ", ".join([*RANGE_OPERATORS, *sorted(LIST_OPERATORS)])
            raise ValueError(f"unknown operator(s) {', '.join(sorted(unknown))}; use one of {allowed}")
        if "contains" in spec:
            if len(spec) > 1:
                raise ValueError("contains cannot be combined with range operators")
            element = value_key(spec["contains"])
            if element is None:
                raise ValueError("contains takes a string, number or boolean")
            return _Contains(key, element)
        bounds = []
        for op, bound in spec.items():
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
                raise ValueError(f"{op} takes a finite number")
            bounds.append((op, float(bound)))
        return _Range(key, tuple(bounds))
    if isinstance(spec, list):
        keys = [value_key(v) for v in spec]
        if not spec or any(k is None for k in keys):
            raise ValueError("a list filter takes one or more strings, numbers or booleans")
        return _Equals(key, tuple(k for k in keys if k is not None))
    single = value_key(spec)
    if single is None:
        raise ValueError("takes a string, number, boolean, a list of them, or an operator object")
    return _Equals(key, (single,))


def _predicate_mask(predicate: Any, catalog: Catalog) -> np.ndarray:
    if isinstance(predicate, _OwnField):
        if predicate.field == "item_type":
            return np.isin(catalog.item_types, list(predicate.values))
        # Only active items are ever returned, so a status filter can only keep or drop all of them.
        return catalog.active.copy() if "active" in predicate.values else np.zeros(len(catalog), dtype=bool)
    column = catalog.column(predicate.key)
    if isinstance(predicate, _Equals):
        codes = [column.vocab[k] for k in predicate.values if k in column.vocab]
        if len(codes) == 1:
            return column.codes == codes[0]
        return np.isin(column.codes, codes) if codes else np.zeros(len(catalog), dtype=bool)
    if isinstance(predicate, _Range):
        keep = ~np.isnan(column.numbers)
        for op, bound in predicate.bounds:
            with np.errstate(invalid="ignore"):
                keep &= RANGE_OPERATORS[op](column.numbers, bound)
        return keep
    keep = np.zeros(len(catalog), dtype=bool)
    members = column.members.get(predicate.value)
    if members is not None:
        keep[members] = True
    return keep


def interacted_indices(ctx: RankContext, rule: ExcludeInteracted) -> np.ndarray:
    """Catalog indices of the items the request's user (aliases resolved) has had the rule's
    events for: in the trained history (OrgModels.interacted) and in their recent activity."""
    found: list[np.ndarray] = []
    models = ctx.models
    if models is not None and ctx.model_user is not None and models.interacted.shape[0] > ctx.model_user:
        items, bits = row(models.interacted, ctx.model_user)
        wanted = name_bits(models.event_names, rule.names)
        found.append(items[(bits.astype(np.uint32) & wanted) != 0])
    recent = [i for i, a in ctx.recent_items() if rule.names is None or a.event_name in rule.names]
    found.append(np.asarray(recent, dtype=np.int64))
    return np.concatenate(found)
