"""Which tenants have work running in this process, so a purge can wait for it to finish."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["InFlight"]


class InFlight:
    """Counts open tenant sessions per tenant id; task-safe (one event loop, no awaits inside)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._idle: dict[str, asyncio.Event] = {}

    def count(self, tenant_id: str) -> int:
        return self._counts.get(tenant_id, 0)

    @contextmanager
    def track(self, tenant_id: str) -> Iterator[None]:
        self._counts[tenant_id] = self._counts.get(tenant_id, 0) + 1
        try:
            yield
        finally:
            remaining = self._counts[tenant_id] - 1
            if remaining:
                self._counts[tenant_id] = remaining
            else:
                del self._counts[tenant_id]
                idle = self._idle.pop(tenant_id, None)
                if idle is not None:
                    idle.set()

    async def drained(self, tenant_id: str) -> None:
        """Return once no session of ``tenant_id`` is open (bound it with ``asyncio.timeout``)."""
        if not self.count(tenant_id):
            return
        await self._idle.setdefault(tenant_id, asyncio.Event()).wait()
