"""Hostile requests through the real middleware: always a documented answer, never a 500.

Hypothesis drives raw ASGI requests (header values are bytes, so any byte can arrive) at
`TenancyMiddleware` over a real SQLite store. For every request:

* the status is 200 (a live tenant was named) or one of the documented 401/403/404, with the
  generic body of that status;
* the store is asked only about well-formed identifiers, and a malformed one never reaches it;
* the request path executes nothing but SELECTs, so no DDL is ever built from request text.

Provisioning gets the same treatment on a real server: `create_tenant` refuses a hostile
identifier before a single SQL statement runs.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

import jwt as pyjwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import event as label
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import JSONResponse

from fastapi_tenancy import (
    InvalidTenantIdentifier,
    Tenancy,
    TenancyConfig,
    TenancyMiddleware,
    Tenant,
)
from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.models import IDENTIFIER_PATTERN
from fastapi_tenancy.store.sqlalchemy import SQLAlchemyTenantStore
from fastapi_tenancy.types import Message, Receive, Scope, Send
from tests.support.models import Base
from tests.support.services import POSTGRES_URL, TEST_STORAGE_PREFIX, require_server, reset_database

SECRET = secrets.token_urlsafe(48)
LIVE = {"acme", "globex"}
SUSPENDED = "initech"
GENERIC = {
    401: {"detail": "Unauthorized"},
    403: {"detail": "Forbidden"},
    404: {"detail": "Tenant not found"},
}
# Bounded so the whole file stays fast on a shared two-core machine.
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text an attacker tries first: SQL, traversal, NUL, CRLF, look-alikes, reserved names.
HOSTILE = [
    "acme'; DROP TABLE tenants;--",
    "' OR '1'='1",
    '"; DROP SCHEMA public CASCADE; --',
    "acme`; DROP DATABASE test;",
    "acme\x00",
    "\x00",
    "..",
    "../acme",
    "acme/../globex",
    "%00",
    "acme%00",
    "%2e%2e",
    "acme\r\nX-Tenant-ID: globex",
    "ACME",
    "Acme",
    " acme ",
    "acme\t",
    "ａｃｍｅ",  # noqa: RUF001 - full-width look-alike letters
    "acmé",
    "acme\u200b",
    "ac_me",
    "ac.me",
    "-acme",
    "acme-",
    "a" * 64,
    "a" * 10_000,
    "",
    " ",
    "*",
    "%",
    "public",
    "pg_catalog",
    "information_schema",
    "null",
    "gone",
    SUSPENDED,
    *sorted(LIVE),
]

_identifiers = st.from_regex(IDENTIFIER_PATTERN, fullmatch=True)
_known = st.sampled_from([*sorted(LIVE), SUSPENDED, "gone"])
_text = st.one_of(
    _known,
    st.sampled_from(HOSTILE),
    _identifiers,
    st.text(max_size=80),
    st.text(alphabet="acmeACME-_.%/\\:;'\"\x00 \t0123456789é", max_size=40),
    st.integers(min_value=64, max_value=5_000).map(lambda n: "a" * n),
)
# Header values as an ASGI server delivers them: raw bytes, valid latin-1, UTF-8 or neither.
header_bytes = st.one_of(
    st.binary(max_size=300),
    _text.map(lambda text: text.encode("utf-8")),
    _text.filter(lambda text: all(ord(c) < 256 for c in text)).map(lambda t: t.encode("latin-1")),
)


async def _inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    tenant: Tenant | None = scope.get("state", {}).get("tenant")
    body = {"tenant": tenant.identifier if tenant is not None else None}
    await JSONResponse(body)(scope, receive, send)


class CountingStore(SQLAlchemyTenantStore):
    """The real SQLAlchemy store, remembering every identifier it is asked about."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.lookups: list[str] = []

    async def get_by_identifier(self, identifier: str) -> Tenant | None:
        self.lookups.append(identifier)
        return await super().get_by_identifier(identifier)


@dataclass
class Site:
    """One app behind the middleware, its counting store and the SQL its engine executed."""

    app: TenancyMiddleware
    tenancy: Tenancy
    store: CountingStore
    statements: list[str] = field(default_factory=list)


