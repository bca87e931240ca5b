"""The migrations build exactly the schema the code declares (app/storage/tables.py)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.storage.db import create_engine
from app.storage.tables import Base
from tests.waiting import eventually


async def test_migrated_database_matches_the_models(settings: Any) -> None:
    engine = create_engine(settings.database_url or "", pool_size=1)
    try:
        async with engine.connect() as conn:
            differences = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
    finally:
        await engine.dispose()
    assert differences == []


async def test_every_index_is_valid(settings: Any) -> None:
    """An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index that compare_metadata
    cannot tell from a good one."""
    from sqlalchemy import text

    engine = create_engine(settings.database_url or "", pool_size=1)
    try:
        async with engine.connect() as conn:
            invalid = (await conn.execute(text(
                "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE NOT i.indisvalid"
            ))).scalars().all()
    finally:
        await engine.dispose()
    assert invalid == []


async def test_concurrent_migrations_wait_for_each_other_without_deadlock(settings: Any) -> None:
    """Several replicas running `lehnz migrate` at once, on a database at 0001 (so 0002 builds
    its index CONCURRENTLY while the others wait for the lock)."""
    import asyncio
    import sys
    import uuid

    from alembic.script import ScriptDirectory
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from app.storage.migrate import alembic_config

    server = make_url(settings.database_url or "")
    name = f"lehnz_migrate_{uuid.uuid4().hex[:10]}"
    admin = create_engine(server.render_as_string(hide_password=False), pool_size=1)
    async with admin.connect() as conn:
        await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    try:
        from alembic import command

        await asyncio.to_thread(command.upgrade, alembic_config(url), "0001")
        # The migrations' lock is held here until every run has connected and is trying for it,
        # so one builds the index CONCURRENTLY while the others still wait: the deadlock case.
        holder = create_engine(url, pool_size=1)
        async with holder.connect() as lock:
            await lock.execute(text("SELECT pg_advisory_lock(727274)"))
            await lock.commit()
            # Processes, like replicas (alembic's context is process-global).
            script = "import sys; from app.storage.migrate import upgrade_head; upgrade_head(sys.argv[1])"
            runs = [await asyncio.create_subprocess_exec(sys.executable, "-c", script, url,
                                                         stderr=asyncio.subprocess.PIPE) for _ in range(3)]

            async def all_trying() -> bool:  # connected: taking the lock is what each does first
                count = (await lock.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
                ), {"db": name})).scalar()
                await lock.commit()
                return count >= len(runs)

            await eventually(all_trying, timeout=60, interval=0.05)
            await lock.execute(text("SELECT pg_advisory_unlock(727274)"))
            await lock.commit()
        await holder.dispose()
        results = await asyncio.wait_for(asyncio.gather(*(run.communicate() for run in runs)), timeout=120)
        assert [run.returncode for run in runs] == [0, 0, 0], [err.decode()[-2000:] for _, err in results]
        engine = create_engine(url, pool_size=1)
        try:
            async with engine.connect() as conn:
                head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
                assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar() == head
                valid = (await conn.execute(text(
                    "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                    "WHERE c.relname = 'ix_served_org_user'"))).scalar()
                assert valid is True
        finally:
            await engine.dispose()
    finally:
        async with admin.connect() as conn:
            await (await conn.execution_options(isolation_level="AUTOCOMMIT")).execute(
                text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()
