"""Training inputs (the event log, the catalog, the parameters) and the user x item matrix.

The caller (the training job) reads the database, resolves aliases, drops inactive users and
looks up event weights; everything from here on is pure array code.

The log is compact, because a big tenant's train holds tens of millions of events: users,
items, event names, orders and sessions are integer codes (no Python object per event), and
each distinct string is kept once, in a vocabulary. About 36 bytes per event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

# TrainParams lives in app/ml/params.py (no numpy: the settings and the CLI import it).
from app.ml.params import TrainParams

# Decayed sums below this are rounding residue (e.g. add_to_cart 4 minus two removes of 2).
NUMERIC_ZERO = 1e-6
# The families `personalized` can be served by (see personalization.py); "auto" = not chosen yet.
# The per-event columns of an InteractionLog (the rest are its vocabularies).
EVENT_COLUMNS = ("users", "items", "names", "weights", "is_purchase", "timestamps", "orders", "sessions",
                 "prices", "is_exposure")


@dataclass(frozen=True, eq=False)
class InteractionLog:
    """One row per event that names an item, already alias-resolved and weighted."""

    users: np.ndarray  # int32: position of the canonical user id in user_vocab
    items: np.ndarray  # int32: position in item_vocab
    names: np.ndarray  # int16: position of the event name in name_vocab
    weights: np.ndarray  # float32, signed (remove_from_cart is negative)
    is_purchase: np.ndarray  # bool: the event completes an order
    timestamps: np.ndarray  # float64 unix seconds
    orders: np.ndarray  # int32 order code (equal ids, equal codes), -1 where missing
    sessions: np.ndarray  # int32 session code, -1 where missing
    prices: np.ndarray  # float32, NaN where missing
    is_exposure: np.ndarray  # bool: an impression (exposure family), weight 0, demotion signal
    user_vocab: np.ndarray = field(repr=False)  # object (str)
    item_vocab: np.ndarray = field(repr=False)  # object (str)
    name_vocab: np.ndarray = field(repr=False)  # object (str)

    def __post_init__(self) -> None:
        lengths = {name: len(getattr(self, name)) for name in EVENT_COLUMNS}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"InteractionLog columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.users)

    # The ids themselves, one object per event: for tests and small tools, never for a train.
    @property
    def user_ids(self) -> np.ndarray:
        return self.user_vocab[self.users]

    @property
    def item_ids(self) -> np.ndarray:
        return self.item_vocab[self.items]

    @property
    def event_names(self) -> np.ndarray:
        return self.name_vocab[self.names]

    @classmethod
    def build(
        cls,
        *,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        event_names: Sequence[str],
        weights: Sequence[float],
        timestamps: Sequence[float],
        is_purchase: Sequence[bool] | None = None,
        order_ids: Sequence[str | None] | None = None,
        session_ids: Sequence[str | None] | None = None,
        prices: Sequence[float] | None = None,
        quantities: Sequence[float] | None = None,
        is_exposure: Sequence[bool] | None = None,
    ) -> InteractionLog:
        """Columns from plain sequences, with the documented defaults for the optional ones.
        `quantities` is accepted for callers that have them; no model reads them."""
        n = len(user_ids)
        users, user_vocab = vocabulary(user_ids)
        items, item_vocab = vocabulary(item_ids)
        names, name_vocab = vocabulary(event_names)
        purchase = (name_vocab == "purchase")[names] if is_purchase is None else np.asarray(is_purchase, dtype=bool)
        return cls(
            users=users,
            items=items,
            names=names.astype(np.int16),
            weights=np.asarray(weights, dtype=np.float32).reshape(n),
            is_purchase=purchase.reshape(n),
            timestamps=np.asarray(timestamps, dtype=np.float64).reshape(n),
            orders=factorize(order_ids)[0] if order_ids is not None else np.full(n, -1, np.int32),
            sessions=factorize(session_ids)[0] if session_ids is not None else np.full(n, -1, np.int32),
            prices=np.asarray(prices if prices is not None else np.full(n, np.nan), dtype=np.float32).reshape(n),
            is_exposure=np.asarray(is_exposure if is_exposure is not None else np.zeros(n, bool), dtype=bool),
            user_vocab=user_vocab,
            item_vocab=item_vocab,
            name_vocab=name_vocab,
        )

    @classmethod
    def empty(cls) -> InteractionLog:
        return cls.build(user_ids=[], item_ids=[], event_names=[], weights=[], timestamps=[])


def vocabulary(values: Sequence[str] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int32 code per value, the distinct values sorted): codes index the vocabulary."""
    if len(values) == 0:
        return np.zeros(0, np.int32), np.empty(0, dtype=object)
    vocab, codes = np.unique(object_array(values), return_inverse=True)
    return codes.astype(np.int32).reshape(len(values)), vocab


