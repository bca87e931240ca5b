"""The memory budget of a train: checked from the load's counts before anything big is
allocated; a train that would not fit refuses, and the previous model keeps serving."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import pytest

from app.memory import peak_rss_mb
from app.settings import Settings
from app.storage.training_data import LoadCounts
from tests.factories import event, item
from tests.recommend.conftest import build_world, recommend
from workers import train_memory


async def test_a_train_over_its_memory_budget_refuses_and_the_previous_model_keeps_serving(
    client: Any, org: Any, drain: Any
) -> None:
    items = [item(f"p{i}", attributes={"category": f"c{i % 3}"}) for i in range(12)]
    events = [event(f"u{u}", "view", f"p{(u + k) % 12}") for u in range(15) for k in range(4)]
    version = await build_world(client, org, drain, items=items, events=events)

    assert (await client.post("/v1/models/train", headers=org.sk)).status_code == 202
    await drain(train_memory_budget_mb=1)
    status = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]
    assert status["last_error"].startswith("TrainingRefused: this train would need about"), status
    assert "LEHNZ_TRAIN_MEMORY_BUDGET_MB" in status["last_error"]
    assert status["model"]["version"] == version, "nothing new was published"
    assert (await recommend(client, org, strategy="popular"))["model_version"] == version


def test_the_estimate_grows_with_every_count_and_its_advice_fits_the_budget() -> None:
    base = LoadCounts(events=10_000_000, users=500_000, items=100_000, left_out=0, since=None)
    more = [LoadCounts(**{**base.as_dict(), name: value * 2}) for name, value in
            (("events", base.events), ("users", base.users), ("items", base.items))]
    assert all(train_memory.estimated_peak_mb(c) > train_memory.estimated_peak_mb(base) for c in more)
    budget = train_memory.estimated_peak_mb(base) / 2
    settings = Settings.model_construct(train_memory_budget_mb=int(budget))
    with pytest.raises(train_memory.TrainingRefused, match=r"set LEHNZ_TRAIN_MAX_EVENTS to about [\d,]+") as refused:
        train_memory.check(base, settings)
    advised = int(str(refused.value).split("to about ")[1].split(" ")[0].replace(",", ""))
    shrunk = LoadCounts(events=advised, users=base.users * advised // base.events, items=base.items, left_out=0,
                        since=None)
    assert 0 < advised < base.events and train_memory.estimated_peak_mb(shrunk) <= budget


def test_without_a_budget_a_train_may_use_half_the_memory_it_can_have() -> None:
    settings = Settings.model_construct(train_memory_budget_mb=0)
    assert train_memory.budget_mb(settings) == pytest.approx(train_memory.available_memory_bytes() / 2 / 2**20)
    assert train_memory.budget_mb(Settings.model_construct(train_memory_budget_mb=3000)) == 3000


def _child_peak_mb() -> float:
    return peak_rss_mb()


def test_a_spawned_training_child_reports_its_own_peak_not_its_parents() -> None:
    """The worker's executor spawns the training child; ru_maxrss would hand the child the RSS
    its parent had at the fork (a bench process holding a 5M-event world: +500 MB)."""
    held = np.ones(400 * 1024 * 1024 // 8)  # 400 MB resident in this (parent) process
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        child = pool.submit(_child_peak_mb).result(timeout=60)
    assert held.sum() > 0 and peak_rss_mb() > 400
    assert child < peak_rss_mb() - 300, (child, peak_rss_mb())
