"""Train/test splits, as boolean "is test" masks over interaction rows (seeded, deterministic)."""

from __future__ import annotations

import numpy as np


def random_folds(n_rows: int, folds: int, seed: int) -> list[np.ndarray]:
    """k-fold cross-validation: one test mask per fold; every row is tested exactly once."""
    order = np.random.default_rng(seed).permutation(n_rows)
    masks = []
    for part in np.array_split(order, folds):
        mask = np.zeros(n_rows, dtype=bool)
        mask[part] = True
        masks.append(mask)
    return masks


def random_holdout(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """A uniformly random `fraction` of the rows (rounded down) as the test mask."""
    mask = np.zeros(n_rows, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n_rows)[: int(fraction * n_rows)]] = True
    return mask


def last_per_user(users: np.ndarray, timestamps: np.ndarray, fraction: float) -> np.ndarray:
    """Each user's latest round(fraction * n) interactions (ties by row order) as the test mask.

    round is half-up (0.5 -> 1), and a user with 2+ interactions always keeps at least one for
    training and gives at least one to test.
    """
    order = np.lexsort((np.arange(len(users)), timestamps, users))  # by user, then time, then row
    sorted_users = users[order]
    starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    ends = np.r_[starts[1:], len(order)]
    mask = np.zeros(len(users), dtype=bool)
    for start, end in zip(starts.tolist(), ends.tolist()):
        count = end - start
        if count < 2:
            continue
        n_test = min(max(int(np.floor(fraction * count + 0.5)), 1), count - 1)
        mask[order[end - n_test:end]] = True
    return mask


def latest_per_user(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """Each user's single latest interaction (ties by row order: the later row) as the test
    mask, for users with 2+ interactions (leave-last-one-out)."""
    order = np.lexsort((np.arange(len(users)), timestamps, users))
    sorted_users = users[order]
    last = np.r_[sorted_users[1:] != sorted_users[:-1], True]
    first = np.r_[True, sorted_users[1:] != sorted_users[:-1]]
    mask = np.zeros(len(users), dtype=bool)
    mask[order[last & ~first]] = True  # a user's only interaction stays in training
    return mask