def factorize(values: Iterable[Any]) -> tuple[np.ndarray, int]:
    """int32 codes in order of first appearance; None and "" (missing) get -1."""
    codes: dict[object, int] = {}
    out = np.fromiter(
        (-1 if v is None or v == "" else codes.setdefault(v, len(codes)) for v in values), np.int32
    )
    return out, len(codes)


@dataclass(frozen=True, eq=False)
class CatalogSnapshot:
    """The items table at train time."""

    item_ids: np.ndarray  # object (str)
    item_types: np.ndarray  # object (str)
    statuses: np.ndarray  # object: active | inactive | deleted
    # Free JSON per item: a list of dicts, or a JsonColumn that decodes one item when asked
    # (a million items' dicts would hold about a gigabyte through the whole train).
    attributes: Sequence[dict[str, Any] | None]
    created_at: np.ndarray  # float64 unix seconds

    def __post_init__(self) -> None:
        lengths = {name: len(getattr(self, name)) for name in self.__dataclass_fields__}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"CatalogSnapshot columns differ in length: {lengths}")

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def build(
        cls,
        item_ids: Sequence[str],
        *,
        attributes: Sequence[dict[str, Any]] | None = None,
        item_types: Sequence[str] | None = None,
        statuses: Sequence[str] | None = None,
        created_at: Sequence[float] | None = None,
    ) -> CatalogSnapshot:
        """Columns from plain sequences; omitted ones mean product, active, no attributes, t=0."""
        n = len(item_ids)
        return cls(
            item_ids=object_array(item_ids),
            item_types=object_array(item_types if item_types is not None else ["product"] * n),
            statuses=object_array(statuses if statuses is not None else ["active"] * n),
            attributes=list(attributes) if attributes is not None else [{} for _ in range(n)],
            created_at=np.asarray(created_at if created_at is not None else np.zeros(n), dtype=np.float64),
        )

    @classmethod
    def empty(cls) -> CatalogSnapshot:
        return cls.build([])


@dataclass(frozen=True)
class EncodedLog:
    """The log with users and items replaced by row/column numbers of the training matrix.

    `users` and `items` are int32 (half the memory of int64 at tens of millions of events):
    code that combines them into one key (user * n_items + item) must widen to int64 first
    (pair_keys does).
    """

    log: InteractionLog
    users: np.ndarray  # int32 row per event
    items: np.ndarray  # int32 column per event
    n_users: int
    n_items: int
    item_ids: np.ndarray = field(repr=False)  # the item universe, column order
    user_ids: np.ndarray = field(repr=False)  # the user universe, row order


def pair_keys(rows: np.ndarray, cols: np.ndarray, n_cols: int) -> np.ndarray:
    """int64 row * n_cols + col: one sortable key per (row, col), never overflowing int32."""
    return rows.astype(np.int64) * max(n_cols, 1) + cols


def item_universe(log: InteractionLog, catalog: CatalogSnapshot) -> np.ndarray:
    """Catalog items plus items only seen in events, sorted so columns are deterministic."""
    seen = log.item_vocab[_used(log.items, len(log.item_vocab))]
    return object_array(sorted(set(catalog.item_ids.tolist()) | set(seen.tolist())))


def user_universe(log: InteractionLog) -> np.ndarray:
    used = _used(log.users, len(log.user_vocab))
    if used.all() and _strictly_sorted(log.user_vocab):
        return log.user_vocab  # the loader's vocabulary already is the universe: no copy
    return object_array(sorted(set(log.user_vocab[used].tolist())))


