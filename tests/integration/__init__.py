"""Integration tests: real SQLite and PostgreSQL stores, migrations, backups, query plans, the event-loop pool."""
