"""Which request paths are served without a tenant (``excluded_paths``).

An entry matches its own path only (``/docs`` is ``/docs``, never ``/docs/{id}``); an entry that
ends in ``/*`` matches its path and everything below it (``/health/*`` covers ``/health``,
``/health/live`` and ``/health/ready``, never ``/healthz``). ``/*`` alone excludes every path.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["SUBTREE", "PathExclusions", "normalise_exclusion"]

SUBTREE = "/*"


def normalise_exclusion(entry: str) -> str:
    """``entry`` in canonical form, or `ValueError` saying how to write it."""
    entry = entry.strip()
    if not entry.startswith("/"):
        raise ValueError(f"excluded path {entry!r} must start with '/'")
    subtree = entry.endswith(SUBTREE)
    base = entry.removesuffix(SUBTREE) if subtree else entry
    if "*" in base:
        raise ValueError(
            f"excluded path {entry!r}: '*' may only end an entry, as '/*' (the path and "
            "everything below it)"
        )
    base = base.rstrip("/")
    return base + SUBTREE if subtree else base or "/"


class PathExclusions:
    """Matches request paths against normalised ``excluded_paths`` entries."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        self.everything = SUBTREE in entries
        self._exact = frozenset(entry for entry in entries if not entry.endswith(SUBTREE))
        bases = [entry.removesuffix(SUBTREE) for entry in entries if entry.endswith(SUBTREE)]
        self._subtrees = frozenset(bases)
        self._prefixes = tuple(base + "/" for base in bases)

    def matches(self, path: str) -> bool:
        """Whether ``path`` (a request path or a route's path template) needs no tenant."""
        if self.everything:
            return True
        trimmed = path.rstrip("/") or "/"
        return (
            trimmed in self._exact or trimmed in self._subtrees or path.startswith(self._prefixes)
        )