def index_of(ids: np.ndarray) -> dict[str, int]:
    return {value: position for position, value in enumerate(ids.tolist())}


def encode_log(log: InteractionLog, item_ids: np.ndarray, user_ids: np.ndarray) -> EncodedLog:
    """Map ids to positions; events naming an id outside the universes are dropped. Only the
    vocabularies are looked up (one dict lookup per distinct id), never the events."""
    items = _recode(log.items, log.item_vocab, item_ids)
    users = _recode(log.users, log.user_vocab, user_ids)
    known = (items >= 0) & (users >= 0)
    if not known.all():
        log = _take(log, known)
        items, users = items[known], users[known]
    return EncodedLog(log, users, items, len(user_ids), len(item_ids), item_ids, user_ids)


def _recode(codes: np.ndarray, vocab: np.ndarray, universe: np.ndarray) -> np.ndarray:
    """codes into `vocab` as positions in `universe` (-1: not in it)."""
    if vocab is universe or (len(vocab) == len(universe) and bool(np.all(vocab == universe))):
        return codes.astype(np.int32, copy=False)
    index = index_of(universe)
    position = np.fromiter((index.get(v, -1) for v in vocab.tolist()), np.int32, len(vocab))
    return position[codes] if codes.size else np.zeros(0, np.int32)


def _used(codes: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(codes, minlength=n)[:n] > 0 if codes.size else np.zeros(n, dtype=bool)


def _strictly_sorted(values: np.ndarray) -> bool:
    return values.size < 2 or bool(np.all(values[1:] > values[:-1]))


def data_now(timestamps: np.ndarray, now: float) -> float:
    """The learned models' age origin: the newest event, or `now` if that is earlier (an event
    stamped in the future by a wrong client clock must not make every real event look old)."""
    if not timestamps.size:
        return now
    newest = float(timestamps.max())
    if not np.isfinite(newest):  # NaN or inf in a bad log (the train rejects it): the slow way
        finite = timestamps[np.isfinite(timestamps)]
        newest = float(finite.max()) if finite.size else now
    return min(newest, now)


def decay(timestamps: np.ndarray, now: float, half_life_s: float) -> np.ndarray:
    """0.5 ** (age / half_life); events stamped in the future count as fresh, not as boosted.
    One array is allocated (the result): the log's columns can be tens of millions long."""
    out = np.subtract(now, timestamps, dtype=np.float64)
    np.maximum(out, 0.0, out=out)
    out /= -half_life_s
    return np.exp2(out, out=out)


def decayed_matrix(encoded: EncodedLog, params: TrainParams) -> csr_matrix:
    """users x items float32: per pair the signed, decayed weight sum, clipped at zero."""
    log = encoded.log
    values = decay(log.timestamps, params.age_origin, params.decay_half_life_s)
    values *= log.weights
    summed = coo_matrix(
        (values, (encoded.users, encoded.items)), shape=(encoded.n_users, encoded.n_items)
    ).tocsr()  # duplicates are summed here, so removes cancel earlier adds
    del values
    summed.data[~(summed.data > NUMERIC_ZERO)] = 0.0
    summed.eliminate_zeros()
    matrix = csr_matrix(summed, dtype=np.float32)
    del summed
    matrix.sort_indices()
    return matrix


def build_matrix(
    log: InteractionLog, item_index: dict[str, int], user_index: dict[str, int], params: TrainParams
) -> csr_matrix:
    """users x items training matrix (see decayed_matrix) for the given id -> position maps."""
    item_ids = _ids_by_position(item_index)
    user_ids = _ids_by_position(user_index)
    return decayed_matrix(encode_log(log, item_ids, user_ids), params)


def _ids_by_position(index: dict[str, int]) -> np.ndarray:
    ids = np.empty(len(index), dtype=object)
    for value, position in index.items():
        ids[position] = value
    return ids


def _take(log: InteractionLog, mask: np.ndarray) -> InteractionLog:
    columns = {name: getattr(log, name)[mask] for name in EVENT_COLUMNS}
    return InteractionLog(**columns, user_vocab=log.user_vocab, item_vocab=log.item_vocab, name_vocab=log.name_vocab)


def object_array(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = list(values) if not isinstance(values, np.ndarray) else values
    return array
