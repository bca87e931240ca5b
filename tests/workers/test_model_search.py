"""The model search and the data-relative clock as a shop meets them: events through the public
ingest endpoint, training through the worker, answers and the model status over HTTP."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from app import redis_keys
from tests.factories import create_org
from tests.recommend.conftest import build_world, ids, recommend

N_USERS, N_ITEMS, CLUSTERS, PER_USER = 120, 60, 4, 10


def items() -> list[dict[str, Any]]:
    return [{"item_id": f"p{i}", "item_type": "product", "status": "active",
             "attributes": {"title": f"thing {i}", "category": f"c{i % CLUSTERS}"}} for i in range(N_ITEMS)]


def history(end: datetime) -> list[dict[str, Any]]:
    """Each user browses their taste cluster over the 60 days before `end` (fixed seed)."""
    rng = np.random.default_rng(7)
    events = []
    for u in range(N_USERS):
        mine = [i for i in range(N_ITEMS) if i % CLUSTERS == u % CLUSTERS]
        picks = rng.choice(mine, PER_USER)
        ages = np.sort(rng.random(PER_USER))[::-1] * 60
        for item, age in zip(picks.tolist(), ages.tolist()):
            events.append({"user_id": f"u{u}", "event_family": "engagement", "event_name": "view",
                           "item_id": f"p{item}", "timestamp": (end - timedelta(days=age)).isoformat()})
    return events


async def status(client: Any, org: Any) -> dict[str, Any]:
    return (await client.get("/v1/models/status", headers=org.sk)).json()["data"]


async def test_a_history_stamped_years_ago_serves_the_same_top_10_as_the_same_history_today(
    client, db, drain
):
    today = datetime.now(UTC) - timedelta(hours=1)
    old, new = await create_org(db, name="Old shop"), await create_org(db, name="New shop")
    await build_world(client, old, drain, items=items(), events=history(datetime(2019, 5, 1, tzinfo=UTC)))
    await build_world(client, new, drain, items=items(), events=history(today))
    for u in range(0, N_USERS, 9):
        answers = []
        for org in (old, new):
            data = await recommend(client, org, strategy="personalized", user_id=f"u{u}", limit=10)
            assert data["mode"] == "behavioral", data  # a personal answer, not the fallback
            answers.append(ids(data))
        assert answers[0] == answers[1], f"u{u}"
    assert (await status(client, old))["quality"]["chosen"] == (await status(client, new))["quality"]["chosen"]


async def test_the_first_train_searches_and_the_status_says_what_was_chosen_and_how_good(
    client, org, drain
):
    await build_world(client, org, drain, items=items(), events=history(datetime.now(UTC)))
    quality = (await status(client, org))["quality"]
    assert quality["searched"] is True and quality["search_reason"] == "no search yet"
    assert quality["metric"] == "ndcg@10" and quality["holdout_users"] == N_USERS
    assert quality["chosen"]["model"] in ("als", "ease", "knn")
    assert quality["personalized_vs_popular"] > 1.5
    assert {c["model"] for c in quality["candidates"]} >= {"popular", "als", "ease", "knn"}
    for candidate in quality["candidates"]:
        assert 0 <= candidate["ndcg_at_10"] <= 1 and candidate["std_error"] >= 0


async def test_a_retrain_refits_the_winner_and_a_requested_search_runs_again(client, org, drain, redis):
    version = await build_world(client, org, drain, items=items(), events=history(datetime.now(UTC)))
    first = (await status(client, org))["quality"]
    assert (await client.post("/v1/models/train", headers=org.sk)).status_code == 202
    await drain()
    refit = await status(client, org)
    assert refit["model"]["version"] != version
    assert refit["quality"]["searched"] is False and refit["quality"]["searched_version"] == version
    assert refit["quality"]["chosen"] == first["chosen"]
    response = await client.post("/v1/models/train", headers=org.sk, json={"search": True})
    assert response.status_code == 202 and "model search" in response.json()["message"]
    assert await redis.hexists(redis_keys.SEARCH_REQUESTED, str(org.org_id))
    await drain()
    searched = await status(client, org)
    assert searched["quality"]["searched"] is True and searched["quality"]["search_reason"] == "requested"
    assert searched["quality"]["searched_version"] == searched["model"]["version"]
    assert not await redis.hexists(redis_keys.SEARCH_REQUESTED, str(org.org_id))


@pytest.mark.parametrize("body", [{"search": "yes"}, {"search": 1}, {"serach": True}, [True], "search"])
async def test_a_malformed_train_body_is_a_400_and_queues_nothing(client, org, redis, body):
    response = await client.post("/v1/models/train", headers=org.sk, json=body)
    assert response.status_code == 400, response.text
    assert response.json()["success"] is False
    assert not await redis.hexists(redis_keys.SEARCH_REQUESTED, str(org.org_id))
    assert not await redis.exists(f"arq:job:{redis_keys.train_job_id(str(org.org_id))}")


async def test_the_search_figures_reach_prometheus(client, org, drain, settings):
    await build_world(client, org, drain, items=items(), events=history(datetime.now(UTC)))
    quality = (await status(client, org))["quality"]
    text = (await client.get("/metrics")).text
    org_id = str(org.org_id)
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines()
             if line.startswith("lehnz_model_quality") and org_id in line}
    assert lines[f'lehnz_model_quality_ndcg_at_10{{org="{org_id}"}}'] == pytest.approx(quality["chosen"]["ndcg_at_10"])
    assert lines[f'lehnz_model_quality_vs_popular_ratio{{org="{org_id}"}}'] == pytest.approx(
        quality["personalized_vs_popular"])


async def test_quality_is_kept_per_version(client, org, drain, db):
    from sqlalchemy import select

    from app.storage.tables import TrainingRun

    await build_world(client, org, drain, items=items(), events=history(datetime.now(UTC)))
    assert (await client.post("/v1/models/train", headers=org.sk, json={"search": True})).status_code == 202
    await drain()
    async with db() as session:
        runs = (await session.scalars(select(TrainingRun).where(TrainingRun.org_id == org.org_id)
                                      .order_by(TrainingRun.id))).all()
    assert [r.quality["searched_version"] for r in runs] == [r.version for r in runs]


async def test_the_worlds_of_build_world_still_work(client, org, drain):
    # build_world is shared by every recommend test: its train must still succeed on tiny data.
    version = await build_world(client, org, drain, items=items()[:3], events=history(datetime.now(UTC))[:4])
    quality = (await status(client, org))["quality"]
    assert version and quality["candidates"] == [] and "too little data" in quality["note"]
