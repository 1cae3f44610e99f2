"""PostgreSQL: the connection seam, roles, migrations, the embedded server, cleanup lock."""
