"""`lehnz eval` (being written)."""

from __future__ import annotations

import typer


def eval_command() -> None:
    """(being written)"""
    raise typer.Exit(code=2)
