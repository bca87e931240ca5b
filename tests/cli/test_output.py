"""What the commands print: tables that never cut identifiers (issue 15.4), --help pages that read
well at 80 columns (issue 15.7), `lehnz migrate` saying what it did (issue 13)."""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.main import get_command
from typer.testing import CliRunner

from app.cli import cli
from app.settings import Settings
from app.storage.db import create_engine
from tests.cli.support import external_env, lehnz

WIDTHS = ("80", "40")  # the usual terminal, and a narrow one (half a laptop screen)


def whole(identifier: str, output: str) -> bool:
    """`identifier` is printed in one piece, not cut and not continued on another line."""
    return re.search(rf"(?<![\w-]){re.escape(identifier)}(?![\w…-])", output) is not None


@pytest.mark.slow
@pytest.mark.timeout(400)
async def test_tables_never_cut_identifiers_at_80_columns_and_narrower(
    settings: Settings, tmp_path: Path, redis: Any
) -> None:
    from app import redis_keys

    env = external_env(settings)
    prefix = f"glow-beauty-international-{uuid.uuid4().hex[:8]}"
    orgs = []
    for region in ("north", "south"):
        made = lehnz("org", "create", "--name", "Glow", "--slug", f"{prefix}-{region}", "--json", env=env)
        assert made.returncode == 0, made.stderr
        orgs.append(orjson.loads(made.stdout))
    keys = orjson.loads(lehnz("keys", "create", "--org", orgs[0]["tenant_id"], "--json", env=env).stdout)
    parked = {"job_id": f"job-{uuid.uuid4()}", "function": "ingest_events",
              "kwargs": {"org_id": orgs[1]["org_id"], "records": [{}]}, "tries": 3,
              "error": "a long error message that may well wrap over several lines of a narrow terminal"}
    await redis.lpush(redis_keys.DEAD_LETTER, orjson.dumps(parked))
    long_name = tmp_path / "catalog-export-2026-11-26-complete-with-every-attribute-and-a-long-name.jsonl"
    long_name.write_text('{"item_id": "i1", "item_type": "product", "status": "active"}\n')
    try:
        for width in WIDTHS:
            narrow = {**env, "COLUMNS": width}
            listed = lehnz("org", "list", env=narrow)
            assert listed.returncode == 0, listed.stderr
            for org in orgs:
                assert whole(org["tenant_id"], listed.stdout), (width, listed.stdout)
                assert whole(org["org_id"], listed.stdout), (width, listed.stdout)
            if width == "80":  # everything fits without the other columns spilling over the edge
                assert max(len(line) for line in listed.stdout.splitlines()) <= 80

            pairs = lehnz("keys", "list", "--org", orgs[0]["tenant_id"], env=narrow)
            assert pairs.returncode == 0 and whole(keys["key_id"], pairs.stdout), (width, pairs.stdout)

            letters = lehnz("dead-letter", "list", env=narrow)
            assert whole(parked["job_id"], letters.stdout) and whole(orgs[1]["org_id"], letters.stdout), \
                (width, letters.stdout)

            made = lehnz("org", "create", "--name", "Glow", "--slug", f"{prefix}-w{width}", env=narrow)
            for field in ("org_id", "publishable_key", "secret_key"):
                [value] = re.findall(rf"^{field}\s+(\S+)$", made.stdout, flags=re.MULTILINE)
                assert len(value) >= 36, (width, made.stdout)

            imported = lehnz("import", "--org", orgs[0]["tenant_id"], "--items", str(long_name), env=narrow)
            assert imported.returncode == 0, imported.stderr
            assert str(long_name) in imported.stdout, (width, imported.stdout)
    finally:
        await redis.lrem(redis_keys.DEAD_LETTER, 1, orjson.dumps(parked))


def every_command() -> Iterator[tuple[list[str], Any]]:
    def walk(group: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
        for name, command in group.commands.items():
            yield [*path, name], command
            if hasattr(command, "commands"):
                yield from walk(command, [*path, name])

    yield [], get_command(cli)
    yield from walk(get_command(cli), [])


COMMANDS = list(every_command())


def indent(line: str) -> int:
    return len(line) - len(line.lstrip())


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=[" ".join(p) or "lehnz" for p, _ in COMMANDS])
def test_every_help_page_reads_well_at_80_columns(path: list[str], command: Any) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    page = result.output
    assert "<bool>" not in page and "(issue" not in page and "…" not in page, page
    assert max(len(line) for line in page.splitlines()) <= 80, page
    for param in getattr(command, "params", []):
        for option in [*param.opts, *param.secondary_opts]:
            if option.startswith("--"):
                whole_name = re.search(rf"{re.escape(option)}(?![\w-])", page)
                assert whole_name, f"{option} is cut or missing:\n{page}"
        if "--json" in param.opts:
            assert param.help, f"{' '.join(path)} --json has no help text"
    description = page.split("Options:")[0].splitlines()[2:]
    for line, following in itertools.pairwise(description):
        # A paragraph click wrapped is indented by 2; a `\b` block (indented more) is kept as written.
        same_paragraph = line.strip() and following.strip() and indent(line) == indent(following) == 2
        if same_paragraph and not line.rstrip().endswith(":"):
            assert len(line) > 55, f"wrapped twice (a short line inside a paragraph):\n{page}"


def test_serve_and_eval_help_name_their_defaults_and_choices() -> None:
    from benchmarks.eval_command import PROTOCOLS

    serve = CliRunner().invoke(cli, ["serve", "--help"], env={"COLUMNS": "80"}).output
    said = " ".join(serve.split())
    assert "[default: LEHNZ_HOST, else 127.0.0.1]" in said and "[default: LEHNZ_PORT, else 8000]" in said
    evaluation = CliRunner().invoke(cli, ["eval", "--help"], env={"COLUMNS": "80"}).output
    assert all(re.search(rf"(?<![\w-]){name}(?![\w-])", evaluation) for name in PROTOCOLS), evaluation


@pytest.mark.slow
def test_migrate_says_which_revisions_it_applied_then_that_it_is_current(settings: Settings) -> None:
    import asyncio

    from alembic.script import ScriptDirectory

    from app.storage.migrate import alembic_config

    server = make_url(settings.database_url or "")
    name = f"lehnz_migrate_{uuid.uuid4().hex[:10]}"

    async def admin(statement: str) -> None:
        engine = create_engine(server.render_as_string(hide_password=False), pool_size=1)
        try:
            async with engine.connect() as conn:
                autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await autocommit.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        env = {**external_env(settings), "COLUMNS": "80",
               "LEHNZ_DATABASE_URL": server.set(database=name).render_as_string(hide_password=False)}
        script = ScriptDirectory.from_config(alembic_config(""))
        head = script.get_current_head()
        first = lehnz("migrate", env=env)
        assert first.returncode == 0, first.stderr
        said = " ".join(first.stderr.split())
        assert said.startswith("a brand-new database: created the schema; applied 0001 (initial schema"), said
        assert all(f"{rev.revision} (" in said for rev in script.walk_revisions())
        assert said.endswith(f"now at the latest migration ({head})"), said
        again = lehnz("migrate", env=env)
        assert again.returncode == 0
        assert " ".join(again.stderr.split()) == f"the database is already at the latest migration ({head})"
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
