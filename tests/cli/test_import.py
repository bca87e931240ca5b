"""`lehnz import`: bulk loading from JSONL/CSV (optionally gzipped) into real Postgres, then Redis."""

from __future__ import annotations

import csv
import gzip
import io
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select

from app import redis_keys
from app.bulk_import.reading import CHUNK_LINES
from app.bulk_import.staging import ImportFailed, run_import
from app.errors import NotFound, ServiceUnavailable
from app.settings import Settings
from app.storage.identity import all_aliases
from app.storage.tables import Event, IdentityAlias, Item, User
from tests.factories import OrgKeys, event, item, user

EVENTS = "/v1/ingest/events/ingest"
USERS = "/v1/ingest/users/upsert"


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    """JSONL or CSV by the name (.gz compresses); CSV holds attributes/context as JSON text."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".csv"):
        columns = sorted({key for record in records for key in record})
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(columns)
        for record in records:
            writer.writerow([_cell(record.get(column)) for column in columns])
        data = buffer.getvalue().encode()
    else:
        data = b"".join(orjson.dumps(record) + b"\n" for record in records)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return orjson.dumps(value).decode() if isinstance(value, (dict, list)) else str(value)


def at(n: int) -> str:
    return f"2026-03-01T10:{n // 60:02d}:{n % 60:02d}Z"


def some_items(n: int) -> list[dict[str, Any]]:
    return [
        item(f"sku-{i}", attributes={"price": 10 + i, "brand": "Acme", "tags": ["a", "b"]},
             **({"created_at": "2026-01-02T03:04:05Z"} if i % 2 else {}))
        for i in range(n)
    ]


def some_events(n: int) -> list[dict[str, Any]]:
    """Half with the client's event_id, half without (those get one derived from their content)."""
    return [
        event(f"u{i % 7}", "view", f"sku-{i % 5}", timestamp=at(i % 3600), context={"session_id": f"s{i}"},
              **({"event_id": str(uuid.uuid4())} if i % 2 else {}))
        for i in range(n)
    ]


async def count(db: Any, table: Any, org: OrgKeys) -> int:
    async with db() as session:
        return int(await session.scalar(
            select(func.count()).select_from(table).where(table.org_id == uuid.UUID(org.org_id))
        ))


async def stamps(db: Any, table: Any, key: Any, org: OrgKeys) -> dict[str, Any]:
    async with db() as session:
        rows = await session.execute(
            select(key, table.updated_at, table.created_at).where(table.org_id == uuid.UUID(org.org_id))
        )
        return {row[0]: (row[1], row[2]) for row in rows}


async def new_data(redis: Any, org: OrgKeys) -> int:
    return int(await redis.hget(redis_keys.NEW_DATA, org.org_id) or 0)


async def catalog_version(redis: Any, org: OrgKeys) -> int:
    return int(await redis.get(redis_keys.catalog_version(org.org_id)) or 0)


async def test_file_with_one_bad_line_imports_nothing_and_names_the_line(
    settings: Settings, org: OrgKeys, db: Any, redis: Any, tmp_path: Path
) -> None:
    # More than two chunks, the bad line in the last one: the chunks before it were already
    # written, and must be rolled back with everything else (the items file is valid).
    records = some_events(2 * CHUNK_LINES + 500)
    bad_line = 2 * CHUNK_LINES + 123
    records[bad_line - 1]["event_family"] = "bogus"
    events_file = write(tmp_path / "events.jsonl", records)
    items_file = write(tmp_path / "items.jsonl", some_items(10))

    with pytest.raises(ImportFailed) as failed:
        await run_import(settings, org=org.slug, items=items_file, events=events_file)

    assert failed.value.bad_lines == 1
    assert len(failed.value.errors) == 1
    assert failed.value.errors[0].startswith(f"{events_file}:{bad_line}: event_family: ")
    assert await count(db, Event, org) == 0
    assert await count(db, Item, org) == 0
    assert await new_data(redis, org) == 0
    assert await catalog_version(redis, org) == 0


