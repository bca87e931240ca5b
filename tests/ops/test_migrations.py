"""The migrations build exactly the schema the code declares (app/storage/tables.py)."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.storage.db import create_engine
from app.storage.tables import Base


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
