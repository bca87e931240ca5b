"""OrgModels: everything one training run produces for one org, as plain arrays.

Immutable once built; serving swaps the reference to a new bundle in one assignment. It
round-trips through np.savez / np.load(allow_pickle=False): string ids become one UTF-8 blob
plus offsets, sparse matrices become data/indices/indptr/shape, scalars go to the manifest.
Neighbour-table rows are stored best-first (see topk.py); the round trip keeps that order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from app.memory import drop_mapped_pages
from app.ml.als import item_gram
from app.ml.factor_index import FactorIndex
from app.ml.id_index import IdIndex, Ids
from app.ml.params import TrainParams

FORMAT_VERSION = 3
# Format 1 had no content index; those bundles load with an empty one (no serving-time content
# similarity for items upserted after the train, until the next train). Formats 1 and 2 had no
# interacted-items table: `exclude_interacted` sees only real-time activity until the next train.
_READABLE_FORMATS = (1, 2, 3)
ID_FIELDS = ("item_ids", "user_ids", "content_tokens", "event_names")
# Kept as their stored bytes, decoded when read (app/ml/id_index.py): serving reads an id at a
# time (a user's row, a lookup's check), and content tokens only to place an item upserted since
# the train; a million ids or tokens decoded are ~90 MB of str objects.
LAZY_ID_FIELDS = ("item_ids", "user_ids", "content_tokens")
SPARSE_FIELDS = (
    "user_items",
    "item_neighbors",
    "content_neighbors",
    "copurchase",
    "copurchase_counts",
    "coengagement",
    "transitions",
    "purchase_counts",
    "last_purchase_ts",
    "content_matrix",
    "interacted",
)
DENSE_FIELDS = (
    "user_factors",
    "item_factors",
    "ease_b",
    "popularity",
    "trending",
    "repurchase_interval",
    "user_price_center",
    "user_price_spread",
    "item_price",
    "content_idf",
    "exposure_penalty",
)
# NaN in these means "unknown" by design; everything else must be finite.
NAN_MEANS_UNKNOWN = ("repurchase_interval", "user_price_center", "user_price_spread", "item_price")


@dataclass(frozen=True, eq=False)
class OrgModels:
    version: str
    trained_at: float  # unix s: the params.now the run was trained against
    params: TrainParams
    n_interactions: int  # events used for training
    item_ids: np.ndarray | Ids  # (str) column order of every item-indexed array; Ids once loaded
    user_ids: np.ndarray | Ids  # (str) row order of every user-indexed array; Ids once loaded
    user_items: csr_matrix  # users x items float32: decayed, clipped training weights
    user_factors: np.ndarray  # users x factors float32
    item_factors: np.ndarray  # items x factors float32
    ease_b: np.ndarray  # items x items float32, 0 x 0 when EASE is not used
    item_neighbors: csr_matrix  # items x items: behavioural kNN in [0, 1]
    content_neighbors: csr_matrix  # items x items: attribute cosine in [0, 1]
    copurchase: csr_matrix  # items x items: shrunk added value in [0, 1)
    copurchase_counts: csr_matrix  # items x items: raw co-purchase counts (eval baseline)
    coengagement: csr_matrix  # items x items: shrunk added value in [0, 1)
    transitions: csr_matrix  # items x items: P(next item | item)
    popularity: np.ndarray  # items float32 [0, 1]
    trending: np.ndarray  # items float32 [0, 1]
    purchase_counts: csr_matrix  # users x items float32
    last_purchase_ts: csr_matrix  # users x items float64
    repurchase_interval: np.ndarray  # items float64 seconds, NaN unknown
    user_price_center: np.ndarray  # users float32 mean log(price), NaN unknown
    user_price_spread: np.ndarray  # users float32 spread of log(price), NaN unknown
    item_price: np.ndarray  # items float32, NaN unknown
    content_matrix: csr_matrix  # items x tokens: TF-IDF rows (unit length) of the train's catalog
    content_tokens: np.ndarray | Ids  # (str): the token of each content_matrix column
    content_idf: np.ndarray  # tokens float32: idf, 0 = a token that links nothing
    exposure_penalty: np.ndarray  # items float32 in (0, 1]: demotion of items shown but ignored
    interacted: csr_matrix  # users x items uint32: bit sets of event names (history.py)
    event_names: np.ndarray  # object (str): the event name of each bit of `interacted`
    extra: dict[str, Any] = field(default_factory=dict)  # free-form manifest notes (timings)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @cached_property
    def item_index(self) -> dict[str, int]:
        return {item_id: i for i, item_id in enumerate(self.item_ids.tolist())}

    @cached_property
    def user_index(self) -> IdIndex:
        return IdIndex(self.user_ids)

    @cached_property
    def item_factor_gram(self) -> np.ndarray:
        """Y^T Y for fold_in_user, computed once per loaded bundle."""
        return item_gram(self.item_factors)

    @cached_property
    def exposure_demotion(self) -> np.ndarray | None:
        """1 - exposure_penalty, once per loaded bundle; None when no item is demoted."""
        demotion = (1.0 - self.exposure_penalty).astype(np.float32)
        return demotion if demotion.any() else None

    @cached_property
    def factor_index(self) -> FactorIndex | None:
        """The item factors ordered for personalized's exact top-k scan; None under EASE."""
        if self.personalization != "als" or len(self.item_factors) != self.n_items:
            return None
        return FactorIndex(self.item_factors, self.exposure_demotion)

    def warm(self) -> None:
        """Build what serving derives from the bundle now (in the loader's thread), so the
        first requests after a swap do not pay for it. (Not `item_index`: serving looks items
        up in the catalog's index; at a million items a second dict is ~70 MB.)"""
        for name in ("user_index", "item_factor_gram", "exposure_demotion", "factor_index"):
            getattr(self, name)
        # The gram and the factor index (a reordered copy) read every item's factors once; from
        # now on requests read a few rows of them (fold-in, a narrow filter's items), so a
        # memory-mapped array need not stay resident whole (128 MB at 1M items and 32 factors).
        drop_mapped_pages(self.item_factors)

    @cached_property
    def content_token_index(self) -> dict[str, int]:
        return {token: j for j, token in enumerate(self.content_tokens.tolist())}

    @cached_property
    def content_by_token(self) -> csr_matrix:
        """tokens x items: a new item's few tokens select a few rows to sum."""
        return self.content_matrix.T.tocsr()

    @property
    def uses_ease(self) -> bool:
        return self.ease_b.size > 0

    @property
    def personalization(self) -> str:
        """The family `personalized` is served by (personalization.py); bundles from before the
        model search say "auto": EASE when they hold its matrix, else ALS."""
        model = self.params.personal_model
        if model != "auto":
            return model
        return "ease" if self.uses_ease else "als"

    def manifest(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "version": self.version,
            "trained_at": self.trained_at,
            "counts": {"items": self.n_items, "users": self.n_users, "interactions": self.n_interactions},
            "params": dataclasses.asdict(self.params),
            "extra": self.extra,
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {}
        for name in ID_FIELDS:
            arrays[f"{name}.blob"], arrays[f"{name}.offsets"] = encode_strings(getattr(self, name))
        for name in SPARSE_FIELDS:
            matrix: csr_matrix = getattr(self, name)
            arrays[f"{name}.data"] = matrix.data
            arrays[f"{name}.indices"] = matrix.indices
            arrays[f"{name}.indptr"] = matrix.indptr
            arrays[f"{name}.shape"] = np.asarray(matrix.shape, dtype=np.int64)
        for name in DENSE_FIELDS:
            arrays[name] = getattr(self, name)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], manifest: dict[str, Any]) -> OrgModels:
        if manifest.get("format") not in _READABLE_FORMATS:
            raise ValueError(f"unsupported model format {manifest.get('format')!r}")
        if manifest["format"] == 1:
            n_items = int(manifest["counts"]["items"])
            arrays = {**arrays, **_empty_content_index(n_items), "exposure_penalty": np.ones(n_items, np.float32)}
        if manifest["format"] in (1, 2):
            counts = manifest["counts"]
            arrays = {**arrays, **_empty_history(int(counts["users"]), int(counts["items"]))}
        values: dict[str, Any] = {}
        for name in ID_FIELDS:
            blob, offsets = arrays[f"{name}.blob"], arrays[f"{name}.offsets"]
            values[name] = Ids(blob, offsets) if name in LAZY_ID_FIELDS else decode_strings(blob, offsets)
        for name in SPARSE_FIELDS:
            n_rows, n_cols = (int(n) for n in arrays[f"{name}.shape"])
            values[name] = csr_matrix(
                (arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"]), shape=(n_rows, n_cols)
            )
        for name in DENSE_FIELDS:
            values[name] = arrays[name]
        return cls(
            version=manifest["version"],
            trained_at=float(manifest["trained_at"]),
            params=TrainParams(**manifest["params"]),
            n_interactions=int(manifest["counts"]["interactions"]),
            extra=dict(manifest.get("extra", {})),
            **values,
        )

    def non_finite_parts(self) -> list[str]:
        """Names of arrays holding NaN/Inf where they must not (NaN = unknown is allowed)."""
        bad = []
        for name in (*SPARSE_FIELDS, *DENSE_FIELDS):
            value = getattr(self, name)
            data = value.data if isinstance(value, csr_matrix) else value
            ok = ~np.isinf(data) if name in NAN_MEANS_UNKNOWN else np.isfinite(data)
            if not ok.all():
                bad.append(name)
        return bad


def encode_strings(values: np.ndarray | Ids) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 UTF-8 blob, int64 offsets of length n + 1): string ids without object arrays."""
    ids = values if isinstance(values, Ids) else Ids.of(values.tolist())
    return ids.blob, ids.offsets


def decode_strings(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    out = np.empty(len(offsets) - 1, dtype=object)
    out[:] = Ids(blob, offsets).tolist()
    return out


def _empty_history(n_users: int, n_items: int) -> dict[str, np.ndarray]:
    blob, offsets = encode_strings(np.empty(0, dtype=object))
    return {
        "event_names.blob": blob,
        "event_names.offsets": offsets,
        "interacted.data": np.zeros(0, np.uint32),
        "interacted.indices": np.zeros(0, np.int32),
        "interacted.indptr": np.zeros(n_users + 1, np.int32),
        "interacted.shape": np.asarray((n_users, n_items), dtype=np.int64),
    }


def _empty_content_index(n_items: int) -> dict[str, np.ndarray]:
    blob, offsets = encode_strings(np.empty(0, dtype=object))
    return {
        "content_tokens.blob": blob,
        "content_tokens.offsets": offsets,
        "content_matrix.data": np.zeros(0, np.float32),
        "content_matrix.indices": np.zeros(0, np.int32),
        "content_matrix.indptr": np.zeros(n_items + 1, np.int32),
        "content_matrix.shape": np.asarray((n_items, 0), dtype=np.int64),
        "content_idf": np.zeros(0, np.float32),
    }
