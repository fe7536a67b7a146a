"""Custom domains: a tenant served at host names of its own, on every database, through Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from fastapi_tenancy import (
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    Tenant,
    get_current_tenant,
)
from fastapi_tenancy.cache.memory import MemoryTenantCache
from fastapi_tenancy.domains import (
    DomainAlreadyExists,
    DomainChanged,
    InvalidDomain,
    normalise_domain,
)
from fastapi_tenancy.exceptions import TenantNotFound
from fastapi_tenancy.lookup import TenantLookup
from fastapi_tenancy.models import TenantStatus
from fastapi_tenancy.observe.events import TenantChanged
from fastapi_tenancy.resolution import ChainResolver, HeaderResolver, Resolution, SubdomainResolver
from fastapi_tenancy.store import MemoryTenantStore
from tests.support.backends import DATABASES, isolation_config
from tests.support.polling import eventually
from tests.support.scopes import http_scope
from tests.support.services import REDIS_URL, require_server

PUBLIC_PEER = ("203.0.113.7", 50000)


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("acme.com", "acme.com"),
        ("App.ACME.com.", "app.acme.com"),
        ("app.acme.com:443", "app.acme.com"),
        ("  shop.acme.co.uk ", "shop.acme.co.uk"),
        ("Bücher.de", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
    ],
)
def test_domains_are_stored_in_one_normal_form(name: str, stored: str) -> None:
    assert normalise_domain(name) == stored


@pytest.mark.parametrize(
    "name",
    [
        "",
        "localhost",
        "10.0.0.1",
        "[::1]",
        "::1",
        "-acme.com",
        "acme-.com",
        "ac_me.com",
        "acme..com",
        "acme.com/path",
        "user@acme.com",
        "a" * 64 + ".com",
        ("a" * 60 + ".") * 5 + "com",
    ],
)
def test_names_that_are_no_host_name_are_refused(name: str) -> None:
    with pytest.raises(InvalidDomain):
        normalise_domain(name)


def host_scope(host: str, *extra: tuple[str, str], client: Any = PUBLIC_PEER) -> dict[str, Any]:
    return http_scope(headers=[("host", host), *extra], client=client)


def test_the_subdomain_resolver_hands_other_hosts_to_the_lookup() -> None:
    resolver = SubdomainResolver("example.com", custom_domains=True)

    assert resolver.resolve(host_scope("acme.example.com")) == Resolution("acme")
    assert resolver.resolve(host_scope("App.Acme.COM.:8443")) == Resolution("", host="app.acme.com")
    # Not a host name a tenant can own: nothing to look up.
    for host in ("example.com", "10.0.0.1:80", "[::1]:8000", "localhost", "bad_host.com"):
        assert resolver.resolve(host_scope(host)) is None


def test_custom_domains_off_keeps_hosts_outside_the_suffix_unnamed() -> None:
    resolver = SubdomainResolver("example.com")
    assert resolver.resolve(host_scope("acme.com")) is None


def test_forwarded_hosts_name_custom_domains_only_from_trusted_proxies() -> None:
    import ipaddress

    resolver = SubdomainResolver(
        "example.com", (ipaddress.ip_network("10.0.0.0/8"),), custom_domains=True
    )
    forwarded = ("x-forwarded-host", "acme.com")

    from_proxy = resolver.resolve(host_scope("internal.lan", forwarded, client=("10.0.0.2", 1)))
    from_client = resolver.resolve(host_scope("globex.com", forwarded))

    assert from_proxy == Resolution("", host="acme.com")
    assert from_client == Resolution("", host="globex.com")


async def memory_runtime() -> tuple[MemoryTenantStore, TenantLookup]:
    store = MemoryTenantStore()
    lookup = TenantLookup(store, MemoryTenantCache(100), ttl=60, negative_ttl=60)
    return store, lookup


async def test_a_host_and_another_strategy_must_name_the_same_tenant() -> None:
    store, lookup = await memory_runtime()
    acme = await store.add(Tenant(identifier="acme"))
    await store.add(Tenant(identifier="globex"))
    from fastapi_tenancy.domains import Domain

    await store.add_domain(Domain("acme.com", acme.id))
    resolver = ChainResolver(
        HeaderResolver("X-Tenant-ID"), SubdomainResolver("example.com", custom_domains=True)
    )

    agreeing = resolver.resolve(host_scope("acme.com", ("x-tenant-id", "acme")))
    disagreeing = resolver.resolve(host_scope("acme.com", ("x-tenant-id", "globex")))

    assert agreeing is not None
    assert disagreeing is not None
    assert (await lookup.get_active_for(agreeing)).identifier == "acme"
    with pytest.raises(TenantNotFound):
        await lookup.get_active_for(disagreeing)


# Hosts a client may send: registered domains mangled every way, and anything at all.
REGISTERED = {"acme.com": "acme", "app.acme.com": "acme", "globex.io": "globex"}
_MANGLED = st.builds(
    lambda host, upper, port, dot, before, after: (
        before
        + "".join(c.upper() if u else c for c, u in zip(host, upper, strict=False))
        + ("." if dot else "")
        + port
        + after
    ),
    st.sampled_from(sorted(REGISTERED)),
    st.lists(st.booleans(), min_size=12, max_size=12),
    st.sampled_from(["", ":443", ":", ":x", ":8000:1"]),
    st.booleans(),
    st.sampled_from(["", " ", "a", ".", "x.", "-"]),
    st.sampled_from(["", " ", "a", ".", ".example.com", "\x00"]),
)
_HOSTS = st.one_of(
    _MANGLED,
    st.text(st.characters(max_codepoint=255), max_size=40),
    st.from_regex(r"[a-zA-Z0-9.:\-\[\]]{0,30}", fullmatch=True),
)


def _expected_owner(host: str) -> str | None:
    """An independent oracle: the owner of the host as HTTP defines it, or None."""
    name = host.strip(" \t").lower()
    head, colon, port = name.rpartition(":")
    if colon and (port.isdigit() or not port):
        name = head
    return REGISTERED.get(name.removesuffix("."))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host=_HOSTS)
async def test_generated_hosts_never_map_to_the_wrong_tenant(host: str) -> None:
    store, lookup = await memory_runtime()
    from fastapi_tenancy.domains import Domain

    ids = {}
    for identifier in ("acme", "globex"):
        ids[identifier] = (await store.add(Tenant(identifier=identifier))).id
    for domain, owner in REGISTERED.items():
        await store.add_domain(Domain(domain, ids[owner]))
    resolver = SubdomainResolver("example.com", custom_domains=True)
    try:
        resolution = resolver.resolve(host_scope(host))
        tenant = None if resolution is None else await lookup.get_active_for(resolution)
    except TenantNotFound:
        tenant = None
    if tenant is None:
        return
    if resolution is not None and resolution.host is not None:
        assert tenant.identifier == _expected_owner(host)


# Through the middleware, on every database.


def domain_app(tenancy: Tenancy) -> FastAPI:
    app = FastAPI()
    app.add_middleware(TenancyMiddleware, tenancy=tenancy)

    @app.get("/whoami")
    async def whoami(tenant: Tenant = Depends(get_current_tenant)) -> dict[str, str]:
        return {"tenant": tenant.identifier}

    return app


def domain_config(database_url: str, **overrides: Any) -> TenancyConfig:
    return isolation_config(
        ("row", database_url),
        resolution_strategy="subdomain",
        domain_suffix="example.com",
        **overrides,
    )


@asynccontextmanager
async def client_for(tenancy: Tenancy) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=domain_app(tenancy), client=PUBLIC_PEER)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        yield client


async def whoami(client: httpx.AsyncClient, host: str) -> tuple[int, str | None]:
    response = await client.get("/whoami", headers={"host": host})
    body = response.json()
    return response.status_code, body.get("tenant") if response.status_code == 200 else None


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
async def test_a_tenant_is_served_at_its_domains_until_they_are_removed(database_url: str) -> None:
    events: list[tuple[str, str, str]] = []
    async with Tenancy(domain_config(database_url)) as tenancy:
        tenancy.hooks.subscribe(
            DomainChanged, lambda e: events.append((e.action, e.tenant.identifier, e.host))
        )
        await tenancy.create_tenant("acme")
        await tenancy.create_tenant("globex")
        async with client_for(tenancy) as client:
            # Looked up (and cached as unknown) before the domain exists.
            assert await whoami(client, "shop.acme.com") == (404, None)

            await tenancy.add_domain("acme", "Shop.ACME.com.")
            await tenancy.add_domain("acme", "acme.com")

            assert await whoami(client, "shop.acme.com") == (200, "acme")
            assert await whoami(client, "acme.com:8443") == (200, "acme")
            assert await whoami(client, "globex.example.com") == (200, "globex")
            assert [d.host for d in await tenancy.list_domains("acme")] == [
                "acme.com",
                "shop.acme.com",
            ]
            assert await tenancy.list_domains("globex") == []

            await tenancy.suspend_tenant("acme")
            assert (await whoami(client, "acme.com"))[0] == 403
            await tenancy.activate_tenant("acme")
            assert await whoami(client, "acme.com") == (200, "acme")

            await tenancy.remove_domain("acme.com")
            assert await whoami(client, "acme.com") == (404, None)
            assert await whoami(client, "shop.acme.com") == (200, "acme")
    assert events == [
        ("add", "acme", "shop.acme.com"),
        ("add", "acme", "acme.com"),
        ("remove", "acme", "acme.com"),
    ]


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
async def test_a_domain_has_one_owner(database_url: str) -> None:
    async with Tenancy(domain_config(database_url)) as tenancy:
        await tenancy.create_tenant("acme")
        await tenancy.create_tenant("globex")
        await tenancy.add_domain("acme", "acme.com")

        with pytest.raises(DomainAlreadyExists, match=r"acme\.com"):
            await tenancy.add_domain("globex", "ACME.com")
        with pytest.raises(DomainAlreadyExists):
            await tenancy.add_domain("acme", "acme.com.")
        with pytest.raises(InvalidDomain, match="domain_suffix"):
            await tenancy.add_domain("globex", "acme.example.com")
        with pytest.raises(TenantNotFound):
            await tenancy.add_domain("nobody", "nobody.com")
        with pytest.raises(TenantNotFound):
            await tenancy.remove_domain("acme.com", identifier="globex")

        assert [(d.host, d.tenant_id) for d in await tenancy.list_domains()] == [
            ("acme.com", (await tenancy.get_tenant("acme")).id)  # type: ignore[union-attr]
        ]


@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
async def test_a_purged_tenant_takes_its_domains_along(database_url: str) -> None:
    async with Tenancy(domain_config(database_url)) as tenancy:
        await tenancy.create_tenant("acme")
        await tenancy.add_domain("acme", "acme.com")
        async with client_for(tenancy) as client:
            assert await whoami(client, "acme.com") == (200, "acme")
            await tenancy.delete_tenant("acme")
            assert await whoami(client, "acme.com") == (404, None)
            await tenancy.purge_tenant("acme")
            assert await tenancy.list_domains() == []

            # A new tenant with the old identifier does not inherit the old one's domains.
            await tenancy.create_tenant("acme")
            assert await whoami(client, "acme.com") == (404, None)
            await tenancy.create_tenant("globex")
            await tenancy.add_domain("globex", "acme.com")
            assert await whoami(client, "acme.com") == (200, "globex")


async def wait_for(client: httpx.AsyncClient, host: str, expected: tuple[int, str | None]) -> None:
    """Poll until ``host`` answers ``expected``; pub/sub is fast, the machine may not be."""
    seen: list[tuple[int, str | None]] = []

    async def answers() -> bool:
        seen.append(await whoami(client, host))
        return seen[-1] == expected

    try:
        await eventually(answers, what=f"{host} answering {expected}")
    except pytest.fail.Exception:
        pytest.fail(f"{host} still answers {seen[-1]}, expected {expected}")


@pytest.mark.redis
@pytest.mark.parametrize("database_url", DATABASES, indirect=True)
async def test_domain_changes_reach_another_runtime_through_redis(database_url: str) -> None:
    require_server("Redis", REDIS_URL, 6379)
    # Long TTLs: only the invalidations can make the other runtime see a change in time.
    config = domain_config(
        database_url,
        redis_url=SecretStr(REDIS_URL),
        cache_key_prefix=f"tt-{uuid.uuid4().hex[:12]}",
        cache_ttl=600,
        cache_negative_ttl=600,
    )
    async with Tenancy(config) as admin, Tenancy(config) as serving:
        await admin.create_tenant("acme")
        async with client_for(serving) as client:
            assert await whoami(client, "acme.com") == (404, None)  # cached as unknown

            await admin.add_domain("acme", "acme.com")
            await wait_for(client, "acme.com", (200, "acme"))

            await admin.suspend_tenant("acme")
            await wait_for(client, "acme.com", (403, None))
            await admin.activate_tenant("acme")
            await wait_for(client, "acme.com", (200, "acme"))

            await admin.remove_domain("acme.com")
            await wait_for(client, "acme.com", (404, None))


async def test_a_domain_of_a_deleted_tenant_is_refused() -> None:
    async with Tenancy(
        TenancyConfig(
            resolution_strategy="subdomain",
            domain_suffix="example.com",
            enable_soft_delete=True,
            tenant_tables="none",
        )
    ) as tenancy:
        await tenancy.create_tenant("acme")
        await tenancy.delete_tenant("acme")
        from fastapi_tenancy.exceptions import InvalidTransition

        with pytest.raises(InvalidTransition):
            await tenancy.add_domain("acme", "acme.com")


def test_domain_events_are_events() -> None:
    tenant = Tenant(identifier="acme", status=TenantStatus.ACTIVE)
    event = DomainChanged(action="add", tenant=tenant, host="acme.com")
    assert not isinstance(event, TenantChanged)
    assert event.at is not None
