"""`python -m build` makes an sdist and a wheel that install in a fresh venv and work.

Slow (it builds, creates virtualenvs and installs dependencies from the package index), so it
runs with ``pytest -m slow`` and ``nox -s package``, not in the default run.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

import fastapi_tenancy

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent.parent
SMOKE = Path(__file__).parent / "smoke.py"
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
VERSION = PROJECT["version"]
# The file-name form of the distribution name (PEP 427): fastapi-tenancy-kit → fastapi_tenancy_kit.
DIST = PROJECT["name"].replace("-", "_")
# What a distribution must never carry: local databases, environments, caches, VCS data.
JUNK_PARTS = {".venv", ".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".nox"}
JUNK_SUFFIXES = (".db", ".db-journal", ".db-wal", ".db-shm", ".pyc")


def run(*args: str | Path, cwd: Path = ROOT) -> str:
    result = subprocess.run(
        [str(arg) for arg in args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    return out


def only(folder: Path, pattern: str) -> Path:
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {folder}, found {found}"
    return found[0]


def assert_no_junk(names: list[str]) -> None:
    for name in names:
        parts = set(Path(name).parts)
        assert not parts & JUNK_PARTS, name
        assert not name.endswith(JUNK_SUFFIXES), name


def test_version_is_one_string_everywhere() -> None:
    assert fastapi_tenancy.__version__ == VERSION
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert "keepachangelog.com" in changelog


def test_sdist_has_license_readme_and_typing_marker_and_no_junk(dist: Path) -> None:
    sdist = only(dist, f"{DIST}-{VERSION}.tar.gz")
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    top = f"{DIST}-{VERSION}"
    for required in (
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "pyproject.toml",
        "src/fastapi_tenancy/py.typed",
        "src/fastapi_tenancy/__init__.py",
        "src/fastapi_tenancy/testing.py",
    ):
        assert f"{top}/{required}" in names, required
    assert_no_junk(names)


def test_wheel_has_the_package_typing_marker_license_and_console_script(dist: Path) -> None:
    wheel = only(dist, f"{DIST}-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = f"{DIST}-{VERSION}.dist-info"
        entry_points = archive.read(f"{info}/entry_points.txt").decode()
        metadata = archive.read(f"{info}/METADATA").decode()
    assert "fastapi_tenancy/py.typed" in names
    assert "fastapi_tenancy/cli/__init__.py" in names
    assert any(name.startswith(f"{info}/licenses/LICENSE") for name in names), names
    assert "fastapi-tenancy = fastapi_tenancy.cli:main" in entry_points
    assert "Provides-Extra: testing" in metadata
    assert f"Name: {PROJECT['name']}\n" in metadata
    assert all(name.startswith(("fastapi_tenancy/", info)) for name in names), names
    assert_no_junk(names)


@pytest.mark.parametrize("artifact", ["wheel", "sdist"])
def test_distribution_installs_in_a_fresh_venv_and_serves_a_tenant(
    dist: Path, tmp_path: Path, artifact: str
) -> None:
    pattern = "*.whl" if artifact == "wheel" else "*.tar.gz"
    package = only(dist, pattern)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True, clear=True)
    bin_dir = env_dir / "bin"
    run(bin_dir / "python", "-m", "pip", "install", "--quiet", f"{package}[testing]")
    output = run(bin_dir / "python", SMOKE, tmp_path, cwd=tmp_path)
    assert f"smoke ok: {PROJECT['name']} {VERSION} from {env_dir}" in output
    help_text = run(bin_dir / "fastapi-tenancy", "--help", cwd=tmp_path)
    for command in ("tenants", "migrate", "worker", "doctor"):
        assert command in help_text
