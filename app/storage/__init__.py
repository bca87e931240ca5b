"""Postgres access: tables (ORM) plus one module per kind of data. Functions never commit."""
