"""The docs stay true to the code: every setting is documented with its variable."""

from __future__ import annotations

from pathlib import Path

from fastapi_tenancy import TenancyConfig

DOCS = Path(__file__).parent.parent / "docs"


def test_every_config_field_is_in_the_configuration_reference() -> None:
    reference = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for name in TenancyConfig.model_fields:
        assert f"| `{name}` | `TENANCY_{name.upper()}` |" in reference, name
