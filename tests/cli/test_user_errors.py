"""Issue 15.2: every user error of every command is one line on stderr and a non-zero exit, never a
traceback; and every --org takes the org id as well as the slug."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson
import pytest
from sqlalchemy.engine import make_url

from app.settings import Settings
from tests.cli.support import external_env, lehnz
from tests.factories import OrgKeys

pytestmark = pytest.mark.slow

UNKNOWN_ID = "6f1c0e2a-5b7d-4c1e-9a3f-0d2b8e4c7a11"  # a fixed id no org has (test ids must not vary between collections)
NO_ORG = "no organisation 'no-such-org'"
DOWN_REDIS = {"LEHNZ_REDIS_URL": "redis://127.0.0.1:1/0"}

# (argv with {org} / {files} placeholders, extra environment, what the one line says)
CASES: list[tuple[list[str], dict[str, str], str]] = [
    (["train", "--org", "no-such-org"], {}, NO_ORG),
    (["train", "--org", UNKNOWN_ID], {}, f"no organisation '{UNKNOWN_ID}'"),
    (["keys", "list", "--org", "no-such-org"], {}, NO_ORG),
    (["keys", "create", "--org", "no-such-org"], {}, NO_ORG),
    (["keys", "revoke", "--org", "no-such-org", "--key-id", UNKNOWN_ID], {}, NO_ORG),
    (["org", "set-limit", "--org", "no-such-org", "--limit", "5/minute"], {}, NO_ORG),
    (["org", "delete", "--org", "no-such-org", "--yes"], {}, NO_ORG),
    (["import", "--org", "no-such-org", "--items", "{files}/items.jsonl"], {}, NO_ORG),
    (["dead-letter", "discard", "--org", "no-such-org"], {}, NO_ORG),
    (["keys", "revoke", "--org", "{org}", "--key-id", "not-a-uuid"], {}, "key_id must be a UUID"),
    (["keys", "revoke", "--org", "{org}", "--key-id", UNKNOWN_ID], {}, f"no live key pair {UNKNOWN_ID}"),
    (["org", "set-limit", "--org", "{org}", "--limit", "lots"], {}, "invalid rate limit"),
    (["org", "create", "--name", "X", "--slug", "Bad Slug"], {}, "slug must be 1-64 lowercase"),
    (["org", "create", "--name", " "], {}, "--name must not be empty"),
    (["org", "create", "--name", "X", "--slug", "{org}"], {}, "already exists"),
    (["org", "delete", "--org", "{org}"], {}, "aborted"),  # no --yes and nobody to say yes
    (["dead-letter", "list", "--limit", "0"], {}, "Invalid value for '--limit'"),
    (["dead-letter", "discard"], {}, "give --org ORG or --all"),
    (["dead-letter", "discard", "--all", "--save", "/no/such/dir/x.jsonl"], {}, "/no/such/dir is not a dir"),
    (["import", "--org", "{org}", "--items", "/no/such/file.jsonl"], {}, "'/no/such/file.jsonl' does not"),
    (["import", "--org", "{org}"], {}, "nothing to import"),
    (["import", "--org", "{org}", "--items", "{files}/items.txt"], {}, "unknown format"),
    (["train", "--org", "{org}", "--timeout", "0"], {}, "Invalid value for '--timeout'"),
    (["train"], {}, "Missing option '--org'"),
    (["org", "frobnicate"], {}, "No such command 'frobnicate'"),
    (["eval", "--only", "nope"], {}, "unknown protocol"),
    (["bench", "--dataset", "nope"], {}, "use one of synthetic"),
    (["serve", "--port", "99999"], {}, "Invalid value for '--port'"),
    (["org", "list"], {"LEHNZ_DATABASE_URL": "postgresql+asyncpg://lehnz:s3cret@127.0.0.1:1/lehnz"},
     "cannot connect to PostgreSQL at postgresql+asyncpg://lehnz:***@127.0.0.1:1/lehnz"),
    (["migrate"], {"LEHNZ_DATABASE_URL": "postgresql+asyncpg://lehnz@127.0.0.1:1/lehnz"},
     "cannot connect to PostgreSQL at postgresql+asyncpg://lehnz@127.0.0.1:1/lehnz"),
    (["keys", "list", "--org", "{org}"], {"LEHNZ_DATABASE_URL": "not a url"},
     "cannot connect to PostgreSQL at not a url"),
    (["org", "list"], {"LEHNZ_DATABASE_URL": "{missing_database}"}, '"no_such_database" does not exist'),
    (["dead-letter", "list"], DOWN_REDIS, "cannot connect to Redis at redis://127.0.0.1:1/0"),
    (["keys", "revoke", "--org", "{org}", "--key-id", UNKNOWN_ID], DOWN_REDIS,
     "cannot connect to Redis at redis://127.0.0.1:1/0"),
    (["org", "list"], {"LEHNZ_PORT": "eighty"}, "invalid setting LEHNZ_PORT"),
    (["org", "list"], {"LEHNZ_RATE_LIMIT": "lots"}, "invalid rate limit 'lots'"),
    (["train", "--org", "{org}"], {"LEHNZ_REDIS_URL": "{idle_redis}"}, "no worker is consuming the train"),
]


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server, another database index (where no worker runs)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        path, _, query = url.partition("?")
        return f"{path}?{urlencode({**dict(parse_qsl(query)), 'db': str(db)})}"
    return urlunsplit(parts._replace(path=f"/{db}"))


def fill(text: str, *, org: OrgKeys, files: Path, settings: Settings) -> str:
    missing = make_url(settings.database_url or "").set(database="no_such_database")
    return (text.replace("{org}", org.slug).replace("{files}", str(files))
            .replace("{missing_database}", missing.render_as_string(hide_password=False))
            .replace("{idle_redis}", with_redis_db(settings.redis_url or "", 11)))


@pytest.mark.parametrize(("argv", "extra_env", "said"), CASES, ids=[" ".join(c[0][:3]) + (
    f" [{next(iter(c[1]))}]" if c[1] else "") for c in CASES])
async def test_a_user_error_is_one_line_and_a_non_zero_exit(
    argv: list[str], extra_env: dict[str, str], said: str, settings: Settings, org: OrgKeys, tmp_path: Path
) -> None:
    (tmp_path / "items.jsonl").write_text('{"item_id": "i1", "item_type": "product", "status": "active"}\n')
    (tmp_path / "items.txt").write_text("")
    env = {**external_env(settings), "COLUMNS": "80"}
    env.update({k: fill(v, org=org, files=tmp_path, settings=settings) for k, v in extra_env.items()})
    result = lehnz(*(fill(a, org=org, files=tmp_path, settings=settings) for a in argv), env=env, timeout=60)
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert said in lines[0], lines[0]
    assert "s3cret" not in result.stderr


async def test_every_org_option_takes_the_org_id_as_well_as_the_slug(
    settings: Settings, org: OrgKeys, client: Any, drain: Any, redis: Any, tmp_path: Path
) -> None:
    from app import redis_keys

    env = {**external_env(settings), "COLUMNS": "200"}
    created = lehnz("keys", "create", "--org", org.org_id, "--json", env=env)
    assert created.returncode == 0, created.stderr
    key_id = orjson.loads(created.stdout)["key_id"]
    listed = lehnz("keys", "list", "--org", org.org_id, "--json", env=env)
    assert {p["key_id"] for p in orjson.loads(listed.stdout)} >= {key_id}
    assert lehnz("keys", "revoke", "--org", org.org_id, "--key-id", key_id, env=env).returncode == 0
    limited = lehnz("org", "set-limit", "--org", org.org_id, "--limit", "50/minute", env=env)
    assert limited.returncode == 0 and f"rate limit of {org.slug}: 50/minute" in limited.stderr

    items = tmp_path / "items.jsonl"
    items.write_bytes(b"".join(orjson.dumps({"item_id": f"i{n}", "item_type": "product", "status": "active"})
                               + b"\n" for n in range(3)))
    events = tmp_path / "events.jsonl"
    views = [{"user_id": f"u{n}", "event_family": "engagement", "event_name": "view", "item_id": f"i{n % 3}",
              "timestamp": "2026-01-01T00:00:00Z"} for n in range(9)]
    events.write_bytes(b"".join(orjson.dumps(view) + b"\n" for view in views))
    imported = lehnz("import", "--org", org.org_id, "--items", str(items), "--events", str(events), env=env)
    assert imported.returncode == 0, imported.stderr
    trained = lehnz("train", "--org", org.org_id, "--inline", env=env, timeout=180)
    assert trained.returncode == 0, trained.stderr
    assert orjson.loads(trained.stdout)["status"] == "succeeded"

    parked = {"job_id": "x", "function": "ingest_events", "kwargs": {"org_id": org.org_id, "records": []}}
    await redis.rpush(redis_keys.DEAD_LETTER, orjson.dumps(parked))
    discarded = lehnz("dead-letter", "discard", "--org", org.slug, env=env)  # by slug too
    assert discarded.returncode == 0 and "discarded 1 parked job(s)" in discarded.stderr, discarded.stderr