async def test_every_bad_line_of_every_file_is_reported(
    settings: Settings, org: OrgKeys, db: Any, tmp_path: Path
) -> None:
    items_file = tmp_path / "items.csv"
    items_file.write_text(
        "item_id,item_type,status,attributes\n"
        'a,product,active,"{""price"": 1}"\n'
        "\n"
        "b,product,gone,\n"
        'c,product,active,"{not json"\n'
        "d,product\n"
    )
    events_file = tmp_path / "events.ndjson"
    events_file.write_bytes(
        orjson.dumps(event("u1", "view", "a")) + b"\n"
        + b"{oops\n"
        + b"\n"
        + b"[1, 2]\n"
        + orjson.dumps(event("u1", "identify")) + b"\n"
    )

    with pytest.raises(ImportFailed) as failed:
        await run_import(settings, org=org.slug, items=items_file, events=events_file)

    lines = [error.split(": ", 1)[0] for error in failed.value.errors]
    assert lines == [f"{items_file}:4", f"{items_file}:5", f"{items_file}:6",
                     f"{events_file}:2", f"{events_file}:4", f"{events_file}:5"]
    assert "status: " in failed.value.errors[0]
    assert "attributes: invalid JSON" in failed.value.errors[1]
    assert "identify events require previous_user_id" in failed.value.errors[-1]
    assert await count(db, Item, org) == 0 and await count(db, Event, org) == 0


async def test_dotted_attribute_columns_are_refused_with_a_pointer_to_the_json_column(
    settings: Settings, org: OrgKeys, tmp_path: Path
) -> None:
    items_file = tmp_path / "items.csv"
    items_file.write_text("item_id,item_type,status,attributes.price\na,product,active,3\n")
    with pytest.raises(ImportFailed) as failed:
        await run_import(settings, org=org.slug, items=items_file)
    assert failed.value.errors == [(f"{items_file}:1: attributes.price: nested fields go in one `attributes` "
                                    "column holding a JSON object")]


async def test_a_truncated_gzip_file_imports_nothing(
    settings: Settings, org: OrgKeys, db: Any, tmp_path: Path
) -> None:
    whole = write(tmp_path / "full.jsonl.gz", some_events(3000)).read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImportFailed) as failed:
        await run_import(settings, org=org.slug, events=cut)
    (error,) = failed.value.errors
    assert error.startswith(f"{cut}:") and "(file): cannot be read" in error
    assert await count(db, Event, org) == 0


async def test_import_twice_is_import_once(
    settings: Settings, org: OrgKeys, db: Any, redis: Any, tmp_path: Path
) -> None:
    items_file = write(tmp_path / "items.jsonl", some_items(30))
    users_file = write(tmp_path / "users.csv", [user(f"u{i}", attributes={"plan": "pro"}) for i in range(7)])
    events = some_events(400) + [event("u1", "identify", previous_user_id="anon-1", timestamp=at(5))]
    events_file = write(tmp_path / "events.jsonl.gz", events)

    first = await run_import(settings, org=org.slug, items=items_file, users=users_file, events=events_file)
    assert [(f.kind, f.lines, f.inserted, f.updated) for f in first.files] == [
        ("items", 30, 30, 0), ("users", 7, 7, 0), ("events", 401, 401, 0)
    ]
    assert first.warnings == []
    items_before = await stamps(db, Item, Item.item_id, org)
    users_before = await stamps(db, User, User.user_id, org)
    async with db() as session:
        event_ids = set((await session.scalars(
            select(Event.event_id).where(Event.org_id == uuid.UUID(org.org_id))
        )).all())
    version, fresh = await catalog_version(redis, org), await new_data(redis, org)

    second = await run_import(settings, org=org.slug, items=items_file, users=users_file, events=events_file)

    assert [(f.lines, f.inserted, f.updated, f.unchanged) for f in second.files] == [
        (30, 0, 0, 30), (7, 0, 0, 7), (401, 0, 0, 401)
    ]
    assert second.aliases == {}
    assert await stamps(db, Item, Item.item_id, org) == items_before  # not even rewritten
    assert await stamps(db, User, User.user_id, org) == users_before
    async with db() as session:
        assert set((await session.scalars(
            select(Event.event_id).where(Event.org_id == uuid.UUID(org.org_id))
        )).all()) == event_ids
    assert (await catalog_version(redis, org), await new_data(redis, org)) == (version, fresh)


