"""`lehnz import`: bulk load items, users and events from JSONL or CSV files (docs/import.md).

Imported whenever `lehnz` runs, so the top level stays light: pydantic, SQLAlchemy, asyncpg,
redis and rich are imported inside the functions that use them.

Design:
- One transaction for the whole command, rolled back if any line of any file is bad: nothing is
  ever half-imported, and each file is read and validated once (validating everything first and
  importing in a second pass would cost a second read and validation of every line; a bad file
  costs only the rollback). Files are read in the order items, users, events, in chunks
  validated with the api's schemas (ItemIn/UserIn/EventIn) and COPYed into temp staging tables,
  which are merged with INSERT ... SELECT ... ON CONFLICT (app/storage/bulk.py): events chunk by
  chunk as they are read, users and items once every file has been read clean. After the first
  bad line the remaining lines and files are only validated, so every bad line is reported at once.
- Validation runs in a worker thread one chunk ahead of the writes, so Python (validating) and
  Postgres (inserting) each keep a core busy.
- Idempotent: events without an event_id get one derived from their content (uuid5 over the org
  and a canonical serialisation), so a re-import is de-duplicated by UNIQUE (org_id, event_id);
  items and users whose content is unchanged are not rewritten (app/storage/bulk.py).
- Redis is told afterwards (catalog version, new-data counter, aliases); if it is down the import
  still stands and a warning says what the api and scheduler will pick up late.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import io
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import orjson
import typer

from app.erasure_rule import before_erasure

if TYPE_CHECKING:
    from pydantic import BaseModel, TypeAdapter
    from rich.progress import Progress, TaskID
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.settings import Settings

KINDS = ("items", "users", "events")  # the order files are loaded in
CHUNK_LINES = 10_000
MAX_LISTED_ERRORS = 50  # per file; every bad line is counted
JSON_COLUMNS = ("attributes", "context")  # CSV cells holding a JSON object


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
    """Nothing was imported. `errors` lists `file:line: field: issue`, at most MAX_LISTED_ERRORS per file."""

    def __init__(self, errors: list[str], *, bad_lines: int) -> None:
        super().__init__(f"{bad_lines} bad line(s); nothing was imported")
        self.errors = errors
        self.bad_lines = bad_lines


# --- reading files ---------------------------------------------------------------------------

# (line number, the record as a dict, None) or (line number, None, "field: issue")
Parsed = tuple[int, dict[str, Any] | None, str | None]


def file_format(path: Path) -> str:
    """`jsonl` or `csv` from the name: .jsonl/.ndjson/.csv, each optionally followed by .gz."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    last = suffixes[-1] if suffixes else ""
    if last in (".jsonl", ".ndjson"):
        return "jsonl"
    if last == ".csv":
        return "csv"
    raise ValueError(f"{path}: unknown format; name the file .jsonl, .ndjson or .csv (optionally .gz)")


def _jsonl_records(stream: BinaryIO) -> Iterator[Parsed]:
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            yield number, None, f"(record): invalid JSON ({exc})"
            continue
        if isinstance(record, dict):
            yield number, record, None
        else:
            yield number, None, "(record): must be a JSON object"


def _csv_records(text: io.TextIOBase) -> Iterator[Parsed]:
    """Header row names the fields; an empty cell is an absent field; attributes/context hold JSON."""
    reader = csv.reader(text)
    header = [name.strip() for name in next(reader, [])]
    for name in header:
        column, dot, _ = name.partition(".")
        if dot and column in JSON_COLUMNS:
            yield 1, None, f"{name}: nested fields go in one `{column}` column holding a JSON object"
            return
    json_columns = [name for name in JSON_COLUMNS if name in header]
    start = reader.line_num + 1
    for row in reader:
        number, start = start, reader.line_num + 1  # a quoted cell may span lines: report the first
        if not row:
            continue
        if len(row) != len(header):
            yield number, None, f"(record): {len(row)} cells, the header has {len(header)}"
            continue
        record = {name: cell for name, cell in zip(header, row, strict=True) if cell != ""}
        problem = None
        for name in json_columns:
            if name in record:
                try:
                    record[name] = orjson.loads(record[name])
                except orjson.JSONDecodeError as exc:
                    problem = f"{name}: invalid JSON ({exc})"
                    break
        yield (number, None, problem) if problem else (number, record, None)


# --- validation and rows for COPY ----------------------------------------------------------


def _schema(kind: str) -> type[BaseModel]:
    from app.schemas.ingest import EventIn, ItemIn, UserIn

    schemas: dict[str, type[BaseModel]] = {"items": ItemIn, "users": UserIn, "events": EventIn}
    return schemas[kind]