@dataclass
class World:
    runner: asyncio.Runner
    sites: dict[str, Site]

    def run(self, awaitable: Awaitable[Any]) -> Any:
        async def wrapped() -> Any:
            return await awaitable

        return self.runner.run(wrapped())


def _config(database_url: str, **overrides: Any) -> TenancyConfig:
    # No cache: every well-formed identifier reaches the store, so the count is exact.
    return TenancyConfig(
        database_url=database_url,
        tenant_metadata=Base.metadata,
        cache_enabled=False,
        **overrides,
    )


SITE_SETTINGS: dict[str, dict[str, Any]] = {
    "header": {"resolution_strategy": "header"},
    "subdomain": {"resolution_strategy": "subdomain", "domain_suffix": "example.com"},
    "path": {"resolution_strategy": "path"},
    "jwt": {"resolution_strategy": "jwt", "jwt_secret": SECRET},
    "chain": {
        "resolution_strategy": "header,jwt,subdomain,path",
        "jwt_secret": SECRET,
        "domain_suffix": "example.com",
        "tenant_path_prefix": "/t",
    },
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    database_url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('hostile') / 'central.db'}"
    runner = asyncio.Runner()
    sites: dict[str, Site] = {}

    async def open_sites() -> None:
        async with Tenancy(_config(database_url)) as seeder:
            for identifier in (*sorted(LIVE), SUSPENDED, "gone"):
                await seeder.create_tenant(identifier)
            await seeder.suspend_tenant(SUSPENDED)
            await seeder.delete_tenant("gone")
        for name, overrides in SITE_SETTINGS.items():
            config = _config(database_url, **overrides)
            store = CountingStore(central_engine(config))
            tenancy = Tenancy(config, store=store)
            await tenancy.start()
            site = Site(TenancyMiddleware(_inner_app, tenancy=tenancy), tenancy, store)
            event.listen(
                store._engine.sync_engine,
                "before_cursor_execute",
                lambda _c, _cur, statement, *_rest, site=site: site.statements.append(statement),
            )
            sites[name] = site

    async def close_sites() -> None:
        for site in sites.values():
            await site.tenancy.close()
            await site.store._engine.dispose()

    runner.run(open_sites())
    try:
        yield World(runner, sites)
    finally:
        runner.run(close_sites())
        runner.close()


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[bytes, bytes]
    lookups: list[str]
    statements: list[str]


def request(
    world: World,
    site_name: str,
    *,
    headers: Sequence[tuple[bytes, bytes]] = (),
    raw_path: bytes = b"/",
    client: Any = ("203.0.113.7", 50000),
) -> Answer:
    """Send one raw ASGI request to a site and check the invariants every answer must keep."""
    site = world.sites[site_name]
    site.store.lookups.clear()
    site.statements.clear()
    # As an HTTP server does: the path is the percent-decoded raw path.
    path = unquote(raw_path.decode("latin-1"), encoding="utf-8", errors="replace")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": list(headers),
        "client": client,
        "server": ("testserver", 80),
    }
    messages: list[Message] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    # An exception escaping the middleware is what a server turns into a 500.
    world.run(site.app(scope, receive, send))
    start = messages[0]
    body = b"".join(m.get("body", b"") for m in messages[1:])
    answer = Answer(
        status=start["status"],
        body=json.loads(body),
        headers=dict(start["headers"]),
        lookups=list(site.store.lookups),
        statements=list(site.statements),
    )
    _check_invariants(answer)
    label(f"{site_name}: {answer.status}")
    return answer


def _check_invariants(answer: Answer) -> None:
    assert answer.status in (200, 401, 403, 404), answer
    if answer.status == 200:
        assert answer.body["tenant"] in LIVE
    else:
        assert answer.body == GENERIC[answer.status]
    if answer.status == 403:
        assert answer.lookups == [SUSPENDED]
    if answer.status == 401:
        assert answer.headers[b"www-authenticate"] == b"Bearer"
        assert answer.lookups == []
    assert len(answer.lookups) <= 1
    for identifier in answer.lookups:
        assert IDENTIFIER_PATTERN.fullmatch(identifier), identifier
    for statement in answer.statements:
        assert statement.lstrip().upper().startswith("SELECT"), statement