async def test_items_are_stamped_with_the_time_they_become_visible_not_the_import_start(
    settings: Settings, org: OrgKeys, db: Any, tmp_path: Path
) -> None:
    # Api replicas re-read catalog rows from the newest updated_at they have seen (minus 5 s): rows
    # stamped at the start of a long import would be missed. Items are merged after the events.
    before = time.time()
    result = await run_import(settings, org=org.slug, items=write(tmp_path / "items.jsonl", some_items(3)),
                              events=write(tmp_path / "events.jsonl", some_events(CHUNK_LINES + 10)))
    events_took = result.files[1].seconds
    assert events_took > 0
    stamped = await stamps(db, Item, Item.item_id, org)
    assert min(updated_at.timestamp() for updated_at, _ in stamped.values()) >= before + events_took


async def test_a_changed_line_rewrites_only_its_row_and_the_last_line_for_an_id_wins(
    settings: Settings, org: OrgKeys, db: Any, tmp_path: Path
) -> None:
    records = some_items(5)
    await run_import(settings, org=org.slug, items=write(tmp_path / "v1.jsonl", records))
    before = await stamps(db, Item, Item.item_id, org)

    records[2] = {**records[2], "status": "inactive"}
    records.append(item("sku-4", attributes={"price": 99}))  # repeats sku-4: this later line wins
    result = await run_import(settings, org=org.slug, items=write(tmp_path / "v2.jsonl", records))

    (summary,) = result.files
    assert (summary.lines, summary.inserted, summary.updated, summary.unchanged) == (6, 0, 2, 4)
    after = await stamps(db, Item, Item.item_id, org)
    assert {key for key in after if after[key][0] != before[key][0]} == {"sku-2", "sku-4"}
    assert after["sku-4"][1] == before["sku-4"][1]  # created_at of the first upsert is kept
    async with db() as session:
        row = await session.get(Item, (uuid.UUID(org.org_id), "sku-4"))
        assert row is not None and row.attributes == {"price": 99}
        row = await session.get(Item, (uuid.UUID(org.org_id), "sku-2"))
        assert row is not None and row.status == "inactive"


FORMATS = ["items.jsonl", "items.ndjson", "items.csv", "items.jsonl.gz", "items.csv.gz"]


@pytest.mark.parametrize("name", FORMATS)
async def test_every_format_loads_the_same_rows(
    settings: Settings, org: OrgKeys, db: Any, tmp_path: Path, name: str
) -> None:
    records = some_items(4)
    result = await run_import(settings, org=org.slug, items=write(tmp_path / name, records))
    assert result.files[0].inserted == 4
    async with db() as session:
        rows = (await session.scalars(
            select(Item).where(Item.org_id == uuid.UUID(org.org_id)).order_by(Item.item_id)
        )).all()
    assert [(r.item_id, r.item_type, r.status, r.attributes) for r in rows] == [
        (r["item_id"], "product", "active", r["attributes"]) for r in records
    ]
    assert rows[1].created_at.isoformat() == "2026-01-02T03:04:05+00:00"


