"""Attribute (content) similarity: TF-IDF cosine over an item's fields and title words.

Tokens: item_type=<v>, <field>=<v> for short string attributes and each element of string
lists (tags), and w:<word> for words of the title/name. Numbers (price, rating) are not
categories and are skipped. Only catalog data is used, so a brand-new item with attributes
has neighbours before anyone has touched it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from app.ml.interactions import CatalogSnapshot
from app.ml.topk import pairwise_top_k, stack_rows, top_k_per_row

TEXT_FIELDS = ("title", "name")
# Longer strings are descriptions or URLs, not categories.
MAX_VALUE_CHARS = 64
# Candidates kept per item before common tokens re-rank them, as a multiple of k.
CANDIDATES_PER_K = 2
# Common tokens per item used in re-ranking (the heaviest); an item rarely has more.
MAX_COMMON_TOKENS = 8
RESCORE_CHUNK = 500_000
# Items whose candidates are generated and rescored at once.
CANDIDATE_BLOCK = 20_000
_WORD = re.compile(r"[^\W_]{2,}")


def item_tokens(item_type: str | None, attributes: dict[str, Any] | None) -> list[str]:
    """The distinct tokens describing one item (lower-cased, field-qualified)."""
    tokens = [f"item_type={item_type.strip().lower()}"] if item_type else []
    for key, value in (attributes or {}).items():
        if key in TEXT_FIELDS:
            if isinstance(value, str):
                tokens.extend(f"w:{word}" for word in _WORD.findall(value.lower()))
        elif isinstance(value, str):
            tokens.extend(_field_tokens(key, [value]))
        elif isinstance(value, list):
            tokens.extend(_field_tokens(key, value))
    return list(dict.fromkeys(tokens))


def _field_tokens(key: str, values: Iterable[Any]) -> Iterable[str]:
    for value in values:
        if isinstance(value, str) and value.strip() and len(value) <= MAX_VALUE_CHARS:
            yield f"{key}={value.strip().lower()}"


@dataclass(frozen=True, eq=False)
class ContentIndex:
    """The catalog's TF-IDF space, kept with the model so that serving can place an item that
    was upserted after the train (and so has no precomputed neighbours) among the others."""

    matrix: csr_matrix  # items x tokens, rows unit length
    tokens: np.ndarray  # object (str): the token of each column
    idf: np.ndarray  # float32 per token; 0 = cannot link two items

    @classmethod
    def empty(cls, n_items: int) -> ContentIndex:
        empty = csr_matrix((n_items, 0), dtype=np.float32)  # type: ignore[arg-type]  # scipy-stubs rejects the documented (n, m) empty-shape form
        return cls(empty, np.empty(0, dtype=object), np.zeros(0, np.float32))


def content_index(catalog: CatalogSnapshot, item_ids: np.ndarray) -> ContentIndex:
    """TF-IDF rows for item_ids (the training item universe); items absent from the catalog
    have no tokens and so an empty row."""
    position = {item_id: row for row, item_id in enumerate(catalog.item_ids.tolist())}
    token_lists: list[list[str]] = []
    for item_id in item_ids.tolist():
        row = position.get(item_id)
        if row is None:
            token_lists.append([])
        else:
            token_lists.append(item_tokens(catalog.item_types[row], catalog.attributes[row]))
    matrix, tokens, idf = tfidf_matrix(token_lists)
    return ContentIndex(matrix.astype(np.float32), tokens, idf.astype(np.float32))


def vectorise(token_index: dict[str, int], idf: np.ndarray, tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A new item's unit TF-IDF vector in an existing index: (columns, weights); empty when none
    of its tokens can link it to anything."""
    columns = np.fromiter((token_index[t] for t in tokens if t in token_index), np.int64)
    weights = idf[columns].astype(np.float64)
    keep = weights > 0
    columns, weights = columns[keep], weights[keep]
    norm = float(np.sqrt((weights**2).sum()))
    return (columns, weights / norm) if norm > 0 else (columns[:0], weights[:0])


def tfidf_matrix(token_lists: list[list[str]]) -> tuple[csr_matrix, np.ndarray, np.ndarray]:
    """(items x tokens with rows L2-normalised, the tokens, their idf), idf = ln((1 + N) / (1 + df)).

    Tokens on a single item cannot link two items and would only dilute its norm, so they are
    dropped (idf 0); a token on every item gets idf 0 and drops out by itself.
    """
    vocabulary: dict[str, int] = {}
    indices = np.fromiter(
        (vocabulary.setdefault(t, len(vocabulary)) for tokens in token_lists for t in tokens), np.int64
    )
    lengths = np.fromiter((len(tokens) for tokens in token_lists), np.int64, len(token_lists))
    n_items = len(token_lists)
    df = np.bincount(indices, minlength=len(vocabulary)).astype(np.float64)
    idf = np.log((1.0 + n_items) / (1.0 + df))
    idf[df < 2] = 0.0
    rows = np.repeat(np.arange(n_items), lengths)
    matrix = csr_matrix((idf[indices], (rows, indices)), shape=(n_items, len(vocabulary)))
    matrix.eliminate_zeros()
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
    row_of_entry = np.repeat(np.arange(n_items), np.diff(matrix.indptr))
    matrix.data = matrix.data / norms[row_of_entry]
    tokens = np.empty(len(vocabulary), dtype=object)
    tokens[:] = list(vocabulary)
    return matrix, tokens, idf