def _is_identifier(value: bytes) -> bool:
    return IDENTIFIER_PATTERN.fullmatch(value.decode("latin-1").strip(" \t")) is not None


@FUZZ
@given(values=st.lists(header_bytes, min_size=1, max_size=3))
def test_any_tenant_header_gets_a_documented_answer(world: World, values: list[bytes]) -> None:
    answer = request(world, "header", headers=[(b"x-tenant-id", value) for value in values])
    candidates = {value.decode("latin-1").strip(" \t") for value in values}
    if len(candidates) > 1 or not all(_is_identifier(value) for value in values):
        assert answer.status == 404
        assert answer.lookups == []
    else:
        assert answer.lookups == list(candidates)


@FUZZ
@given(
    value=header_bytes,
    name=st.sampled_from([b"x-tenant-id", b"X-Tenant-ID", b"x-tenant-id\x00", b"x-tenant-id "]),
)
def test_header_name_spelling_never_smuggles_an_identifier(
    world: World, value: bytes, name: bytes
) -> None:
    answer = request(world, "header", headers=[(name, value)])
    if not _is_identifier(value) or name.endswith((b"\x00", b" ")):
        assert answer.lookups == []


_hosts = st.one_of(
    header_bytes,
    _text.map(lambda label: f"{label}.example.com".encode()),
    _text.map(lambda label: f"{label}.example.com:{len(label)}".encode()),
    st.sampled_from([b"example.com", b"acme.example.com", b"a.b.example.com", b"[::1]:80"]),
)


@FUZZ
@given(
    hosts=st.lists(_hosts, max_size=2),
    forwarded=st.lists(_hosts, max_size=2),
    client=st.sampled_from([("203.0.113.7", 1), ("10.0.0.1", 1), None, ("::1", 1), ("x", 0)]),
)
def test_any_host_gets_a_documented_answer(
    world: World, hosts: list[bytes], forwarded: list[bytes], client: Any
) -> None:
    headers = [(b"host", host) for host in hosts]
    headers += [(b"x-forwarded-host", host) for host in forwarded]
    headers += [(b"forwarded", b"host=" + host) for host in forwarded]
    answer = request(world, "subdomain", headers=headers, client=client)
    # No proxy is trusted: only the Host header can name a tenant.
    if answer.lookups:
        assert len(set(hosts)) == 1
        assert hosts[0].decode("latin-1").strip(" \t").lower().startswith(answer.lookups[0])


_segments = st.one_of(
    _text.map(lambda text: quote(text, safe="")),
    _text.map(lambda text: quote(text, safe="/%")),
    st.sampled_from(["..", ".", "%00", "%2e%2e", "%2F", "%252e", "acme%00", "acme%2Fglobex", ""]),
    _identifiers,
)


