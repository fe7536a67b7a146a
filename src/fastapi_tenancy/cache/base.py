"""The tenant cache contract: resolved tenants kept between requests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fastapi_tenancy.models import Tenant
from fastapi_tenancy.observe.observer import CacheObserver  # the caches' slice of the observer

__all__ = [
    "MEMORY_LAYER",
    "REDIS_LAYER",
    "CacheObserver",
    "CachedLookup",
    "SharedTenantCache",
    "TenantCache",
    "report_lookup",
]

MEMORY_LAYER = "memory"
REDIS_LAYER = "redis"


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

    async def read_token(self, identifier: str) -> str | None:
        """A token to pass to `set` after reading the store, or ``None`` if not needed.

        Shared caches use it to refuse a write that raced with an invalidation: the lookup reads
        the token, then the store, then sets with the token.
        """
        ...

    async def set(
        self, identifier: str, tenant: Tenant | None, *, ttl: float, token: str | None = None
    ) -> None:
        """Cache ``tenant`` (or its absence, when ``None``) for ``ttl`` seconds."""
        ...

    async def delete(self, identifier: str) -> None: ...

    async def clear(self) -> None: ...

    async def close(self) -> None: ...


def report_lookup(observer: CacheObserver, layer: str, hit: CachedLookup | None) -> None:
    """Tell ``observer`` how a lookup in ``layer`` went: a hit, a negative hit or a miss."""
    if hit is None:
        result = "miss"
    else:
        result = "hit" if hit.tenant is not None else "negative_hit"
    observer.cache_lookup(layer, result)


@runtime_checkable
class SharedTenantCache(TenantCache, Protocol):
    """A cache shared between processes, which hears of invalidations made elsewhere.

    ``start`` opens its subscription; each of ``listeners`` is called with an identifier that
    another process invalidated (``None`` for all of them).
    """

    listeners: list[Callable[[str | None], None]]

    async def start(self) -> None: ...