def narrow_tokens(x: csr_matrix, pair_budget: int) -> np.ndarray:
    """Tokens to generate candidate pairs from: the rarest ones, up to the largest df whose
    pairs (sum of df^2 over tokens at most that common) fit the budget."""
    df = np.diff(x.tocsc().indptr)
    values, counts = np.unique(df, return_counts=True)
    within = np.cumsum(counts * values.astype(np.float64) ** 2) <= pair_budget
    max_df = values[within].max() if within.any() else 0
    return df <= max_df


def content_neighbours(
    index: ContentIndex,
    *,
    k: int,
    pair_budget: int,
    allowed_neighbours: np.ndarray | None = None,
) -> csr_matrix:
    """items x items float32 cosine top-k in [0, 1], never the item itself.

    Exact while every token fits pair_budget. Otherwise the common tokens (a big category, a
    popular tag) only re-rank: candidates are the best CANDIDATES_PER_K * k items by the rare
    tokens, then scored by the full cosine. An item described only by common tokens then has
    no content neighbours (serving blends in or falls back).
    """
    x = index.matrix.astype(np.float64)
    narrow = narrow_tokens(x, pair_budget)
    if narrow.all():
        return pairwise_top_k(x, x.T.tocsr(), k, _cosine, allowed_columns=allowed_neighbours)

    x_narrow = csr_matrix(x[:, narrow])
    narrow_by_token = x_narrow.T.tocsr()
    broad_ids, broad_weights = _padded_slots(csr_matrix(x[:, ~narrow]), MAX_COMMON_TOKENS)
    # A block of items at a time: CANDIDATES_PER_K * k candidates per item, rescored, cut to k
    # (a million items' candidates at once would be gigabytes).
    pieces = []
    for start in range(0, x.shape[0], CANDIDATE_BLOCK):
        stop = min(start + CANDIDATE_BLOCK, x.shape[0])
        candidates = pairwise_top_k(
            x_narrow[start:stop], narrow_by_token, CANDIDATES_PER_K * k, _cosine, allowed_columns=allowed_neighbours,
            row_offset=start,
        )
        rows = np.repeat(np.arange(start, stop), np.diff(candidates.indptr))
        scores = candidates.data.astype(np.float64)
        for first in range(0, len(rows), RESCORE_CHUNK):
            part = slice(first, first + RESCORE_CHUNK)
            scores[part] += _padded_dot(broad_ids, broad_weights, rows[part], candidates.indices[part])
        rescored = csr_matrix(
            (np.minimum(scores, 1.0), candidates.indices, candidates.indptr), shape=candidates.shape
        )
        pieces.append(top_k_per_row(rescored, k))
    return stack_rows(pieces, x.shape[0])


def _cosine(rows: np.ndarray, cols: np.ndarray, dots: np.ndarray) -> np.ndarray:
    return np.minimum(dots, 1.0)  # rows are unit vectors; min() only absorbs rounding


def _padded_slots(x: csr_matrix, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `width` heaviest entries as slot x row arrays (token ids, weights), -1 / 0 padded."""
    best = top_k_per_row(x, width)
    counts = np.diff(best.indptr)
    width = int(counts.max()) if counts.size else 0
    ids = np.full((width, x.shape[0]), -1, dtype=np.int64)
    weights = np.zeros((width, x.shape[0]), dtype=np.float64)
    rows = np.repeat(np.arange(x.shape[0]), counts)
    slots = np.arange(best.nnz) - np.repeat(best.indptr[:-1], counts)
    ids[slots, rows] = best.indices
    weights[slots, rows] = best.data
    return ids, weights


def _padded_dot(ids: np.ndarray, weights: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Dot products of row pairs held in slots: compare every slot of one with every slot of the
    other, touching only the (few) matches."""
    total = np.zeros(len(rows))
    right_ids = [np.where(slot >= 0, slot, -2)[cols] for slot in ids]  # padding must not match padding
    right_weights = [slot[cols] for slot in weights]
    for left_slot, left_weight_slot in zip(ids, weights):
        left_ids, left_weights = left_slot[rows], left_weight_slot[rows]
        for other_ids, other_weights in zip(right_ids, right_weights):
            hit = np.flatnonzero(left_ids == other_ids)
            total[hit] += left_weights[hit] * other_weights[hit]
    return total
