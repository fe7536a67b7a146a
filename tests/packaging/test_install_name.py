"""Every install command in the docs names this project's distribution, never the other one.

``pip install fastapi-tenancy`` installs an unrelated project that also imports as
``fastapi_tenancy``; this one is published as ``fastapi-tenancy-kit``.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
NAME = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = sorted((ROOT / "src").rglob("*.py"))
# A requirement in an install command: the name, optionally quoted, with optional extras.
INSTALL = re.compile(r"pip install\s+['\"]?(fastapi[-_]tenancy[\w-]*)(\[[\w,]+\])?")


def install_targets(path: Path) -> list[str]:
    return [match[1] for match in INSTALL.finditer(path.read_text(encoding="utf-8"))]


def test_the_distribution_is_not_named_like_the_unrelated_fastapi_tenancy_project() -> None:
    assert NAME == "fastapi-tenancy-kit"


def test_every_documented_and_suggested_install_names_this_distribution() -> None:
    found = {path: install_targets(path) for path in DOCUMENTS + SOURCES}
    wrong = {str(path): names for path, names in found.items() if set(names) - {NAME}}
    assert not wrong, f"install commands naming another distribution: {wrong}"
    assert sum(len(names) for names in found.values()) >= 5  # the check sees the commands


def test_the_readme_warns_about_the_other_project() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"pip install {NAME}" in readme
    assert "not `fastapi-tenancy`" in readme
