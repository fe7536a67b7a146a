"""ASGI type aliases and the scope key shared by the request path; no logic lives here."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SCOPE_KEY", "ASGIApp", "Message", "Receive", "Scope", "Send"]

# Where each request's scope carries the runtime, for the dependencies and the metrics app.
SCOPE_KEY = "fastapi_tenancy"
