"""Errors raised by fastapi-tenancy.

    TenancyError
    ├── ConfigurationError            invalid settings, detected at start-up
    ├── TenantNotFound                404: no identifier, malformed, unknown or soft-deleted
    │   ├── InvalidTenantIdentifier   404: the identifier is malformed (same public body)
    │   └── PrincipalNotAllowed       404: the principal hook refused the caller (same body)
    ├── TenantSuspended               403
    ├── AuthenticationFailed          401: bad, expired or unacceptable token
    ├── RateLimitExceeded             429: the tenant used its requests for now
    ├── ServiceUnavailable            503: tenant storage unreachable
    │   └── TenantMoving              503: the tenant's data is being moved (Retry-After)
    ├── TenantAlreadyExists           lifecycle: identifier taken
    ├── InvalidTransition             lifecycle: e.g. suspending a deleted tenant
    ├── TenantContextMissing          code needs a tenant but none is bound
    └── CrossTenantAccess             a statement could reach another tenant's rows (row isolation)

Each error that can end a request carries its HTTP status, its WebSocket close code, the public
detail sent to the client and its ``outcome``: the label the observers (metrics) count it under.
The public detail never says which tenants exist or why one was refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import ClassVar

__all__ = [
    "AuthenticationFailed",
    "ConfigurationError",
    "CrossTenantAccess",
    "InvalidTenantIdentifier",
    "InvalidTransition",
    "PrincipalNotAllowed",
    "RateLimitExceeded",
    "ServiceUnavailable",
    "TenancyError",
    "TenantAlreadyExists",
    "TenantContextMissing",
    "TenantMoving",
    "TenantNotFound",
    "TenantSuspended",
]

WS_POLICY_VIOLATION = 1008
WS_INTERNAL_ERROR = 1011

# The outcome of an error class that names none, from its status (e.g. an app's own 403).
_OUTCOME_BY_STATUS = {401: "unauthorized", 403: "forbidden", 404: "not_found"}


class TenancyError(Exception):
    """Base class of every error this library raises."""

    status_code: ClassVar[int] = 500
    ws_close_code: ClassVar[int] = WS_INTERNAL_ERROR
    public_detail: ClassVar[str] = "Internal server error"
    headers: ClassVar[Mapping[str, str]] = MappingProxyType({})
    # What became of a request refused with this error (see metrics.OUTCOMES). A subclass that
    # sets none gets one from its status_code.
    outcome: ClassVar[str] = "error"
    _outcome_from_status: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "outcome" in cls.__dict__:
            cls._outcome_from_status = False
        elif cls._outcome_from_status:
            cls.outcome = _OUTCOME_BY_STATUS.get(cls.status_code, "error")

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.public_detail)

    def response_headers(self) -> Mapping[str, str]:
        """Headers the error response carries (e.g. ``Retry-After``)."""
        return self.headers


class ConfigurationError(TenancyError):
    """The settings cannot work together; raised before the app serves anything."""


class TenantNotFound(TenancyError):
    """No tenant for this request: no identifier, an unknown one, or a soft-deleted tenant."""

    status_code = 404
    ws_close_code = WS_POLICY_VIOLATION
    public_detail = "Tenant not found"
    outcome = "not_found"


class InvalidTenantIdentifier(TenantNotFound):
    """Malformed identifiers answer exactly like unknown ones, so probing reveals nothing."""


class PrincipalNotAllowed(TenantNotFound):
    """The app's principal check says the caller does not belong to the tenant.

    It answers exactly like an unknown tenant: a caller who may not use a tenant learns nothing
    about whether it exists, so an account of one tenant cannot list the others.
    """


class TenantSuspended(TenancyError):
    """The tenant exists but is suspended; the response does not say so."""

    status_code = 403
    ws_close_code = WS_POLICY_VIOLATION
    public_detail = "Forbidden"
    outcome = "suspended"


class AuthenticationFailed(TenancyError):
    """The token naming the tenant is missing a claim, expired, forged or otherwise unacceptable."""

    status_code = 401
    ws_close_code = WS_POLICY_VIOLATION
    public_detail = "Unauthorized"
    outcome = "unauthorized"
    headers = MappingProxyType({"WWW-Authenticate": "Bearer"})


class RateLimitExceeded(TenancyError):
    """The tenant sent more requests than its limit allows in the current window."""

    status_code = 429
    ws_close_code = WS_POLICY_VIOLATION
    public_detail = "Too many requests"
    outcome = "rate_limited"

    def __init__(self, *, limit: int, retry_after: int) -> None:
        super().__init__(f"rate limit of {limit} requests per minute reached")
        self.limit = limit
        self.retry_after = retry_after

    def response_headers(self) -> Mapping[str, str]:
        return {
            "Retry-After": str(self.retry_after),
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": "0",
            "RateLimit-Reset": str(self.retry_after),
        }


class ServiceUnavailable(TenancyError):
    """Tenant storage cannot be reached; the request can be retried later."""

    status_code = 503
    public_detail = "Service unavailable"
    outcome = "unavailable"


class TenantMoving(ServiceUnavailable):
    """The tenant's data is being copied to new storage: a short write freeze for it alone.

    Answered like any 503, with a ``Retry-After`` for when the move should be over; the body
    does not say why.
    """

    headers = MappingProxyType({"Retry-After": "5"})


class TenantAlreadyExists(TenancyError):
    """Another tenant already has this identifier or id."""

    status_code = 409
    public_detail = "Tenant already exists"


class InvalidTransition(TenancyError):
    """The tenant's status does not allow this lifecycle operation."""

    status_code = 409
    public_detail = "Invalid tenant status transition"


class TenantContextMissing(TenancyError):
    """Raised when code that needs a tenant runs outside a tenant-bound request or scope."""


class CrossTenantAccess(TenancyError):
    """A statement would reach another tenant's rows, or cannot be confined to one tenant.

    Raised before any SQL runs; the message names the construct and what to write instead.
    """
