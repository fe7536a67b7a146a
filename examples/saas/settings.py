"""The SaaS example's settings: ``saas.env`` next to this file, under the process environment.

``saas.env`` fixes what makes this example what it is — schema isolation, JWT resolution,
Redis-backed rate limiting, Alembic-owned tenant tables — and points at local servers;
``TENANCY_*`` variables override it, and ``TENANCY_JWT_SECRET`` must come from the environment.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from fastapi_tenancy import TenancyConfig

HERE = Path(__file__).parent
SAAS_ENV = HERE / "saas.env"
ALEMBIC_INI = HERE / "alembic.ini"


def tenancy_config() -> TenancyConfig:
    """`TenancyConfig` from the environment, with ``saas.env`` for what it leaves unset."""
    return TenancyConfig(_env_file=SAAS_ENV)


def alembic_config() -> Config:
    """The Alembic config of the tenant tables (``alembic.ini`` next to this file)."""
    return Config(str(ALEMBIC_INI))
