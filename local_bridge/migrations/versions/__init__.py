"""Alembic revision scripts: a package, so that every build ships them."""
