"""What an upgrade did: one `TenantMigration` per tenant, gathered in a `MigrationReport`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MigrationOutcome", "MigrationReport", "TenantMigration"]

MigrationOutcome = Literal["upgraded", "downgraded", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class TenantMigration:
    """One tenant's result; ``identifier`` is ``None`` for row isolation's shared tables.

    Revisions are Alembic revision ids (comma-separated when a database has several heads), or
    ``None`` for a database that has no version table yet. ``error`` is ``"Type: message"`` with
    any password masked, and set only when ``outcome`` is ``"failed"``.
    """

    identifier: str | None
    outcome: MigrationOutcome
    from_revision: str | None
    to_revision: str | None
    error: str | None
    seconds: float


@dataclass(frozen=True, slots=True)
class MigrationReport:
    """Every tenant's result, in the order the tenants were listed, and the total time."""

    migrations: tuple[TenantMigration, ...]
    seconds: float

    @property
    def upgraded(self) -> int:
        return self._count("upgraded")

    @property
    def downgraded(self) -> int:
        return self._count("downgraded")

    @property
    def skipped(self) -> int:
        return self._count("skipped")

    @property
    def failed(self) -> int:
        return self._count("failed")

    @property
    def ok(self) -> bool:
        """Whether no tenant failed."""
        return self.failed == 0

    def _count(self, outcome: MigrationOutcome) -> int:
        return sum(1 for migration in self.migrations if migration.outcome == outcome)
