"""``health_router``: a readiness probe that answers 503 until the database is at head."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from ..foundation.errors import MigrationError
from .readiness import probe_for

log = logging.getLogger("fastapi_migrate")

health_router = APIRouter(tags=["health"])
"""Tagged: apps whose ``generate_unique_id_function`` reads ``route.tags[0]`` (the
full-stack FastAPI template's) would answer 500 on it and on their OpenAPI schema."""

_READY = {"ok", "ahead"}


@health_router.get("/health/migrations", include_in_schema=False)
async def migrations_health(request: Request) -> JSONResponse:
    """200 at head (or ahead of it), 503 while pending or unreadable; never shows the URL."""
    try:
        status = await probe_for(request.app).status()
    except Exception as error:  # settings that cannot even build a probe
        # Our own errors never hold a password; anything else is named only by its type.
        reason = str(error) if isinstance(error, MigrationError) else type(error).__name__
        log.warning("migration status unavailable: %s", reason)
        status = {"status": "error", "current": None, "head": None}
    return JSONResponse(status, status_code=200 if status["status"] in _READY else 503)