async def test_the_same_events_as_csv_and_as_jsonl_are_the_same_events(
    settings: Settings, org: OrgKeys, db: Any, tmp_path: Path
) -> None:
    records = [event(f"u{i}", "purchase", f"sku-{i}", timestamp=at(i), context={"price": 9.5, "quantity": 2})
               for i in range(20)]
    records += [dict(records[0])]  # an identical line without event_id: one event
    first = await run_import(settings, org=org.slug, events=write(tmp_path / "events.csv", records))
    # Another spelling of the same content: key order, timestamp offset.
    respelled = [{**dict(reversed(list(r.items()))), "timestamp": r["timestamp"].replace("Z", "+00:00")}
                 for r in records]
    second = await run_import(settings, org=org.slug, events=write(tmp_path / "events.jsonl", respelled))
    assert (first.files[0].lines, first.files[0].inserted) == (21, 20)
    assert (second.files[0].lines, second.files[0].inserted) == (21, 0)
    async with db() as session:
        row = await session.scalar(
            select(Event).where(Event.org_id == uuid.UUID(org.org_id), Event.user_id == "u3")
        )
    assert row is not None and row.event_family == "conversion"
    assert row.context == {"price": 9.5, "quantity": 2}


async def test_identify_chains_resolve_to_the_final_id_as_the_worker_does(
    settings: Settings, org: OrgKeys, other_org: OrgKeys, db: Any, redis: Any, tmp_path: Path,
    client: Any, drain: Any,
) -> None:
    # Out of time order in the file: stitched by timestamp, like the worker.
    identifies = [
        event("real", "identify", previous_user_id="anon2", timestamp=at(20)),
        event("anon2", "identify", previous_user_id="anon1", timestamp=at(10)),
        event("someone-else", "identify", previous_user_id="anon1", timestamp=at(30)),  # first identify wins
        event("anon2", "identify", previous_user_id="real", timestamp=at(40)),  # would close a cycle
        event("other", "identify", previous_user_id="lone", timestamp=at(50)),
    ]
    result = await run_import(settings, org=org.slug, events=write(tmp_path / "a.jsonl", identifies))
    assert result.aliases == {"anon1": "real", "anon2": "real", "lone": "other"}

    # A later import extends an existing chain at its start.
    later = [event("anon1", "identify", previous_user_id="anon0", timestamp=at(60))]
    result = await run_import(settings, org=org.slug, events=write(tmp_path / "b.jsonl", later))
    assert result.aliases == {"anon0": "real"}

    expected = {"anon0": "real", "anon1": "real", "anon2": "real", "lone": "other"}
    async with db() as session:
        assert await all_aliases(session, uuid.UUID(org.org_id)) == expected
    mirrored = await redis.hgetall(redis_keys.aliases(org.org_id))
    assert {k.decode(): v.decode() for k, v in mirrored.items()} == expected

    # The api + worker path, fed the same events, ends in the same place.
    assert (await client.post(EVENTS, json=identifies, headers=other_org.pk)).status_code == 202
    await drain()
    assert (await client.post(EVENTS, json=later, headers=other_org.pk)).status_code == 202
    await drain()
    async with db() as session:
        assert await all_aliases(session, uuid.UUID(other_org.org_id)) == expected
        assert await count(db, IdentityAlias, other_org) == 4


async def test_redis_hears_of_new_catalog_and_events(
    settings: Settings, org: OrgKeys, redis: Any, tmp_path: Path
) -> None:
    events = some_events(60)
    await run_import(settings, org=org.slug, items=write(tmp_path / "items.jsonl", some_items(3)),
                     events=write(tmp_path / "events.jsonl", events[:50]))
    assert await catalog_version(redis, org) == 1
    # New or changed items are new data for the scheduled retrain, as when the worker upserts them.
    assert await new_data(redis, org) == 3 + 50

    await run_import(settings, org=org.slug, events=write(tmp_path / "more.jsonl", events))
    assert await catalog_version(redis, org) == 1  # no items in this one
    assert await new_data(redis, org) == 3 + 60  # 50 already stored + 10 new

    changed = [*some_items(2), item("sku-2", attributes={"price": 99})]  # 2 unchanged, 1 changed
    await run_import(settings, org=org.slug, items=write(tmp_path / "changed.jsonl", changed))
    assert await catalog_version(redis, org) == 2
    assert await new_data(redis, org) == 3 + 60 + 1


