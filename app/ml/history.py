"""Which items each user has had which kind of event for: the trained half of the request filter
`exclude_interacted` (API.md section 5; the real-time half is the user's recent activity).

One users x items CSR whose values are bit sets of event names: bit b is set when the user has
an event named `names[b]` for the item. The 31 most frequent names get a bit each; any other name
shares the last bit, so asking to exclude a rare name also excludes items that only have other
rare names (never fewer items than asked). Impressions count: `true` means "any event".
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

from app.ml.interactions import EncodedLog

NAMED_BITS = 31
OTHER_BIT = np.uint32(1 << NAMED_BITS)
ANY = np.uint32(0xFFFFFFFF)


def interacted_items(encoded: EncodedLog) -> tuple[csr_matrix, np.ndarray]:
    """(users x items uint32 bit sets, the event name of each named bit, most frequent first)."""
    log = encoded.log
    counts = np.bincount(log.names, minlength=len(log.name_vocab)) if len(log) else np.zeros(len(log.name_vocab))
    present = np.flatnonzero(counts > 0)
    names = log.name_vocab[present].astype(str)
    by_frequency = np.lexsort((names, -counts[present]))[:NAMED_BITS]
    bit_of_code = np.full(len(log.name_vocab), OTHER_BIT, dtype=np.uint32)
    bit_of_code[present[by_frequency]] = np.left_shift(np.uint32(1), np.arange(len(by_frequency), dtype=np.uint32))
    shape = (encoded.n_users, encoded.n_items)
    # One entry per (user, item) and bit: which pairs have an event of each bit's names. Bits
    # are distinct powers of two, so adding the per-bit tables ORs them; nothing is sorted per
    # event (tens of millions of events would need gigabytes of sort keys).
    matrix = csr_matrix(shape, dtype=np.uint32)  # type: ignore[arg-type]  # scipy-stubs rejects the documented (n, m) empty-shape form
    for bit in np.unique(bit_of_code[present]).tolist():
        events = np.isin(log.names, np.flatnonzero(bit_of_code == bit))
        pairs = coo_matrix(
            (np.ones(int(np.count_nonzero(events)), np.uint32), (encoded.users[events], encoded.items[events])),
            shape=shape,
        ).tocsr()
        pairs.data[:] = bit
        matrix = matrix + pairs
    matrix.sort_indices()
    return csr_matrix(matrix, dtype=np.uint32), names[by_frequency].astype(object)


def name_bits(names: np.ndarray, wanted: frozenset[str] | None) -> np.uint32:
    """The bits that stand for these event names (None: every event) in a bundle's table."""
    if wanted is None:
        return ANY
    position = {name: b for b, name in enumerate(names.tolist())}
    mask = np.uint32(0)
    for name in wanted:
        b = position.get(name)
        mask |= np.uint32(1 << b) if b is not None else OTHER_BIT
    return mask
