"""The api's model cache: orgs that get data after the process started are loaded before their
first request."""

from __future__ import annotations

from typing import Any

from tests.factories import create_org, event, item
from tests.waiting import eventually

ITEMS = "/v1/ingest/items/upsert"


async def test_an_org_created_after_start_is_loaded_before_its_first_request(
    settings: Any, client: Any, db: Any, drain: Any
) -> None:
    from app.main import create_app

    # An api of its own (the process under test), with room for every org of the test session;
    # the shared client only feeds data in.
    application = create_app(settings.model_copy(update={"model_cache_orgs": 100_000}))
    async with application.router.lifespan_context(application):
        models = application.state.lehnz.models
        org = await create_org(db, name="late arrival")
        assert models.peek(org.org_id) is None
        await client.post(ITEMS, json=[item("a"), item("b")], headers=org.sk)
        await client.post("/v1/ingest/events/ingest", json=[event("u", "view", "a")], headers=org.pk)
        await drain()

        async def loaded() -> bool:
            snapshot = models.peek(org.org_id)
            return snapshot is not None and len(snapshot.catalog) == 2

        await eventually(loaded, timeout=10, interval=0.05)  # no request for this org was made

        await client.post("/v1/models/train", headers=org.sk)
        await drain()
        version = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]["model"]["version"]

        async def serving_the_model() -> bool:
            snapshot = models.peek(org.org_id)
            return snapshot is not None and snapshot.model_version == version

        await eventually(serving_the_model, timeout=10, interval=0.05)


async def test_a_deleted_org_leaves_the_cache_of_every_api_process(
    settings: Any, client: Any, db: Any, redis: Any, drain: Any
) -> None:
    from app.main import create_app
    from app.model_store import ModelStore
    from app.offboarding import delete_org

    application = create_app(settings.model_copy(update={"model_cache_orgs": 100_000}))
    async with application.router.lifespan_context(application):
        models = application.state.lehnz.models
        org = await create_org(db, name="short stay")
        await client.post(ITEMS, json=[item("a")], headers=org.sk)
        await drain()
        await eventually(lambda: _loaded(models, org.org_id), timeout=10, interval=0.05)

        # An update of the org already running when it is deleted (its version keys vanish with
        # it) must not install it again afterwards.
        models.notice(org.org_id, model_version=None, catalog_version=b"changed")
        assert models.loading(org.org_id)
        await delete_org(db, redis, ModelStore(settings.models_path), org.slug)

        async def dropped_and_settled() -> bool:
            return models.peek(org.org_id) is None and not models.loading(org.org_id)

        await eventually(dropped_and_settled, timeout=10, interval=0.05)
        models.adopt([org.org_id])  # a worker's late SADD of the org cannot bring it back either
        assert models.peek(org.org_id) is None and not models.loading(org.org_id)


async def _loaded(models: Any, org_id: str) -> bool:
    return models.peek(org_id) is not None


async def test_the_preload_goes_on_when_an_org_is_deleted_while_it_loads(
    settings: Any, client: Any, db: Any, drain: Any
) -> None:
    import asyncio

    from app.model_store import ModelStore
    from app.recommend.model_cache import ModelCache

    gone, kept = await create_org(db, name="gone at start"), await create_org(db, name="kept at start")
    for org in (gone, kept):
        await client.post(ITEMS, json=[item("a")], headers=org.sk)
    await drain()
    # A cache of its own (no sync loop to load the orgs first), preloading as at start-up; the
    # first org is deleted while it loads.
    models = ModelCache(db, ModelStore(settings.models_path), max_orgs=10)
    preloading = asyncio.create_task(models.preload([gone.org_id, kept.org_id]))
    await eventually(lambda: _is_loading(models, gone.org_id), timeout=10, interval=0.001)
    models.forget([gone.org_id])
    await asyncio.wait_for(preloading, timeout=10)
    assert models.peek(gone.org_id) is None
    assert models.peek(kept.org_id) is not None


async def _is_loading(models: Any, org_id: str) -> bool:
    return models.loading(org_id)