def _validate(
    kind: str, adapter: TypeAdapter[list[Any]], chunk: list[tuple[int, dict[str, Any]]], *, explain: bool
) -> tuple[list[Any], list[tuple[int, str]]]:
    """Validate a chunk as one list (fast); on failure name each bad line's problems (or just count
    them once `explain` is off)."""
    from pydantic import ValidationError

    from app.errors import ValidationFailed
    from app.schemas.validation import validate_object

    try:
        return adapter.validate_python([record for _, record in chunk]), []
    except ValidationError as exc:
        bad = sorted({int(err["loc"][0]) for err in exc.errors(include_url=False, include_input=False)})
    problems: list[tuple[int, str]] = []
    model = _schema(kind)
    for index in bad:
        line, record = chunk[index]
        if not explain:
            problems.append((line, ""))
            continue
        try:
            validate_object(model, record)
        except ValidationFailed as failed:
            issues = failed.error if isinstance(failed.error, list) else []
            explained = "; ".join(f"{e['field']}: {e['issue']}" for e in issues)
            problems.append((line, explained or failed.message))
    return [], problems


def content_event_id(org_id: uuid.UUID, event: Any) -> uuid.UUID:
    """A deterministic id for an event that has none: the same event imported twice (from JSONL or
    CSV, with any key order or timestamp spelling) gets the same id, so the re-import adds nothing.
    Two identical lines (same user, name, item, context and timestamp) are one event."""
    canonical = orjson.dumps(
        [
            event.user_id,
            event.event_family,
            event.event_name,
            event.item_id,
            event.previous_user_id,
            event.recommendation_id,
            event.context,
            event.timestamp.timestamp() if event.timestamp else None,
        ],
        option=orjson.OPT_SORT_KEYS,
    )
    return uuid.uuid5(org_id, canonical.decode())


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _row_builder(kind: str, org_id: uuid.UUID, received_at: float) -> Callable[[int, Any], tuple[Any, ...]]:
    """Validated record -> staging row (app/storage/bulk.STAGING column order), via the api's own
    normalisation (to_record). Items and users keep their line number: the last line for an id wins."""
    if kind == "items":

        def item_row(line: int, item: Any) -> tuple[Any, ...]:
            r = item.to_record(received_at=received_at)
            attributes = _json_text(r["attributes"])
            return line, r["item_id"], r["item_type"], r["status"], attributes, r["created_at"]

        return item_row
    if kind == "users":

        def user_row(line: int, user: Any) -> tuple[Any, ...]:
            r = user.to_record(received_at=received_at)
            return line, r["user_id"], r["status"], _json_text(r["attributes"]), r["created_at"]

        return user_row

    def event_row(line: int, event: Any) -> tuple[Any, ...]:
        default_id = None if event.event_id else content_event_id(org_id, event)
        r = event.to_record(received_at=received_at, default_id=default_id)
        return (r["event_id"], r["user_id"], r["event_family"], r["event_name"], r["item_id"],
                r["previous_user_id"], r["recommendation_id"], _json_text(r["context"]), r["occurred_at"])

    return event_row


# --- the import ------------------------------------------------------------------------------


@dataclass
class _Chunk:
    rows: list[tuple[Any, ...]]  # staging rows; none once the file has had a bad line
    lines: int  # records read so far
    position: int  # bytes of the (compressed) file read so far
    last: bool