@FUZZ
@given(segments=st.lists(_segments, min_size=1, max_size=4))
def test_any_path_gets_a_documented_answer(world: World, segments: list[str]) -> None:
    raw_path = ("/" + "/".join(segments)).encode("ascii")
    answer = request(world, "path", raw_path=raw_path)
    first = unquote(segments[0], errors="replace").partition("/")[0]
    if IDENTIFIER_PATTERN.fullmatch(first) is None:
        assert answer.status == 404
        assert answer.lookups == []
    else:
        assert answer.lookups == [first]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _signed(payload: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return pyjwt.encode(payload, key, algorithm=algorithm)


# Seconds from the moment of drawing, so long runs keep producing live tokens.
_from_now = st.integers(min_value=-30, max_value=600).map(lambda delta: int(time.time()) + delta)
_claims = st.fixed_dictionaries(
    {"tenant": st.one_of(_text, _identifiers, st.integers(), st.none(), st.lists(_text))},
    optional={
        "exp": st.one_of(_from_now, st.integers(), st.floats(), st.text(max_size=5)),
        "nbf": st.one_of(_from_now, st.integers()),
        "aud": st.text(max_size=10),
    },
)
_tokens = st.one_of(
    st.binary(max_size=400).map(lambda raw: raw.decode("latin-1")),
    st.lists(st.binary(max_size=60).map(_b64), min_size=1, max_size=5).map(".".join),
    _text,
    _claims.map(_signed),
    _claims.map(lambda claims: _signed(claims, key=secrets.token_urlsafe(48))),
    _claims.map(lambda claims: _b64(b'{"alg":"none"}') + "." + _b64(str(claims).encode()) + "."),
    (_identifiers | _known).map(
        lambda tenant: _signed({"tenant": tenant, "exp": int(time.time()) + 600})
    ),
)


@FUZZ
@given(token=_tokens, scheme=st.sampled_from(["Bearer ", "bearer ", "Bearer  ", "Basic ", ""]))
def test_any_token_gets_a_documented_answer(world: World, token: str, scheme: str) -> None:
    value = (scheme + token).encode("latin-1", errors="replace")
    answer = request(world, "jwt", headers=[(b"authorization", value)])
    if answer.lookups:
        # Checked as the app checks it, with the same clock-skew leeway on exp and nbf.
        leeway = world.sites["jwt"].tenancy.config.jwt_leeway
        claims = pyjwt.decode(token.strip(" \t"), SECRET, algorithms=["HS256"], leeway=leeway)
        assert claims["tenant"] == answer.lookups[0]


@FUZZ
@given(
    tenant_header=st.none() | header_bytes,
    token=st.none() | _tokens,
    host=st.none() | _hosts,
    segments=st.lists(_segments, max_size=3),
)
def test_any_mix_of_strategies_gets_a_documented_answer(
    world: World,
    tenant_header: bytes | None,
    token: str | None,
    host: bytes | None,
    segments: list[str],
) -> None:
    headers: list[tuple[bytes, bytes]] = []
    if tenant_header is not None:
        headers.append((b"x-tenant-id", tenant_header))
    if token is not None:
        headers.append((b"authorization", b"Bearer " + token.encode("latin-1", "replace")))
    if host is not None:
        headers.append((b"host", host))
    raw_path = ("/t/" + "/".join(segments)).encode("ascii")
    request(world, "chain", headers=headers, raw_path=raw_path)


# Provisioning: hostile identifiers are refused before any SQL, on a real PostgreSQL server.

_hostile_identifiers = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=80),
    st.binary(max_size=40).map(lambda raw: raw.decode("latin-1")),
).filter(lambda text: IDENTIFIER_PATTERN.fullmatch(text) is None)


@dataclass
class Provisioner:
    runner: asyncio.Runner
    tenancy: Tenancy
    statements: list[str]


@pytest.fixture(scope="module")
def provisioner() -> Iterator[Provisioner]:
    require_server("postgres", POSTGRES_URL, 5432)
    runner = asyncio.Runner()
    runner.run(reset_database(POSTGRES_URL))
    config = TenancyConfig(
        database_url=POSTGRES_URL,
        isolation_strategy="schema",
        tenant_metadata=Base.metadata,
        schema_prefix=TEST_STORAGE_PREFIX,
    )
    tenancy = Tenancy(config)
    statements: list[str] = []
    runner.run(tenancy.start())
    event.listen(
        tenancy.engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_rest: statements.append(statement),
    )
    try:
        yield Provisioner(runner, tenancy, statements)
    finally:
        runner.run(tenancy.close())
        runner.run(reset_database(POSTGRES_URL))
        runner.close()


def _run(runner: asyncio.Runner, call: Callable[[], Awaitable[Any]]) -> Any:
    async def wrapped() -> Any:
        return await call()

    return runner.run(wrapped())


@pytest.mark.postgres
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(identifier=_hostile_identifiers)
def test_create_tenant_refuses_a_hostile_identifier_before_any_sql(
    provisioner: Provisioner, identifier: str
) -> None:
    provisioner.statements.clear()
    with pytest.raises(InvalidTenantIdentifier):
        _run(provisioner.runner, lambda: provisioner.tenancy.create_tenant(identifier))
    assert provisioner.statements == []


@pytest.mark.postgres
def test_a_well_formed_identifier_is_provisioned_with_ddl(provisioner: Provisioner) -> None:
    # The listener sees DDL when there is some, so the empty lists above mean something.
    provisioner.statements.clear()
    _run(provisioner.runner, lambda: provisioner.tenancy.create_tenant("acme"))
    assert any(s.lstrip().upper().startswith("CREATE") for s in provisioner.statements)
