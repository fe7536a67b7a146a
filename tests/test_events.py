"""⑥ Events: every lifecycle change reaches the hooks, and a failing hook changes nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fastapi_tenancy import Tenancy, TenancyConfig, TenantStatus
from fastapi_tenancy.observe import Event, Hooks, TenancyObserver, TenantChanged
from tests.support.models import Base


@pytest.fixture
async def tenancy(tmp_path: Path) -> AsyncIterator[Tenancy]:
    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'events.db'}", tenant_metadata=Base.metadata
    )
    async with Tenancy(config) as tenancy:
        yield tenancy


async def test_every_lifecycle_change_emits_one_event_in_order(tenancy: Tenancy) -> None:
    seen: list[tuple[str, TenantStatus | None, TenantStatus]] = []
    tenancy.hooks.subscribe(
        TenantChanged, lambda e: seen.append((e.action, e.previous, e.tenant.status))
    )
    await tenancy.create_tenant("acme")
    await tenancy.suspend_tenant("acme")
    await tenancy.suspend_tenant("acme")  # already suspended: no change, no event
    await tenancy.activate_tenant("acme")
    await tenancy.delete_tenant("acme")
    await tenancy.restore_tenant("acme")
    await tenancy.delete_tenant("acme")
    await tenancy.purge_tenant("acme")
    s = TenantStatus
    assert seen == [
        ("create", None, s.PENDING),
        ("start_provisioning", s.PENDING, s.PROVISIONING),
        ("provision", s.PROVISIONING, s.ACTIVE),
        ("suspend", s.ACTIVE, s.SUSPENDED),
        ("activate", s.SUSPENDED, s.ACTIVE),
        ("delete", s.ACTIVE, s.DELETED),
        ("restore", s.DELETED, s.ACTIVE),
        ("delete", s.ACTIVE, s.DELETED),
        ("purge", s.DELETED, s.DELETED),
    ]


async def test_async_hooks_are_awaited(tenancy: Tenancy) -> None:
    seen: list[str] = []

    async def handler(event: TenantChanged) -> None:
        seen.append(event.tenant.identifier)

    tenancy.hooks.subscribe(TenantChanged, handler)
    await tenancy.create_tenant("acme")
    assert seen == ["acme", "acme", "acme"]


class HookFailures(TenancyObserver):
    def __init__(self) -> None:
        self.actions: list[str] = []

    def hook_failed(self, event: Event) -> None:
        assert isinstance(event, TenantChanged)
        self.actions.append(event.action)


async def test_a_failing_hook_never_undoes_or_blocks_a_change_and_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(event: TenantChanged) -> None:
        raise RuntimeError("hook bug")

    config = TenancyConfig(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'events.db'}",
        tenant_metadata=Base.metadata,
        enable_metrics=True,
    )
    failures = HookFailures()
    later: list[str] = []
    async with Tenancy(config, observers=[failures]) as tenancy:
        tenancy.hooks.subscribe(TenantChanged, broken)
        tenancy.hooks.subscribe(TenantChanged, lambda e: later.append(e.action))
        await tenancy.create_tenant("acme")
        suspended = await tenancy.suspend_tenant("acme")
        assert suspended.status is TenantStatus.SUSPENDED
        stored = await tenancy.get_tenant("acme")
        assert stored is not None
        assert stored.status is TenantStatus.SUSPENDED
        assert later[-1] == "suspend"
        assert failures.actions == ["create", "start_provisioning", "provision", "suspend"]
        assert tenancy.metrics is not None
        assert tenancy.metrics.registry is not None
        counted = tenancy.metrics.registry.get_sample_value("fastapi_tenancy_hook_failures_total")
        assert counted == 4
        with pytest.warns(DeprecationWarning, match="Hooks.failures"):
            assert tenancy.hooks.failures == 4
    assert "hook bug" in caplog.text


async def test_unsubscribed_hooks_hear_nothing() -> None:
    hooks = Hooks()
    seen: list[Event] = []
    unsubscribe = hooks.subscribe(Event, seen.append)
    await hooks.emit(Event())
    unsubscribe()
    await hooks.emit(Event())
    assert len(seen) == 1
