"""`alembic upgrade head`, callable from the CLI and the tests (works from an installed wheel)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

import migrations


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade_head` did: the revision the database was at (None: a brand-new database;
    unknown when nothing was applied), the head it is at now, and the revisions this run applied,
    oldest first, as (id, description). Another run that got there first applied the rest."""

    before: str | None
    head: str
    applied: list[tuple[str, str]]


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    return config


def upgrade_head(database_url: str) -> Upgrade:
    config = alembic_config(database_url)
    steps: list[Any] = []  # alembic's MigrationInfo, one per revision applied (migrations/env.py)
    config.attributes["on_version_apply"] = lambda *, step, **_: steps.append(step)
    command.upgrade(config, "head")
    script = ScriptDirectory.from_config(config)
    applied = [(step.up_revision_id, (step.up_revision.doc or "").strip()) for step in steps if step.is_upgrade]
    before = steps[0].down_revision_ids[0] if steps and steps[0].down_revision_ids else None
    return Upgrade(before=before, head=script.get_current_head() or "", applied=applied)
