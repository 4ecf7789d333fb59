"""Use cases, one module per resource: no SQL (that is `store`) and no HTTP (that is `api`)."""
