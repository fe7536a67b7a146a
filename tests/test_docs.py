"""The docs stay true to the code: every setting is documented, and every code block runs.

Python blocks in ``docs/*.md`` and ``README.md`` are executed (see `tests.support.docs_blocks` for
the ``<!-- docs: ... -->`` markers), YAML and JSON blocks must parse, and shell blocks must be valid
bash.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
import yaml

from fastapi_tenancy import TenancyConfig
from fastapi_tenancy.config_reference import replace_reference
from tests.support.docs_blocks import MARKERS, ROOT, Block, all_blocks, python_chains

DOCS = ROOT / "docs"
CHAINS = python_chains()


def test_the_configuration_reference_is_generated_from_the_config() -> None:
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    assert page == replace_reference(page), (
        "docs/configuration.md is out of date: run "
        "`fastapi-tenancy config reference --write docs/configuration.md`"
    )


def test_every_config_field_is_in_the_configuration_reference() -> None:
    reference = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for name in TenancyConfig.model_fields:
        assert f"| `{name}` | `TENANCY_{name.upper()}` |" in reference, name


def test_markers_are_known_and_not_run_says_why() -> None:
    blocks = all_blocks()
    assert blocks, "no code blocks found"
    for block in blocks:
        if block.marker is None:
            continue
        assert block.marker in MARKERS, f"{block.id}: unknown marker {block.marker!r}"
        if block.marker == "not-run":
            why = f"{block.id}: write the reason, <!-- docs: not-run (why) -->"
            assert block.reason.startswith("("), why
            assert len(block.reason) > 4, why
        if block.marker in ("continue", "pytest"):
            assert block.lang == "python", f"{block.id}: {block.marker} is for Python blocks"
        if block.snippet is not None:
            assert block.snippet.is_file(), f"{block.id}: {block.snippet} does not exist"


def test_not_run_blocks_stay_rare() -> None:
    python = [block for block in all_blocks() if block.lang == "python"]
    skipped = [block.id for block in python if block.marker == "not-run"]
    assert len(skipped) * 10 <= len(python), f"too many not-run blocks: {skipped}"


def docs_environment(tmp_path: Path) -> dict[str, str]:
    """This process's environment without TENANCY_* settings: the docs' examples use defaults."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not (name.startswith("TENANCY_") and not name.startswith("TENANCY_TEST_"))
    }
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(tmp_path)
    return env


def run(args: list[str], tmp_path: Path) -> None:
    result = subprocess.run(
        args,
        cwd=tmp_path,
        env=docs_environment(tmp_path),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


TIMEOUT = 180


class ChainRunner:
    """``tests.support.docs_runner --serve``: a process that has imported the library and forks a
    fresh child for each chain, so no chain pays an interpreter start of its own."""

    def __init__(self, directory: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.docs_runner", "--serve"],
            cwd=directory,
            env=docs_environment(directory),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, payload: Path, tmp_path: Path) -> None:
        output = tmp_path / "output.txt"
        request = {
            "blocks": str(payload),
            "cwd": str(tmp_path),
            "env": docs_environment(tmp_path),
            "output": str(output),
            "timeout": TIMEOUT,
        }
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, f"the chain runner exited with {self.process.wait()}"
        assert int(answer) == 0, output.read_text(encoding="utf-8")

    def close(self) -> None:
        self.process.communicate(timeout=TIMEOUT)  # closes its stdin: the runner exits


@pytest.fixture(scope="module")
def chain_runner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainRunner]:
    runner = ChainRunner(tmp_path_factory.mktemp("chain-runner"))
    try:
        yield runner
    finally:
        runner.close()


@pytest.mark.parametrize("chain", CHAINS, ids=[chain[0].id for chain in CHAINS])
def test_python_blocks_run(chain: list[Block], tmp_path: Path, chain_runner: ChainRunner) -> None:
    # The migrations page upgrades with Config("alembic.ini"): give it the SaaS example's scripts.
    (tmp_path / "alembic.ini").write_text(
        f"[alembic]\nscript_location = {ROOT / 'examples' / 'saas' / 'migrations'}\n",
        encoding="utf-8",
    )
    if chain[0].marker == "pytest":
        module = tmp_path / "test_docs_example.py"
        module.write_text(chain[0].text(), encoding="utf-8")
        (tmp_path / "pytest.ini").write_text(
            "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n",
            encoding="utf-8",
        )
        run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(module)], tmp_path)
    blocks = [{**asdict(block), "source": block.text()} for block in chain]
    payload = tmp_path / "blocks.json"
    payload.write_text(json.dumps(blocks), encoding="utf-8")
    chain_runner.run(payload, tmp_path)


def test_yaml_and_json_blocks_parse() -> None:
    for block in all_blocks():
        if block.marker == "not-run":
            continue
        if block.lang in ("yaml", "yml"):
            assert list(yaml.safe_load_all(block.text())), block.id
        elif block.lang == "json":
            json.loads(block.text())


def test_shell_blocks_are_valid_bash() -> None:
    for block in all_blocks():
        if block.lang in ("bash", "sh", "shell") and block.marker != "not-run":
            result = subprocess.run(
                ["bash", "-n"], input=block.text(), capture_output=True, text=True, check=False
            )
            assert result.returncode == 0, f"{block.id}: {result.stderr}"
