"""Path strategy: ``/t/acme/orders`` names tenant ``acme``; the app sees ``/orders``."""

from __future__ import annotations

from fastapi_tenancy.exceptions import ConfigurationError
from fastapi_tenancy.models import validate_identifier
from fastapi_tenancy.resolution.base import Resolution
from fastapi_tenancy.types import Scope

__all__ = ["PathResolver", "route_path"]


def route_path(scope: Scope) -> str:
    """The request path below ``root_path``, exactly as Starlette's router matches it."""
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not root_path or not path.startswith(root_path):
        return path
    if path == root_path:
        return ""
    # Whole segments only: root_path "/api" contains "/api/x" but not "/apix".
    if path[len(root_path)] == "/":
        return path[len(root_path) :]
    return path


class PathResolver:
    """Reads the tenant identifier from the path segment after ``prefix``.

    ``PathResolver("/t")`` resolves ``/t/acme/orders`` to ``"acme"`` with mount ``"/t/acme"``, so
    the app's own routes are written without the tenant (``/orders``).
    """

    def __init__(self, prefix: str = "") -> None:
        prefix = prefix.rstrip("/")
        if prefix and not prefix.startswith("/"):
            raise ConfigurationError("the path prefix must be empty or start with '/'")
        self.prefix = prefix
        self._head = prefix + "/"

    def resolve(self, scope: Scope) -> Resolution | None:
        path = route_path(scope)
        if not path.startswith(self._head):
            return None
        segment = path[len(self._head) :].partition("/")[0]
        identifier = validate_identifier(segment)
        return Resolution(identifier, mount=self._head + identifier)
