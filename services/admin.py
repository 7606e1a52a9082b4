"""The admin service: health for containers (the admin page comes later)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from sqlalchemy import text

from shared.db import get_engine


def create_app() -> FastAPI:
    app = FastAPI(title="sysmail admin")

    @app.get("/health")
    def health(response: Response) -> dict[str, Any]:
        """200 when PostgreSQL answers, 503 when it does not."""
        try:
            with get_engine().connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            response.status_code = 503
            return {"status": "unavailable", "database": type(exc).__name__}
        return {"status": "ok", "database": "ok"}

    return app
