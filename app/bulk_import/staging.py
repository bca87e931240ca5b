"""The import itself (run_import): every file into Postgres in one transaction, then Redis told.

- One transaction for the whole command, rolled back if any line of any file is bad: nothing is
  ever half-imported, and each file is read and validated once (validating everything first and
  importing in a second pass would cost a second read and validation of every line; a bad file
  costs only the rollback). Files are read in the order items, users, events (reading.py) and
  COPYed into temp staging tables, which are merged with INSERT ... SELECT ... ON CONFLICT
  (app/storage/bulk.py): events chunk by chunk as they are read, users and items once every file
  has been read clean. After the first bad line the remaining lines and files are only
  validated, so every bad line is reported at once.
- Items and users whose content is unchanged are not rewritten (app/storage/bulk.py), so a
  re-import changes nothing.
- Redis is read first (the erasure tombstones: no events or users import without them) and told
  afterwards (catalog version, new-data counter, aliases) through the functions the ingest worker
  uses; if it is down then, the import still stands and a warning says what the api and the
  scheduler will pick up late.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from app.bulk_import.reading import Chunk, FileReader, file_format

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.settings import Settings

KINDS = ("items", "users", "events")  # the order files are loaded in


# --- results ---------------------------------------------------------------------------------


@dataclass
class FileSummary:
    kind: str
    path: Path
    lines: int = 0  # records read (blank lines are not records)
    inserted: int = 0
    updated: int = 0
    erased: int = 0  # events / user rows of users erased (DELETE /v1/users/{id}) after their time
    seconds: float = 0.0

    @property
    def unchanged(self) -> int:
        """Records that changed nothing: identical to what is stored, or repeated in the file."""
        return self.lines - self.inserted - self.updated - self.erased

    @property
    def rows_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ImportResult:
    files: list[FileSummary]
    aliases: dict[str, str] = field(default_factory=dict)  # alias -> canonical id, set or changed
    warnings: list[str] = field(default_factory=list)

    def summary(self, kind: str) -> FileSummary | None:
        return next((f for f in self.files if f.kind == kind), None)


class ImportFailed(Exception):
    """Nothing was imported. `errors` lists `file:line: field: issue`, at most
    reading.MAX_LISTED_ERRORS per file."""

    def __init__(self, errors: list[str], *, bad_lines: int) -> None:
        super().__init__(f"{bad_lines} bad line(s); nothing was imported")
        self.errors = errors
        self.bad_lines = bad_lines


# --- Postgres --------------------------------------------------------------------------------


async def _load_file(
    session: AsyncSession,
    reader: FileReader,
    *,
    org_id: uuid.UUID,
    write: bool,
    progress: Progress | None,
) -> FileSummary:
    """Validate the whole file and, while `write` and the file is clean, COPY it into its staging
    table; events are also inserted chunk by chunk (Postgres inserts one chunk while the next one
    is validated). Items and users are merged by run_import, once every file is known to be clean."""
    from app.storage import bulk

    summary = FileSummary(reader.kind, reader.path)
    started = time.perf_counter()
    if write:
        await bulk.create_staging(session, reader.kind)
    task: TaskID | None = None
    if progress is not None:
        task = progress.add_task(f"{reader.kind} {reader.path.name}", total=reader.size, rows=0, size="")
    reading: asyncio.Future[Chunk] | None = asyncio.ensure_future(asyncio.to_thread(reader.next_chunk))
    try:
        while reading is not None:
            chunk = await reading
            reading = None if chunk.last else asyncio.ensure_future(asyncio.to_thread(reader.next_chunk))
            if write and chunk.rows:
                await bulk.copy_to_staging(session, reader.kind, chunk.rows)
                if reader.kind == "events":
                    summary.inserted += await bulk.merge_staged_events(
                        session, org_id, received_at=reader.received_at
                    )
            if progress is not None and task is not None:
                progress.update(task, completed=chunk.position, rows=chunk.lines,
                                size=f"{chunk.position / 1e6:,.1f}/{reader.size / 1e6:,.1f} MB")
    finally:
        if reading is not None:  # a write failed: let the thread finish its chunk before closing its file
            with contextlib.suppress(Exception):
                await reading
    summary.lines = reader.lines
    summary.erased = reader.erased_rows
    summary.seconds = time.perf_counter() - started
    return summary


async def run_import(
    settings: Settings,
    *,
    org: str,
    items: Path | None = None,
    users: Path | None = None,
    events: Path | None = None,
    progress: Progress | None = None,
) -> ImportResult:
    """Import the given files into the org in one transaction; raise ImportFailed (having imported
    nothing) if any line of any file is invalid. Then tell Redis, if it is reachable."""
    from app.storage import bulk, identity, orgs
    from app.storage.db import create_engine, create_session_factory

    given = {"items": items, "users": users, "events": events}
    sources = [(kind, path) for kind in KINDS if (path := given[kind]) is not None]
    for _, path in sources:
        file_format(path)  # an unknown name fails before any work
    received_at = time.time()
    engine = create_engine(settings.database_url or "", pool_size=1)
    try:
        async with create_session_factory(engine)() as session, session.begin():
            org_id = (await orgs.find_org(session, org)).id
            erased = await _erasures(settings, str(org_id)) if events is not None or users is not None else {}
            result = ImportResult([])
            errors: list[str] = []
            bad_lines = 0
            identifies: list[tuple[float, int, str, str]] = []
            for kind, path in sources:
                reader = FileReader(kind, path, org_id=org_id, received_at=received_at, erased=erased)
                try:
                    # After a bad file the others are only validated, to report every bad line at once.
                    loaded = await _load_file(
                        session, reader, org_id=org_id, write=not bad_lines, progress=progress
                    )
                finally:
                    reader.close()
                result.files.append(loaded)
                bad_lines += reader.bad_lines
                errors.extend(reader.errors)
                identifies.extend(reader.identifies)
            if bad_lines:
                raise ImportFailed(errors, bad_lines=bad_lines)  # leaving the block rolls everything back

            # Items last, just before the commit: api replicas re-read the catalog from the newest
            # updated_at they have seen (minus a few seconds), so a row must not carry a time
            # much older than the moment it becomes visible.
            for kind in ("events", "users", "items"):
                summary = result.summary(kind)
                if summary is None:
                    continue
                started = time.perf_counter()
                task: TaskID | None = None
                if progress is not None:
                    step = "linking identities" if kind == "events" else f"merging {kind}"
                    task = progress.add_task(step, total=None, rows=summary.lines, size="")
                if kind == "events":
                    identifies.sort()  # the worker's order: time of the identify, then file order
                    links = [(previous_id, user_id) for _, _, previous_id, user_id in identifies]
                    result.aliases = await identity.stitch_all(session, org_id, links)
                else:
                    merge = bulk.merge_items if kind == "items" else bulk.merge_users
                    merged = await merge(session, org_id, received_at=received_at)
                    summary.inserted, summary.updated = merged.inserted, merged.updated
                summary.seconds += time.perf_counter() - started
                if progress is not None and task is not None:
                    progress.update(task, total=1, completed=1)
    finally:
        await engine.dispose()
    result.warnings.extend(await _notify_redis(settings, str(org_id), result))
    return result


# --- Redis, before and after -----------------------------------------------------------------


async def _erasures(settings: Settings, org_id: str) -> dict[str, float]:
    """User id -> time of its erasure request (the tombstones DELETE /v1/users/{id} leaves in
    Redis). Without them an import could bring an erased user's history or profile back, so an
    events or users import refuses to run rather than guess."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from app.errors import ServiceUnavailable
    from app.storage.redis_state import tombstones

    client = Redis.from_url(settings.redis_url or "", socket_connect_timeout=2, socket_timeout=30)
    try:
        return await tombstones.of_org(client, org_id)
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(
            f"cannot read the erasure records in Redis ({exc}); importing events or users without them "
            "could bring back users erased with DELETE /v1/users/{id}. Nothing was imported: "
            "start Redis and run the import again"
        ) from None
    finally:
        await client.aclose()


