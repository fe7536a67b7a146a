"""The tenant cache contract: resolved tenants kept between requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fastapi_tenancy.models import Tenant

__all__ = ["CacheObserver", "CachedLookup", "TenantCache"]


@dataclass(frozen=True, slots=True)
class CachedLookup:
    """A cache hit. ``tenant is None`` records that the identifier is known not to exist."""

    tenant: Tenant | None


class TenantCache(Protocol):
    """Maps identifiers to lookups, each with its own time to live.

    Every implementation passes ``tests/cache/test_contract.py``.
    """

    async def get(self, identifier: str) -> CachedLookup | None:
        """The cached lookup, or ``None`` on a miss or after its TTL ran out."""
        ...

    async def set(self, identifier: str, tenant: Tenant | None, *, ttl: float) -> None:
        """Cache ``tenant`` (or its absence, when ``None``) for ``ttl`` seconds."""
        ...

    async def delete(self, identifier: str) -> None: ...

    async def clear(self) -> None: ...

    async def close(self) -> None: ...


class CacheObserver(Protocol):
    """Told about every cache lookup and backend failure; the metrics implement it.

    ``layer`` is ``"memory"`` or ``"redis"``; ``result`` is ``"hit"``, ``"miss"`` or
    ``"negative_hit"`` (a cached "no such tenant").
    """

    def cache_lookup(self, layer: str, result: str) -> None: ...

    def cache_backend_error(self, layer: str) -> None: ...

    def cache_backend_up(self, layer: str, up: bool) -> None: ...
