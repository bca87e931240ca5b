"""`lehnz import` (being written)."""

from __future__ import annotations

import typer


def import_command() -> None:
    """Bulk load items, users and events from JSONL or CSV files."""
    raise typer.Exit(code=2)