async def test_integer_ids_import_as_the_same_ids_as_strings(
    settings: Settings, org: OrgKeys, db: Any, tmp_path: Path
) -> None:
    """JSONL carries shop platforms' integer ids as numbers: stored as their decimal strings, so
    the same export with string ids changes nothing (CSV cells are strings already)."""
    numbers = [
        {"item_id": 123, "item_type": "product", "status": "active", "attributes": {"n": 1}},
        {"item_id": 7, "item_type": "product", "status": "active"},
    ]
    people = [{"user_id": 42, "status": "active", "created_at": at(0)}]
    history = [
        {"user_id": 9001, "event_family": "engagement", "event_name": "view", "item_id": 7, "timestamp": at(1)},
        {"user_id": 42, "event_family": "system", "event_name": "identify", "previous_user_id": 9001,
         "timestamp": at(2)},
        {"user_id": 42, "event_family": "conversion", "event_name": "purchase", "item_id": 123, "timestamp": at(3)},
    ]
    result = await run_import(settings, org=org.slug, items=write(tmp_path / "items.jsonl", numbers),
                              users=write(tmp_path / "users.jsonl", people),
                              events=write(tmp_path / "events.jsonl", history))
    assert [(f.kind, f.inserted) for f in result.files] == [("items", 2), ("users", 1), ("events", 3)]
    assert result.aliases == {"9001": "42"}

    def as_strings(record: dict[str, Any]) -> dict[str, Any]:
        return {k: str(v) if k.endswith("_id") else v for k, v in record.items()}

    again = await run_import(settings, org=org.slug,
                             items=write(tmp_path / "items.csv", [as_strings(r) for r in numbers]),
                             users=write(tmp_path / "users2.jsonl", [as_strings(r) for r in people]),
                             events=write(tmp_path / "events2.jsonl", [as_strings(r) for r in history]))
    assert [(f.kind, f.inserted, f.updated, f.unchanged) for f in again.files] == [
        ("items", 0, 0, 2), ("users", 0, 0, 1), ("events", 0, 0, 3)]
    async with db() as session:
        events = (await session.execute(
            select(Event.user_id, Event.item_id).where(Event.org_id == uuid.UUID(org.org_id))
        )).all()
    assert sorted(map(tuple, events), key=str) == sorted([("9001", "7"), ("42", None), ("42", "123")], key=str)
    bad = write(tmp_path / "bad.jsonl", [{"item_id": 12.0, "item_type": "product", "status": "active"}])
    with pytest.raises(ImportFailed) as failed:
        await run_import(settings, org=org.slug, items=bad)
    assert failed.value.errors == [f"{bad}:1: item_id: must be a string or an integer"]


async def test_with_redis_down_the_import_stands_and_warns(
    settings: Settings, org: OrgKeys, db: Any, tmp_path: Path
) -> None:
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    result = await run_import(unreachable, org=org.slug, items=write(tmp_path / "items.jsonl", some_items(3)))
    assert await count(db, Item, org) == 3
    assert len(result.warnings) == 1 and "Redis is unreachable" in result.warnings[0]


