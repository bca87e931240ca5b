"""The memory a train will need, estimated from its counts and checked before the heavy part runs.

The training child learns the counts of its window (events, users, items) from the load's first
pass, before anything big is allocated. If the estimated peak is above the budget, the train
refuses with an error that says what to change (recorded as the run's `last_error`; the previous
model keeps serving) instead of being OOM-killed halfway, after squeezing the api and Postgres.

The estimate is linear in the counts. Its coefficients are the fit of the training process's
peak RSS measured by `lehnz bench --train-scale` on the reference machine (docs/benchmarks.md,
"Big tenants"), rounded up; `lehnz bench --train-scale` reports estimate and measurement side by
side, so a drift shows.
"""

from __future__ import annotations

import math
from pathlib import Path

import psutil

from app.settings import Settings
from app.storage.training_data import LoadCounts

MB = 1024 * 1024
# Interpreter, numpy/scipy/implicit and the model parts that do not grow with the data.
FIXED_MB = 400.0
# The compact log (~36 bytes), the training matrix, and the largest per-event temporaries
# (sessions, the pair tables' keys, the history bit sets) alive at the same time. Measured as
# the child's own VmHWM (the earlier fit, 110, was to ru_maxrss, which carried the parent's
# RSS): 759 / 1,042 / 2,087 / 4,943 MB at 1M / 5M / 20M / 50M events (50k to 2.06M users),
# growing ~75 bytes per event at the top (co-engagement and sessions set the peak there, within
# 1% of each other); with 85 the estimate is 29-56% above every measured peak.
BYTES_PER_EVENT = 85.0
# User factors (32 final, 64 for the model search's ALS candidates) and per-user vectors.
BYTES_PER_USER = 700.0
# Item factors, the neighbour tables (K per item each), the content index, per-item vectors.
BYTES_PER_ITEM = 6_000.0
# The budget when none is set: this share of the machine's (or the container's) memory.
DEFAULT_SHARE = 0.5


class TrainingRefused(RuntimeError):
    """The train would need more memory than it may use; nothing was trained or written."""


def estimated_peak_mb(counts: LoadCounts) -> float:
    return FIXED_MB + (BYTES_PER_EVENT * counts.events + BYTES_PER_USER * counts.users
                       + BYTES_PER_ITEM * counts.items) / MB


def budget_mb(settings: Settings) -> float:
    """LEHNZ_TRAIN_MEMORY_BUDGET_MB, else DEFAULT_SHARE of the memory this process can have."""
    if settings.train_memory_budget_mb > 0:
        return float(settings.train_memory_budget_mb)
    return DEFAULT_SHARE * available_memory_bytes() / MB


def available_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when the process runs under a smaller one."""
    total = int(psutil.virtual_memory().total)
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def check(counts: LoadCounts, settings: Settings) -> float:
    """The estimate (MB), or TrainingRefused when it is above the budget."""
    needed, budget = estimated_peak_mb(counts), budget_mb(settings)
    if needed <= budget:
        return needed
    fitting = max_events_within(budget, counts)
    advice = (f"set LEHNZ_TRAIN_MAX_EVENTS to about {fitting:,} (the most recent events)" if fitting > 0
              else "this catalog alone does not fit")
    raise TrainingRefused(
        f"this train would need about {needed:,.0f} MB ({counts.events:,} events, {counts.users:,} users, "
        f"{counts.items:,} items) and may use {budget:,.0f} MB (LEHNZ_TRAIN_MEMORY_BUDGET_MB): {advice}, or "
        "raise the budget; the previous model keeps serving"
    )


def max_events_within(budget: float, counts: LoadCounts) -> int:
    """About how many events fit the budget, users growing in proportion to events."""
    per_event = BYTES_PER_EVENT + BYTES_PER_USER * counts.users / max(counts.events, 1)
    room = (budget - FIXED_MB) * MB - BYTES_PER_ITEM * counts.items
    return max(int(math.floor(room / per_event / 1e5) * 1e5), 0)
