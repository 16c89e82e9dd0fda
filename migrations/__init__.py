"""Alembic revisions of chatpush (installed as ``chatpush._migrations``)."""
