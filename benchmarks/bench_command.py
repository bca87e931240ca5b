"""`lehnz bench` (being written)."""

from __future__ import annotations

import typer


def bench_command() -> None:
    """(being written)"""
    raise typer.Exit(code=2)
