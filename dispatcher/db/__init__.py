"""Database access: embedded server, pool, migrations and the named queries."""
