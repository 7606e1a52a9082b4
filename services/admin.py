"""The admin service: health for containers, and the one-click unsubscribe
link of mass email (RFC 8058). The admin page and API come later."""

from __future__ import annotations

import html
from typing import Any

from fastapi import FastAPI, HTTPException, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import text

from shared.campaigns import unsubscribe
from shared.db import get_engine, session_scope
from shared.errors import SysmailError


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

    @app.post("/unsubscribe")
    def unsubscribe_now(token: str) -> dict[str, str]:
        """One-click unsubscribe: the mail client POSTs to the link itself."""
        try:
            with session_scope() as session:
                contact = unsubscribe(session, token)
                return {"status": "unsubscribed", "contact": contact.id}
        except SysmailError as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from exc

    @app.get("/unsubscribe", response_class=HTMLResponse)
    def unsubscribe_page(token: str) -> str:
        """A person who opens the link gets a button; GET changes nothing,
        so link scanners that follow it opt nobody out."""
        return (
            "<!doctype html><title>Unsubscribe</title>"
            '<form method="post"><p>Stop receiving these emails?</p>'
            f'<input type="hidden" name="token" value="{html.escape(token)}">'
            '<button formaction="?token='
            f'{html.escape(token)}">Unsubscribe</button></form>'
        )

    return app