async def test_a_new_model_alone_does_not_re_read_the_catalog_but_a_catalog_change_does(
    settings: Any, client: Any, db: Any, drain: Any
) -> None:
    """A swap re-orders the catalog it has; re-reading the items table (with its overlap of a
    few seconds) on every swap re-applied every item of a bulk import, a million rows per new
    model. A change to the items bumps the catalog version, and that is read."""
    import dataclasses
    import uuid

    from sqlalchemy import text

    from app.main import create_app
    from app.model_store import ModelStore
    from app.recommend.model_cache import ModelCache

    application = create_app(settings.model_copy(update={"model_cache_orgs": 100_000}))
    async with application.router.lifespan_context(application):
        models = application.state.lehnz.models
        org = await create_org(db, name="swaps often")
        await client.post(ITEMS, json=[item("a", attributes={"colour": "red"}), item("b")], headers=org.sk)
        await client.post("/v1/ingest/events/ingest", json=[event("u", "view", "a"), event("u", "view", "b")],
                          headers=org.pk)
        await drain()

        async def serving_a_new_model(than: str | None) -> str:
            await client.post("/v1/models/train", headers=org.sk)
            await drain()
            status = (await client.get("/v1/models/status", headers=org.sk)).json()["data"]["model"]
            assert status["version"] != than

            async def serving() -> bool:
                snapshot = models.peek(org.org_id)
                return snapshot is not None and snapshot.model_version == status["version"]

            await eventually(serving, timeout=20, interval=0.05)
            return str(status["version"])

        first = await serving_a_new_model(None)
        # A cache of its own (no sync loop: nothing notices a change before the test says so).
        own = ModelCache(db, ModelStore(settings.models_path), max_orgs=10)
        assert (await own.get(org.org_id)).model_version == first
        # A row changed behind the api's back (no catalog version bump), just now: inside the
        # overlap an items re-read would cover.
        async with db() as session, session.begin():
            await session.execute(text("UPDATE items SET attributes = '{\"colour\": \"blue\"}', updated_at = now() "
                                       "WHERE org_id = :org AND item_id = 'a'"), {"org": uuid.UUID(org.org_id)})
        second = await serving_a_new_model(first)
        snapshot = models.peek(org.org_id)
        assert snapshot is not None
        assert snapshot.catalog.attributes[snapshot.catalog.index["a"]] == {"colour": "red"}

        # The hourly full reload, when it falls on a swap, is what the new model is served with.
        loaded = own.peek(org.org_id)
        assert loaded is not None
        own._snapshots[org.org_id] = dataclasses.replace(loaded, catalog_loaded_at=0.0)
        own.notice(org.org_id, model_version=second.encode(), catalog_version=None)

        async def swapped() -> bool:
            current = own.peek(org.org_id)
            return current is not None and current.model_version == second and not own.loading(org.org_id)

        await eventually(swapped, timeout=20, interval=0.05)
        reloaded = own.peek(org.org_id)
        assert reloaded is not None and reloaded.catalog_loaded_at > 0
        assert reloaded.catalog.attributes[reloaded.catalog.index["a"]] == {"colour": "blue"}
        await own.close()

        await client.post(ITEMS, json=[item("c")], headers=org.sk)  # bumps the catalog version
        await drain()

        async def has_c() -> bool:
            current = models.peek(org.org_id)
            return current is not None and "c" in current.catalog.index

        await eventually(has_c, timeout=10, interval=0.05)


async def test_a_cold_load_knows_its_catalog_version_and_its_first_update_reads_nothing_again(
    settings: Any, client: Any, db: Any, redis: Any, drain: Any
) -> None:
    """An api process starting after a bulk import loads every item; its first update then
    re-read every item written within the overlap (a million, after an import) unless the load
    knew which catalog version it had read."""
    import uuid

    from sqlalchemy import text

    from app.model_store import ModelStore
    from app.recommend.model_cache import ModelCache
    from app.storage.redis_state import signals

    org = await create_org(db, name="starts after an import")
    await client.post(ITEMS, json=[item("a", attributes={"colour": "red"}), item("b")], headers=org.sk)
    await drain()
    version = await signals.catalog_version(redis, org.org_id)
    assert version is not None
    cache = ModelCache(db, ModelStore(settings.models_path), max_orgs=10,
                       catalog_version=lambda org_id: signals.catalog_version(redis, org_id))
    assert (await cache.get(org.org_id)).catalog_version == version
    # Behind the api's back (no version bump), just now: an overlap re-read would pick it up.
    async with db() as session, session.begin():
        await session.execute(text("UPDATE items SET attributes = '{\"colour\": \"blue\"}', updated_at = now() "
                                   "WHERE org_id = :org AND item_id = 'a'"), {"org": uuid.UUID(org.org_id)})
    cache.notice(org.org_id, model_version=None, catalog_version=version)
    assert not cache.loading(org.org_id)  # nothing to do: the catalog it has is that version's
    snapshot = cache.peek(org.org_id)
    assert snapshot is not None and snapshot.catalog.attributes[snapshot.catalog.index["a"]] == {"colour": "red"}

    await client.post(ITEMS, json=[item("c")], headers=org.sk)  # a change: the version moves
    await drain()
    cache.notice(org.org_id, model_version=None, catalog_version=await signals.catalog_version(redis, org.org_id))

    async def has_c() -> bool:
        current = cache.peek(org.org_id)
        return current is not None and "c" in current.catalog.index

    await eventually(has_c, timeout=10, interval=0.05)
    await cache.close()
