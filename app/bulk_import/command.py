"""The `lehnz import` command: checks its arguments, runs the import (staging.py) under a progress
display and prints the summary, or every bad line when nothing was imported.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer

from app.bulk_import.reading import file_format
from app.bulk_import.staging import ImportFailed, ImportResult, run_import

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
    # app.cli is imported here, not at the top: it loads this module to list and run `import`, and
    # the package (run_import, for the tests and tools) must not load the whole cli.
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

    from app.cli import console, out  # not at the top: see import_command
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
