"""⑥ One observer: every report reaches the app's observers, and composing costs no extra call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from fastapi_tenancy import Tenancy, TenancyConfig, TenancyMiddleware
from fastapi_tenancy.exceptions import (
    AuthenticationFailed,
    InvalidTenantIdentifier,
    PrincipalNotAllowed,
    RateLimitExceeded,
    ServiceUnavailable,
    TenancyError,
    TenantNotFound,
    TenantSuspended,
)
from fastapi_tenancy.models import Tenant
from fastapi_tenancy.observe import TenancyObserver, compose
from fastapi_tenancy.observe.observer import handler
from tests.support.models import Base


class Recorder(TenancyObserver):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    def admitted(self, tenant: Tenant) -> None:
        self.seen.append(("admitted", tenant.identifier))

    def refused(self, error: TenancyError, tenant: Tenant | None) -> None:
        self.seen.append((error.outcome, tenant.identifier if tenant is not None else None))


class Other(TenancyObserver):
    def __init__(self) -> None:
        self.admitted_count = 0

    def admitted(self, tenant: Tenant) -> None:
        self.admitted_count += 1


def test_a_report_left_at_its_default_has_no_handler() -> None:
    recorder = Recorder()
    assert handler(recorder, "admitted") == recorder.admitted
    assert handler(recorder, "resolved") is None
    assert handler(None, "admitted") is None


def test_composing_binds_a_lone_implementation_directly_and_fans_out_to_several() -> None:
    recorder, other = Recorder(), Other()
    assert compose(None, recorder) is recorder
    lone = compose(recorder, TenancyObserver())
    assert lone.refused == recorder.refused
    assert handler(lone, "resolved") is None
    both = compose(recorder, other)
    tenant = Tenant(identifier="acme", name="Acme")
    both.admitted(tenant)
    assert recorder.seen == [("admitted", "acme")]
    assert other.admitted_count == 1


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (TenantNotFound, "not_found"),
        (InvalidTenantIdentifier, "not_found"),
        (PrincipalNotAllowed, "not_found"),
        (TenantSuspended, "suspended"),
        (AuthenticationFailed, "unauthorized"),
        (RateLimitExceeded, "rate_limited"),
        (ServiceUnavailable, "unavailable"),
        (TenancyError, "error"),
    ],
)
def test_every_error_carries_its_outcome(error: type[TenancyError], outcome: str) -> None:
    assert error.outcome == outcome


def test_an_error_class_naming_no_outcome_gets_one_from_its_status() -> None:
    class Forbidden(TenancyError):
        status_code = 403

    class Teapot(TenancyError):
        status_code = 418

    class StillSuspended(TenantSuspended):
        status_code = 401

    assert Forbidden.outcome == "forbidden"
    assert Teapot.outcome == "error"
    assert StillSuspended.outcome == "suspended"


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Recorder]]:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'observer.db'}",
        tenant_metadata=Base.metadata,
    )
    recorder = Recorder()
    async with Tenancy(config, observers=[recorder]) as tenancy:
        await tenancy.create_tenant("acme")
        await tenancy.create_tenant("globex")
        await tenancy.suspend_tenant("globex")
        app = FastAPI()

        @app.get("/ping")
        async def ping() -> dict[str, bool]:
            return {"ok": True}

        app.add_middleware(TenancyMiddleware, tenancy=tenancy)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client, recorder


async def test_the_apps_observer_hears_every_admission_and_refusal(
    observed: tuple[httpx.AsyncClient, Recorder],
) -> None:
    client, recorder = observed
    assert (await client.get("/ping", headers={"X-Tenant-ID": "acme"})).status_code == 200
    assert (await client.get("/ping", headers={"X-Tenant-ID": "globex"})).status_code == 403
    assert (await client.get("/ping", headers={"X-Tenant-ID": "nobody"})).status_code == 404
    assert (await client.get("/ping")).status_code == 404
    assert recorder.seen == [
        ("admitted", "acme"),
        ("suspended", None),
        ("not_found", None),
        ("not_found", None),
    ]
