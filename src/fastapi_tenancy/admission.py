"""①-③ Admission: one request's scope -> the tenant it may act as, or the error to answer.

`Admission.admit` runs the stages in order and times them for the observer:

① the resolver reads the identifier from the scope (pure; a token signed with a key the JWKS did
  not hold at its last fetch triggers one rate-limited refresh and a second try);
② the lookup finds the active tenant (cache, then store) and refuses unknown or suspended ones;
   the app's principal check then confirms that the caller belongs to the tenant;
③ the rate limiter counts the request against the tenant's limit.

It knows nothing of ASGI messages, the context or the app: `TenancyMiddleware` turns its answer
into a bound tenant, or its error into the response.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from fastapi_tenancy.exceptions import TenancyError, TenantNotFound
from fastapi_tenancy.lookup import TenantLookup
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.observe.observer import TenancyObserver, handler
from fastapi_tenancy.principal import PrincipalCheck, check_principal
from fastapi_tenancy.ratelimit import TenantRateLimiter
from fastapi_tenancy.resolution.base import Resolution, TenantResolver
from fastapi_tenancy.resolution.jwt import UnknownSigningKey
from fastapi_tenancy.types import Scope

__all__ = ["Admission", "Admitted", "KeyRefresh"]


class KeyRefresh(Protocol):
    """The signing keys' early refresh (``JWKSKeys``), for a token naming an unknown key."""

    async def refresh_for_unknown_key(self) -> bool:
        """Refresh if allowed now; ``True`` when the keys may have changed."""
        ...


# A request that passed ①-③: ``(tenant, resolution, headers)``, its tenant, how it was named,
# and the headers to add to its response (the rate limit's RateLimit-*; empty when there are
# none). A plain tuple: one is built on every request, and a named tuple costs several times
# as much to build and read.
Admitted = tuple[Tenant, Resolution, Sequence[tuple[bytes, bytes]]]


class Admission:
    """Turns a scope into an admitted tenant; raises the `TenancyError` to answer instead.

    Example::

        admission = Admission(resolver, lookup)
        tenant, resolution, headers = await admission.admit(scope)  # or TenantNotFound, ...
    """

    def __init__(
        self,
        resolver: TenantResolver,
        lookup: TenantLookup,
        *,
        principal_check: PrincipalCheck | None = None,
        limiter: TenantRateLimiter | None = None,
        signing_keys: KeyRefresh | None = None,
        observer: TenancyObserver | None = None,
    ) -> None:
        self.resolver = resolver
        self.lookup = lookup
        self.principal_check = principal_check
        self.limiter = limiter
        self.signing_keys = signing_keys
        # Bound once: a report no observer implements costs nothing per request, not even the
        # clock reads that time it.
        self._resolved = handler(observer, "resolved")
        self._admitted = handler(observer, "admitted")
        self._refused = handler(observer, "refused")

    async def admit(self, scope: Scope) -> Admitted:
        """Run ①-③ for ``scope``; every refusal is reported to the observer, then raised."""
        resolved = self._resolved
        started = time.perf_counter() if resolved is not None else 0.0
        tenant: Tenant | None = None
        try:
            try:
                resolution = self.resolver.resolve(scope)
            except UnknownSigningKey as unknown:
                resolution = await self._resolve_after_refresh(scope, unknown)
            if resolution is None:
                raise TenantNotFound()
            tenant = await self.lookup.get_active_for(resolution)
            if resolved is not None:
                resolved(time.perf_counter() - started)
            if self.principal_check is not None:
                # Before the rate limit: callers refused here never spend the tenant's quota.
                await check_principal(self.principal_check, tenant, resolution, scope)
            headers: Sequence[tuple[bytes, bytes]] = ()
            if self.limiter is not None and scope["type"] == "http":
                decision = await self.limiter.check(tenant)
                if decision is not None:
                    headers = decision.headers()
        except TenancyError as exc:
            if self._refused is not None:
                self._refused(exc, tenant)
            raise
        if self._admitted is not None:
            self._admitted(tenant)
        return tenant, resolution, headers

    async def resolve(self, scope: Scope) -> Resolution | None:
        """① alone: the resolver's answer, after one key refresh if a token needs it."""
        try:
            return self.resolver.resolve(scope)
        except UnknownSigningKey as unknown:
            return await self._resolve_after_refresh(scope, unknown)

    async def _resolve_after_refresh(
        self, scope: Scope, unknown: UnknownSigningKey
    ) -> Resolution | None:
        # A token signed with a key the JWKS did not hold at the last fetch (a rotation): one
        # rate-limited refresh and a second try, so resolution itself stays free of I/O.
        if self.signing_keys is None or not await self.signing_keys.refresh_for_unknown_key():
            raise unknown
        return self.resolver.resolve(scope)