async def _notify_redis(settings: Settings, org_id: str, result: ImportResult) -> list[str]:
    """What the worker does after persisting: api replicas refresh the catalog, the scheduler sees
    new events, real-time strategies resolve the new aliases. Postgres already holds it all."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from app.recommend import realtime
    from app.storage.redis_state import signals

    items, events = result.summary("items"), result.summary("events")
    changed_items = items.inserted + items.updated if items is not None else 0
    catalog_changed = changed_items > 0
    # New or changed items are new data for the scheduled retrain, as in the ingest worker.
    new_data = (events.inserted if events is not None else 0) + changed_items
    if not (new_data or result.aliases):
        return []
    client = Redis.from_url(settings.redis_url or "", socket_connect_timeout=2, socket_timeout=30)
    try:
        async with client.pipeline(transaction=False) as pipe:
            # The same updates, by the same functions, as the ingest worker's after it persists.
            realtime.identities_stitched(pipe, org_id, result.aliases, keep=settings.recent_activity_len)
            signals.data_persisted(pipe, org_id, catalog_changed=catalog_changed, new_data=new_data)
            await pipe.execute()
    except (RedisError, OSError) as exc:
        return [
            (
                f"the import is committed, but Redis is unreachable ({exc}): api replicas pick up catalog "
                "changes at their next full refresh, the scheduler does not know about the new data "
                "(run `lehnz train`), and real-time strategies do not see the new aliases"
            )
        ]
    finally:
        await client.aclose()
    return []
