"""Alembic migrations (shipped as a package so `lehnz migrate` works from an installed wheel)."""