class _FileReader:
    """Reads, validates and converts one file, a chunk at a time.

    `next_chunk` runs in a worker thread while the event loop writes the previous chunk to
    Postgres, so validation (CPU, here) and COPY/INSERT (CPU, in Postgres) overlap.
    """

    def __init__(
        self, kind: str, path: Path, *, org_id: uuid.UUID, received_at: float, erased: dict[str, float]
    ) -> None:
        from pydantic import TypeAdapter

        self.kind, self.path, self.received_at = kind, path, received_at
        self.erased = erased  # user id -> time of its erasure request (events and users files)
        self.size = path.stat().st_size
        self.lines = 0
        self.bad_lines = 0
        self.erased_rows = 0
        self._problems: list[tuple[int, str]] = []
        # (occurred_at, line, previous_user_id, user_id) of each identify event, for stitching
        self.identifies: list[tuple[float, int, str, str]] = []
        # A list of a schema chosen at run time, which no static type can name.
        self._adapter: TypeAdapter[list[Any]] = TypeAdapter(
            list[_schema(kind)]  # type: ignore[arg-type, misc]
        )
        self._to_row = _row_builder(kind, org_id, received_at)
        self._raw = path.open("rb")
        stream: BinaryIO = self._raw
        if path.suffix.lower() == ".gz":
            unzipped = gzip.GzipFile(fileobj=self._raw, mode="rb")
            stream = io.BufferedReader(unzipped, 1 << 20)
        self._stream: BinaryIO | io.TextIOWrapper = stream
        if file_format(path) == "csv":
            self._stream = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
            self._records = _csv_records(self._stream)
        else:
            self._records = _jsonl_records(stream)

    def _fail(self, line: int, issue: str) -> None:
        self.bad_lines += 1
        if issue and len(self._problems) < MAX_LISTED_ERRORS:
            self._problems.append((line, issue))

    @property
    def errors(self) -> list[str]:
        """`file:line: field: issue`, in line order."""
        return [f"{self.path}:{line}: {issue}" for line, issue in sorted(self._problems)]

    def next_chunk(self) -> _Chunk:
        chunk: list[tuple[int, dict[str, Any]]] = []
        last = False
        try:
            for line, record, problem in self._records:  # a generator: resumes where the last chunk ended
                self.lines += 1
                if record is None:
                    self._fail(line, problem or "")
                    continue
                chunk.append((line, record))
                if len(chunk) == CHUNK_LINES:
                    break
            else:
                last = True
        except (UnicodeDecodeError, EOFError, OSError, csv.Error) as exc:  # gzip.BadGzipFile is an OSError
            self._fail(self.lines + 1, f"(file): cannot be read ({exc})")
            last = True
        rows: list[tuple[Any, ...]] = []
        if chunk:
            explain = len(self._problems) < MAX_LISTED_ERRORS
            valid, problems = _validate(self.kind, self._adapter, chunk, explain=explain)
            for line, issue in problems:
                self._fail(line, issue)
            if not self.bad_lines:  # after a bad line the file only gets validated: nothing will be kept
                rows = [self._to_row(line, model) for (line, _), model in zip(chunk, valid, strict=True)]
                if self.kind == "events":
                    rows = self._events(chunk, valid, rows)
                elif self.kind == "users":
                    rows = self._users(rows)
        return _Chunk(rows, self.lines, self._raw.tell(), last)

    def _events(self, chunk: list[tuple[int, Any]], valid: list[Any], rows: list[tuple[Any, ...]]) -> list[Any]:
        """Drops events of erased users that happened before the erasure (an old export must not
        bring their history back; the ingest worker applies the same tombstones) and notes the
        identifies; an identify linking an erased id goes too. Row layout: _row_builder's
        event_row (row[1] user_id, row[5] previous_user_id, row[-1] occurred_at)."""
        kept: list[tuple[Any, ...]] = []
        for (line, _), e, row in zip(chunk, valid, rows, strict=True):
            if self._erased_after(row[1], row[-1]) or (row[5] and self._erased_after(row[5], row[-1])):
                continue
            kept.append(row)
            if e.event_name == "identify":
                self.identifies.append((row[-1], line, e.previous_user_id, e.user_id))
        return kept

    def _users(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Drops profiles of erased users created before the erasure: an old export must not
        bring the profile back; an account created after it (the id reused) is imported.
        Row layout: _row_builder's user_row (row[1] user_id, row[-1] created_at)."""
        return [row for row in rows if not self._erased_after(row[1], row[-1])]

    def _erased_after(self, user_id: str, at: float) -> bool:
        """True (and counted) when the user was erased at or after `at`, or after this import
        started: the rule every path follows (app/erasure_rule.py)."""
        if before_erasure(self.erased.get(user_id), received_at=self.received_at, happened_at=at):
            self.erased_rows += 1
            return True
        return False

    def close(self) -> None:
        self._stream.close()
        self._raw.close()


async def _load_file(
    session: AsyncSession,
    reader: _FileReader,
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
    reading: asyncio.Future[_Chunk] | None = asyncio.ensure_future(asyncio.to_thread(reader.next_chunk))
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
                reader = _FileReader(kind, path, org_id=org_id, received_at=received_at, erased=erased)
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


async def _erasures(settings: Settings, org_id: str) -> dict[str, float]:
    """User id -> time of its erasure request (the tombstones DELETE /v1/users/{id} leaves in
    Redis). Without them an import could bring an erased user's history or profile back, so an
    events or users import refuses to run rather than guess."""
    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    from app import redis_keys
    from app.errors import ServiceUnavailable

    client = Redis.from_url(settings.redis_url or "", socket_connect_timeout=2, socket_timeout=30)
    try:
        tombstones = await client.hgetall(redis_keys.erased(org_id))
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable(
            f"cannot read the erasure records in Redis ({exc}); importing events or users without them "
            "could bring back users erased with DELETE /v1/users/{id}. Nothing was imported: "
            "start Redis and run the import again"
        ) from None
    finally:
        await client.aclose()
    return {user.decode(): float(at) for user, at in tombstones.items()}


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


# --- the command -----------------------------------------------------------------------------

_FILE: dict[str, Any] = {"exists": True, "dir_okay": False, "readable": True}
_Items = Annotated[Path | None, typer.Option(help="items file (the fields of items/upsert)", **_FILE)]
_Users = Annotated[Path | None, typer.Option(help="users file (the fields of users/upsert)", **_FILE)]
_Events = Annotated[Path | None, typer.Option(help="events file (the fields of events/ingest)", **_FILE)]


def import_command(
    org: Annotated[str, typer.Option(help="the organisation: its slug (tenant id) or its org_id")],
    items: _Items = None,
    users: _Users = None,
    events: _Events = None,
) -> None:
    """Bulk load items, users and events from JSONL or CSV files, all in one transaction.

    Formats, by file name: .jsonl or .ndjson (one JSON object per line, blank lines ignored) or
    .csv (a header row naming the fields; an empty cell is an absent field; attributes and
    context are one column each holding a JSON object, e.g. {"price": 9.5}); any of them may be
    gzipped (.jsonl.gz, .csv.gz). Fields and rules are the API's (docs/integration.md, "Batches
    and validation"; integer ids are their decimal strings); unknown fields and columns are ignored.

    Every line is validated: if any line of any file is bad, each bad line is reported as
    file:line: field: issue and nothing at all is imported. Files are loaded in the order
    items, users, events. See docs/import.md.

    Re-running the same files changes nothing: events without event_id get one derived from
    their content (identical lines are one event), and items and users are rewritten only
    when their content differs. Identify events link ids exactly as the API does.
    """
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from app import logs
    from app.cli import _migrate, connected_settings, console
    from app.errors import AppError
    from app.settings import get_settings

    if items is None and users is None and events is None:
        console.print("[red]error:[/] nothing to import: give --items, --users and/or --events")
        raise typer.Exit(code=2)
    for path in (items, users, events):
        if path is not None:
            try:
                file_format(path)
            except ValueError as exc:
                console.print(f"[red]error:[/] {escape(str(exc))}")
                raise typer.Exit(code=2) from None

    logs.configure(get_settings().log_level)
    with connected_settings() as settings:
        _migrate(settings)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[size]}"),
            TextColumn("{task.fields[rows]:>12,} records"),
            TimeElapsedColumn(),
        )
        try:
            with Progress(*columns, console=console) as progress:
                result = asyncio.run(
                    run_import(settings, org=org, items=items, users=users, events=events, progress=progress)
                )
        except ImportFailed as failed:
            for line in failed.errors:
                console.print(escape(line), highlight=False)
            listed = len(failed.errors)
            more = f" ({failed.bad_lines - listed} more not listed)" if failed.bad_lines > listed else ""
            console.print(f"[red]error:[/] {failed.bad_lines} bad line(s){more}; nothing was imported")
            raise typer.Exit(code=1) from None
        except AppError as exc:
            console.print(f"[red]error:[/] {escape(exc.message)}")
            raise typer.Exit(code=1) from None
    _print_summary(result)


def _print_summary(result: ImportResult) -> None:
    from rich.markup import escape

    from app.cli import console, out
    from app.cli_tables import Column, print_table

    numbers = ("lines", "inserted", "updated", "unchanged", "seconds", "rows/s")
    columns = [Column("file", identifier=True), Column("kind"),
               *(Column(name, justify="right") for name in numbers)]
    rows = [[str(f.path), f.kind, f"{f.lines:,}", f"{f.inserted:,}",
             f"{f.updated:,}" if f.kind != "events" else "-", f"{f.unchanged:,}", f"{f.seconds:.1f}",
             f"{f.rows_per_s:,.0f}"] for f in result.files]
    print_table(out, columns, rows, title="lehnz import", drop=False)  # file names and counts are never cut
    events = result.summary("events")
    if events is not None:
        out.print(f"identity aliases set or re-pointed: {len(result.aliases):,}")
        if events.erased:
            out.print(f"events skipped, of users erased after they happened: {events.erased:,}")
    users = result.summary("users")
    if users is not None and users.erased:
        out.print(f"users skipped, erased after they were created: {users.erased:,}")
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
