"""A bounded tenant label: the first K tenants seen keep their own value, the rest are ``other``."""

from __future__ import annotations

__all__ = ["NO_TENANT", "OTHER_TENANTS", "TenantLabels"]

# The label of requests refused before a tenant was known (no identifier, unknown tenant, bad
# token): never the identifier the client sent, which would let anyone mint series.
NO_TENANT = ""
OTHER_TENANTS = "other"


class TenantLabels:
    """Maps tenant identifiers to at most ``limit`` distinct label values plus ``other``.

    The first ``limit`` identifiers seen keep their own label for the life of the process; every
    later one is ``other``. A label once given is never taken back, so a series never changes
    meaning, and each metric with a tenant label has at most ``limit + 1`` tenant values (plus
    ``""`` for requests refused before a tenant was known).
    """

    __slots__ = ("_limit", "_seen")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the tenant label limit must be at least 1, not {limit}")
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, identifier: str) -> str:
        """The label value for ``identifier``."""
        if identifier in self._seen:
            return identifier
        if len(self._seen) < self._limit:
            self._seen.add(identifier)
            return identifier
        return OTHER_TENANTS
