"""Signing keys from a JWKS URL, fetched and refreshed off the request path.

Resolution is synchronous and never does I/O, so the JWT resolver only reads `JWKSKeys.get`. The
keys are fetched when the runtime starts, refreshed in the background every
``jwt_jwks_refresh_interval`` seconds, and refreshed early (at most once per
``jwt_jwks_min_refresh_interval``) when a token names a ``kid`` that is not known yet, which is
how an issuer's key rotation reaches the app without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fastapi_tenancy._tasks import cancelling, stop
from fastapi_tenancy.exceptions import ConfigurationError, ServiceUnavailable
from fastapi_tenancy.resolution.jwt import check_algorithm

if TYPE_CHECKING:
    import httpx

    from fastapi_tenancy.config import TenancyConfig

__all__ = ["JWKSError", "JWKSKeys", "parse_jwks"]

# The logger keeps the name the module had before it moved into resolution/: users filter on it.
logger = logging.getLogger("fastapi_tenancy.jwks")

_INSTALL_HINT = "install it with: pip install 'fastapi-tenancy-kit[jwt]'"
# Private-key members of RSA, EC and OKP JWKs (RFC 7518 section 6, RFC 8037): a published set
# holding them leaks the issuer's signing key.
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth"})


class JWKSError(Exception):
    """The JWKS document could not be fetched or is not a JWK Set."""


def parse_jwks(document: Any, algorithm: str) -> dict[str, Any]:
    """``kid -> verification key`` for every key of ``document`` usable with ``algorithm``.

    A key is usable when it has a ``kid``, is meant for signatures (``use`` absent or ``sig``),
    names ``algorithm`` or no algorithm, holds no private members, and is strong enough. Other
    keys are skipped with a warning; a document that is not a JWK Set raises `JWKSError`.
    """
    from jwt import PyJWK, PyJWTError

    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise JWKSError("the document is not a JWK Set (a JSON object with a 'keys' list)")
    keys: dict[str, Any] = {}
    for jwk in document["keys"]:
        kid = jwk.get("kid") if isinstance(jwk, dict) else None
        reason = _unusable(jwk, kid, algorithm)
        if reason is None:
            try:
                verifier = PyJWK(jwk, algorithm)
                weakness = _weakness(verifier, algorithm)
            except (PyJWTError, ValueError, TypeError) as exc:
                reason = f"it is not a valid {algorithm} key ({exc})"
            else:
                reason = weakness
        if reason is not None or not isinstance(kid, str):
            logger.warning("JWKS key %r skipped: %s", kid, reason)
            continue
        keys[kid] = verifier.key
    return keys


def _unusable(jwk: Any, kid: Any, algorithm: str) -> str | None:
    if not isinstance(jwk, dict):
        return "it is not a JSON object"
    if not isinstance(kid, str) or not kid:
        return "it has no 'kid', so no token can select it"
    if jwk.get("use", "sig") != "sig":
        return "its 'use' is not 'sig'"
    if jwk.get("alg", algorithm) != algorithm:
        return f"its 'alg' is not the configured {algorithm}"
    if _PRIVATE_MEMBERS & jwk.keys():
        return "it contains private key material; publish only public keys"
    return None


def _weakness(verifier: Any, algorithm: str) -> str | None:
    check_key_length = getattr(verifier.Algorithm, "check_key_length", None)
    weakness = check_key_length(verifier.key) if check_key_length is not None else None
    return f"it is too weak for {algorithm}: {weakness}" if weakness else None


def _consume_outcome(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


class JWKSKeys:
    """The current signing keys of one issuer, by ``kid``.

    ``get`` is synchronous and never does I/O; `start`, `refresh` and `refresh_for_unknown_key`
    fetch. Example::

        keys = JWKSKeys("https://idp.example.com/.well-known/jwks.json", "RS256")
        await keys.start()          # first fetch; then a background refresh every 300 s
        keys.get("2024-05")         # the key, or None
        await keys.close()
    """

    def __init__(
        self,
        url: str,
        algorithm: str,
        *,
        refresh_interval: float = 300.0,
        min_refresh_interval: float = 10.0,
        timeout: float = 5.0,
    ) -> None:
        check_algorithm(algorithm, public_keys=True)
        try:
            import httpx
            import jwt  # noqa: F401 - fail here, at construction, not at the first fetch
        except ImportError as exc:
            raise ConfigurationError(
                f"jwt_jwks_url needs PyJWT and httpx; {_INSTALL_HINT}"
            ) from exc
        self.url = url
        self.algorithm = algorithm
        self.refresh_interval = refresh_interval
        self.min_refresh_interval = min_refresh_interval
        self._timeout = httpx.Timeout(timeout)
        self._keys: Mapping[str, Any] = {}
        self._client: httpx.AsyncClient | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._fetching: asyncio.Task[None] | None = None
        self._last_attempt = float("-inf")

    @classmethod
    def from_config(cls, config: TenancyConfig) -> JWKSKeys:
        """Deprecated: `Tenancy` builds its key set from the config (`fastapi_tenancy._wiring`)."""
        warnings.warn(
            "JWKSKeys.from_config is deprecated; pass the URL and algorithm to JWKSKeys",
            DeprecationWarning,
            stacklevel=2,
        )
        from fastapi_tenancy import _wiring

        keys = _wiring.signing_keys(config)
        if keys is None:
            raise ConfigurationError("JWKSKeys.from_config needs jwt_jwks_url")
        return keys

    @property
    def kids(self) -> frozenset[str]:
        """The ``kid`` of every key currently accepted."""
        return frozenset(self._keys)

    def get(self, kid: str) -> Any | None:
        """The verification key for ``kid``, or ``None`` if the issuer does not publish it."""
        return self._keys.get(kid)

    async def start(self) -> None:
        """Fetch the keys, then keep refreshing them in the background.

        Raises `ServiceUnavailable` when the URL cannot be fetched and `ConfigurationError` when
        it does not serve a JWK Set, so a wrong URL stops the app at startup.
        """
        import httpx

        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        try:
            await self.refresh()
        except JWKSError as exc:
            await self.close()
            raise ConfigurationError(f"jwt_jwks_url {self.url}: {exc}") from exc
        except httpx.HTTPError as exc:
            await self.close()
            raise ServiceUnavailable(f"could not fetch the JWKS from {self.url}: {exc}") from exc
        self._refresher = asyncio.create_task(self._refresh_periodically())

    async def close(self) -> None:
        """Stop refreshing and release the HTTP connections."""
        await stop(self._refresher, what="the JWKS refresher")
        await stop(self._fetching, what="the JWKS fetch")
        self._refresher = self._fetching = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def refresh(self) -> None:
        """Fetch the key set now and replace the current keys with it.

        Concurrent callers share one fetch. On any error the current keys stay in place.
        """
        if self._fetching is None or self._fetching.done():
            self._fetching = asyncio.ensure_future(self._fetch())
            # Every caller may have gone (a client disconnected); the outcome is still consumed.
            self._fetching.add_done_callback(_consume_outcome)
        # A cancelled caller must not cancel the fetch other callers wait for.
        await asyncio.shield(self._fetching)

    async def refresh_for_unknown_key(self) -> bool:
        """Refresh because a token names an unknown ``kid``; ``False`` if refreshed too recently.

        The rate limit keeps tokens with made-up ``kid`` values from turning into a flood of
        requests to the issuer. A failed fetch is logged and also answers ``False``.
        """
        fetching = self._fetching is not None and not self._fetching.done()
        if not fetching and time.monotonic() - self._last_attempt < self.min_refresh_interval:
            return False
        try:
            await self.refresh()
        except Exception as exc:
            logger.warning("refreshing the JWKS from %s failed: %s", self.url, exc)
            return False
        return True

    async def _fetch(self) -> None:
        if self._client is None:
            raise JWKSError("the key set is not started")
        self._last_attempt = time.monotonic()
        response = await self._client.get(self.url, headers={"Accept": "application/json"})
        response.raise_for_status()
        try:
            document = response.json()
        except ValueError as exc:
            raise JWKSError("the response is not JSON") from exc
        keys = parse_jwks(document, self.algorithm)
        if not keys:
            # Honoured: an issuer that withdraws every key means no token is valid any more.
            logger.warning("the JWKS at %s holds no usable %s key", self.url, self.algorithm)
        added, removed = keys.keys() - self._keys.keys(), self._keys.keys() - keys.keys()
        if added or removed:
            logger.info("JWKS keys added %s, removed %s", sorted(added), sorted(removed))
        self._keys = keys

    async def _refresh_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                await self.refresh()
            except Exception as exc:
                if cancelling():  # a lost cancellation, not a failure: see _tasks
                    raise asyncio.CancelledError from exc
                # The keys already fetched stay valid; the next round tries again.
                logger.warning("refreshing the JWKS from %s failed: %s", self.url, exc)
