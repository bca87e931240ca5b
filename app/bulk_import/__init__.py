"""`lehnz import`: bulk load items, users and events from JSONL or CSV files (docs/import.md).

- reading.py  input file -> staging rows: JSONL/CSV (optionally gzipped), validated with the api's
              schemas, content ids for events without one, rows of erased users dropped
- staging.py  run_import: every file into Postgres in one transaction (temp staging tables,
              merged by app/storage/bulk.py), then Redis told, as the ingest worker does
- command.py  the typer command (import_command): arguments, progress display, summary

Loaded when `lehnz --help` lists the commands, so every module's top level stays light:
pydantic, SQLAlchemy, asyncpg, redis and rich are imported inside the functions that use them.
"""

from app.bulk_import.command import import_command

__all__ = ["import_command"]
