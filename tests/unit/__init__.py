"""Unit tests: the services and pure modules in-process, against a temporary SQLite store with a test key provider.

No server process and no subprocess: a test here that needs one belongs in `tests/e2e/`.
"""
