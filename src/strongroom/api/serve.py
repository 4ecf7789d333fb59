"""Running the server: the uvicorn options of `strongroom serve` in one place (the bench floor uses them too)."""

from __future__ import annotations

import os
from typing import Any

from strongroom.config import Settings


def options(settings: Settings) -> dict[str, Any]:
    """uvicorn's keyword arguments for these settings (host, port, logging)."""
    import uvicorn

    return {
        "host": settings.host,
        "port": settings.port,
        "log_level": settings.log_level,
        "log_config": uvicorn.config.LOGGING_CONFIG,
    }


def run(settings: Settings, app: Any = None) -> None:
    """Serve `app` (default: Strongroom's own, in `settings.workers` processes) until stopped."""
    import uvicorn

    if app is not None:
        uvicorn.run(app, **options(settings))
    elif settings.workers > 1:
        # Each worker process builds its app from the same STRONGROOM_* environment.
        os.environ.update({"STRONGROOM_HOST": settings.host, "STRONGROOM_PORT": str(settings.port)})
        uvicorn.run("strongroom.api:create_app", factory=True, workers=settings.workers, **options(settings))
    else:
        from strongroom.api import create_app

        uvicorn.run(create_app(settings), **options(settings))
