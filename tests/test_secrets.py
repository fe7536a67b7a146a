"""No password reaches a message: every masking call site, on generated URLs and texts.

Passwords are drawn from every printable character (URL delimiters, ``%``, quotes, backslashes,
non-ASCII letters) and always contain a ``Q``, which no other generated part of a URL or a message
holds: whatever of a message contains the whole password (or one of its encodings) is a leak.
The call sites are `redact_url` (also re-exported by ``fastapi_tenancy.engines``), the CLI's
`scrub` and its error reporting, the migration runner's `describe_error`, and the messages of the
tenant store and of database provisioning when the server refuses the connection.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any, NoReturn
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import MetaData
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine

from fastapi_tenancy import ServiceUnavailable, TenancyConfig, engines
from fastapi_tenancy._secrets import redact_url, scrub, url_secrets
from fastapi_tenancy._wiring import central_engine
from fastapi_tenancy.cli import runtime
from fastapi_tenancy.isolation.database import DatabaseIsolation
from fastapi_tenancy.isolation.tables import TenantTables
from fastapi_tenancy.migrations.errors import describe_error, url_passwords
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.store import SQLAlchemyTenantStore

# Every password holds the marker, a letter no driver, library or URL part ever prints (an ASCII
# marker such as ``Q`` is spelled by "MySQL error 2003"), so a message can only show it by leaking.
MARKER = "\u01ea"  # Ǫ
# Everything printable but the marker and ``*`` (the mask itself).
_CHARS = st.characters(
    codec="utf-8",
    categories=("L", "N", "P", "S", "Zs"),
    exclude_characters=MARKER + "*",
)
passwords = st.builds(lambda head, tail: head + MARKER + tail, st.text(_CHARS), st.text(_CHARS))
# The parts around a password: nothing in them can spell a password, which holds the marker.
NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
names = st.text(NAME_CHARS, min_size=1, max_size=12)
schemes = st.sampled_from(
    ["postgresql+asyncpg", "postgresql", "mysql+aiomysql", "mariadb", "redis", "rediss"]
)


@st.composite
def urls(draw: st.DrawFn) -> tuple[URL, list[str]]:
    """A URL with a password in its user info, its query string or both, and those passwords."""
    password = draw(passwords)
    in_query = draw(st.sampled_from(["", "password", "passwd", "PWD"]))
    query_password = draw(passwords) if in_query else None
    url = URL.create(
        draw(schemes),
        username=draw(names),
        password=None if in_query and draw(st.booleans()) else password,
        host=draw(names),
        port=draw(st.none() | st.integers(1, 65535)),
        database=draw(names),
        query={in_query: query_password, "sslmode": "require"} if query_password else {},
    )
    secrets = [s for s in (url.password, query_password) if s is not None]
    return url, [str(secret) for secret in secrets]


def spellings(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote_plus(secret, safe="")}


def assert_hidden(message: str, secrets: list[str]) -> None:
    for secret in secrets:
        for spelling in spellings(secret):
            assert spelling not in message, f"{spelling!r} leaked in {message!r}"


def message_quoting(url: URL, secrets: list[str]) -> str:
    """What a driver or library might say: the URL in several renderings, the secrets bare."""
    rendered = url.render_as_string(hide_password=False)
    bare = " ".join(f"password={s!r} {s} ({quote(s, safe='')})" for s in secrets)
    return f"could not connect to {rendered} ({url!r}, {rendered!r}): {bare}"


@given(urls())
def test_a_rendered_url_shows_no_password(case: tuple[URL, list[str]]) -> None:
    url, secrets = case
    rendered = url.render_as_string(hide_password=False)

    for redacted in (redact_url(url), redact_url(rendered), engines.redact_url(rendered)):
        assert_hidden(redacted, secrets)
        assert f"@{url.host}" in redacted  # still says where


@given(st.lists(urls(), min_size=1, max_size=3), st.text(NAME_CHARS + " :,"))
def test_the_cli_scrub_masks_every_password_of_every_url(
    cases: list[tuple[URL, list[str]]], filler: str
) -> None:
    text = filler.join(message_quoting(url, secrets) for url, secrets in cases)
    rendered = [url.render_as_string(hide_password=False) for url, _ in cases]

    scrubbed = runtime.scrub(text, rendered)

    for _, secrets in cases:
        assert_hidden(scrubbed, secrets)


def encoded(url: URL) -> str:
    """``url`` as RFC 3986 spells it: every reserved character and blank percent-encoded."""
    userinfo = quote(url.username or "", safe="")
    if url.password is not None:
        userinfo += ":" + quote(str(url.password), safe="")
    query = "&".join(f"{key}={quote(str(value), safe='')}" for key, value in url.query.items())
    port = "" if url.port is None else f":{url.port}"
    return f"{url.drivername}://{userinfo}@{url.host}{port}/{url.database}?{query}"


@given(st.lists(urls(), min_size=1, max_size=3))
def test_a_url_nobody_named_is_masked_by_its_shape(cases: list[tuple[URL, list[str]]]) -> None:
    # e.g. a library echoes a URL the caller never passed in (SQLAlchemy's own rendering leaves
    # blanks unencoded, so only a URL the caller names is safe with those).
    text = "; ".join(f"failed at {encoded(url)}, retrying" for url, _ in cases)
    assert_hidden(scrub(text), [secret for _, secrets in cases for secret in secrets])


@given(urls())
def test_migration_error_descriptions_show_no_password(case: tuple[URL, list[str]]) -> None:
    url, secrets = case
    rendered = url.render_as_string(hide_password=False)
    exc = OperationalError("connect", {}, Exception(message_quoting(url, secrets)))

    described = describe_error(exc, url_passwords([rendered, None, "{database}"]))

    assert described.startswith("OperationalError: ")
    assert_hidden(described, secrets)


@given(case=urls())
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_cli_error_messages_show_no_password(
    case: tuple[URL, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    url, secrets = case
    rendered = url.render_as_string(hide_password=False)

    async def fail(_config: TenancyConfig) -> NoReturn:
        raise RuntimeError(message_quoting(url, secrets))

    capsys.readouterr()
    code = runtime.run_with_config(argparse.Namespace(), fail, secrets=[rendered])

    assert code == runtime.EXIT_FAILURE
    assert_hidden(capsys.readouterr().err, secrets)


def refused_url(password: str, scheme: str) -> str:
    # Port 1 on loopback: nothing listens, so the connection is refused at once.
    return URL.create(
        scheme, username="app", password=password, host="127.0.0.1", port=1, database="x"
    ).render_as_string(hide_password=False)


drivers = st.sampled_from(["postgresql+asyncpg", "mysql+aiomysql"])


@given(passwords, drivers)
@settings(max_examples=10, deadline=None)
def test_an_unreachable_store_says_so_without_the_password(password: str, scheme: str) -> None:
    async def lookup() -> ServiceUnavailable:
        engine = central_engine(TenancyConfig(database_url=refused_url(password, scheme)))
        try:
            with pytest.raises(ServiceUnavailable) as caught:
                await SQLAlchemyTenantStore(engine).get_by_identifier("acme")
        finally:
            await engine.dispose()
        return caught.value

    error = asyncio.run(lookup())

    assert_hidden(str(error), [password])
    assert "127.0.0.1:1" in str(error)


@given(passwords, drivers)
@settings(max_examples=10, deadline=None)
def test_an_unreachable_tenant_server_says_so_without_the_password(
    password: str, scheme: str
) -> None:
    # An explicit tenant URL: a database the operator made, perhaps on another server.
    url = refused_url(password, scheme)
    tenant = Tenant(identifier="acme", storage_name="t_acme", database_url=url)

    async def provision() -> ServiceUnavailable:
        isolation = DatabaseIsolation(TenantTables(MetaData()), engine_factory=create_async_engine)
        try:
            with pytest.raises(ServiceUnavailable) as caught:
                await isolation.provision(tenant)
        finally:
            await isolation.close()
        return caught.value

    error = asyncio.run(provision())

    assert_hidden(str(error), [password])


def test_an_unparsable_url_is_a_secret_whole() -> None:
    secret: Any = "not a url but QsecretQ"
    assert redact_url(secret) == "<unparsable URL>"
    assert secret in url_secrets([secret])