async def test_an_old_export_does_not_bring_an_erased_users_history_back(
    settings: Settings, org: OrgKeys, client: Any, db: Any, drain: Any, tmp_path: Path
) -> None:
    history = [event("gone", "view", "sku-1", timestamp=at(1)), event("gone", "purchase", "sku-2", timestamp=at(2))]
    assert (await client.post(EVENTS, json=history, headers=org.pk)).status_code == 202
    await drain()
    assert (await client.delete("/v1/users/gone", headers=org.sk)).status_code == 202
    await drain()
    returning = event("gone", "view", "sku-3", timestamp=datetime.now(UTC).isoformat())  # after the erasure
    linked = event("stays", "identify", previous_user_id="gone", timestamp=at(4))  # would link the erased id
    export = [*history, event("stays", "view", "sku-1", timestamp=at(3)), linked, returning]
    result = await run_import(settings, org=org.slug, events=write(tmp_path / "export.jsonl", export))
    summary = result.summary("events")
    assert summary is not None and (summary.erased, summary.inserted, summary.unchanged) == (3, 2, 0)
    async with db() as session:
        stored = (await session.execute(
            select(Event.user_id, Event.item_id).where(Event.org_id == uuid.UUID(org.org_id))
        )).all()
    assert sorted(map(tuple, stored)) == [("gone", "sku-3"), ("stays", "sku-1")]
    assert result.aliases == {} and await count(db, IdentityAlias, org) == 0


async def test_an_old_export_does_not_bring_an_erased_users_profile_back(
    settings: Settings, org: OrgKeys, client: Any, db: Any, drain: Any, tmp_path: Path
) -> None:
    for user_id in ("gone", "back"):
        assert (await client.post(USERS, json=user(user_id), headers=org.sk)).status_code == 202
    await drain()
    for user_id in ("gone", "back"):
        assert (await client.delete(f"/v1/users/{user_id}", headers=org.sk)).status_code == 202
    await drain()
    export = [
        user("gone", created_at=at(1)),  # the erased profile, as an old export holds it
        user("stays", created_at=at(2)),
        user("back", created_at=datetime.now(UTC).isoformat()),  # an account created after the erasure
    ]
    result = await run_import(settings, org=org.slug, users=write(tmp_path / "users.jsonl", export))
    summary = result.summary("users")
    assert summary is not None and (summary.erased, summary.inserted, summary.unchanged) == (1, 2, 0)
    async with db() as session:
        stored = (await session.scalars(select(User.user_id).where(User.org_id == uuid.UUID(org.org_id)))).all()
    assert sorted(stored) == ["back", "stays"]


@pytest.mark.parametrize("kind", ["events", "users"])
async def test_without_redis_an_import_of_personal_data_refuses_rather_than_skip_the_erasure_check(
    settings: Settings, org: OrgKeys, db: Any, tmp_path: Path, kind: str
) -> None:
    unreachable = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    personal = {"events": some_events(5), "users": [user("u1"), user("u2")]}[kind]
    with pytest.raises(ServiceUnavailable, match="erasure records"):
        await run_import(unreachable, org=org.slug, items=write(tmp_path / "items.jsonl", some_items(2)),
                         **{kind: write(tmp_path / f"{kind}.jsonl", personal)})
    assert await count(db, Event, org) == 0 and await count(db, User, org) == 0 and await count(db, Item, org) == 0


async def test_unknown_org_is_refused(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        await run_import(settings, org="no-such-org", items=write(tmp_path / "items.jsonl", some_items(1)))


def test_the_command_names_the_bad_line_then_imports_and_summarises(
    settings: Settings, org: OrgKeys, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "LEHNZ_DATABASE_URL": settings.database_url or "",
        "LEHNZ_REDIS_URL": settings.redis_url or "",
        "LEHNZ_DATA_DIR": str(settings.data_dir),
        "COLUMNS": "200",
    }
    records = some_events(5)
    records[2]["event_name"] = "View"
    bad = write(tmp_path / "events.jsonl", records)

    def lehnz(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", "import", "--org", org.slug, *args],
                              env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)

    failed = lehnz("--events", str(bad))
    assert failed.returncode == 1
    assert f"{bad}:3: (record): event_name must be lowercase" in failed.stderr
    assert "nothing was imported" in failed.stderr

    done = lehnz("--events", str(write(tmp_path / "good.jsonl", some_events(5))))
    assert done.returncode == 0, done.stderr
    assert "good.jsonl" in done.stdout and "events" in done.stdout

    refused = lehnz("--events", str(write(tmp_path / "events.txt", [])))
    assert refused.returncode == 2 and "unknown format" in refused.stderr
