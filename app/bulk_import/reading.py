"""Input files to staging rows: read JSONL or CSV (optionally gzipped), validate each record with
the api's schemas (ItemIn/UserIn/EventIn), turn it into a row for COPY, and drop what an erasure
forbids bringing back.

A file is read a chunk at a time (FileReader.next_chunk), in a worker thread one chunk ahead of
the writes (staging.py), so Python (validating) and Postgres (inserting) each keep a core busy.

Idempotent: events without an event_id get one derived from their content (content_event_id), so
a re-import is de-duplicated by UNIQUE (org_id, event_id).
"""

from __future__ import annotations

import csv
import gzip
import io
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import orjson

from app.erasure_rule import before_erasure

if TYPE_CHECKING:
    from pydantic import BaseModel, TypeAdapter

CHUNK_LINES = 10_000
MAX_LISTED_ERRORS = 50  # per file; every bad line is counted
JSON_COLUMNS = ("attributes", "context")  # CSV cells holding a JSON object


# --- records from a file ---------------------------------------------------------------------

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


# --- one file, a chunk at a time -------------------------------------------------------------


@dataclass
class Chunk:
    rows: list[tuple[Any, ...]]  # staging rows; none once the file has had a bad line
    lines: int  # records read so far
    position: int  # bytes of the (compressed) file read so far
    last: bool


class FileReader:
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

    def next_chunk(self) -> Chunk:
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
        return Chunk(rows, self.lines, self._raw.tell(), last)

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
