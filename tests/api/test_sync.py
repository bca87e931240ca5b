"""The api's sync loop (app/api/sync.py) against real Redis: which orgs it starts loading."""

from __future__ import annotations

from typing import Any

from tests.factories import create_org, item
from tests.waiting import eventually

ITEMS = "/v1/ingest/items/upsert"


async def test_an_org_that_gets_data_while_another_is_deleted_is_still_loaded(
    settings: Any, client: Any, db: Any, redis: Any, drain: Any
) -> None:
    """Between two ticks one org joins the set of orgs with data and another leaves it (deleted):
    the set's size is what it was, and the new org must be loaded all the same."""
    from app.api.sync import SyncLoop
    from app.main import create_app
    from app.model_store import ModelStore
    from app.offboarding import delete_org

    # An api of its own whose loop ticks once at start-up and then sleeps: this test ticks.
    application = create_app(settings.model_copy(update={"model_cache_orgs": 100_000, "sync_interval_s": 3600}))
    async with application.router.lifespan_context(application):
        state = application.state.lehnz
        leaving = await create_org(db, name="leaving")
        assert (await client.post(ITEMS, json=[item("a")], headers=leaving.sk)).status_code == 202
        await drain()
        sync = SyncLoop(state)
        await sync.tick()  # what the loop last saw

        arriving = await create_org(db, name="arriving")
        assert (await client.post(ITEMS, json=[item("a")], headers=arriving.sk)).status_code == 202
        await drain()
        await delete_org(db, redis, ModelStore(settings.models_path), leaving.slug)
        assert state.models.peek(arriving.org_id) is None and not state.models.loading(arriving.org_id)

        await sync.tick()

        async def loaded() -> bool:
            snapshot = state.models.peek(arriving.org_id)
            return snapshot is not None and len(snapshot.catalog) == 1

        await eventually(loaded, timeout=10, interval=0.05)  # no request for it was made
        assert state.models.peek(leaving.org_id) is None
