"""``fastapi-tenancy config reference``: every setting, its env var, default and effect."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastapi_tenancy.cli.output import print_error
from fastapi_tenancy.cli.runtime import (
    EXIT_FAILURE,
    EXIT_OK,
    Commands,
    add_command,
    add_group,
)
from fastapi_tenancy.config_reference import config_reference, replace_reference

__all__ = ["register"]


def register(commands: Commands, common: argparse.ArgumentParser) -> None:
    sub = add_group(
        commands,
        "config",
        help="the configuration reference",
        description="Print the reference of every TENANCY_* setting of this version.",
        common=common,
    )
    reference = add_command(
        sub,
        "reference",
        help="print every setting as Markdown tables",
        description="Print every TENANCY_* setting (field, env var, default, effect) as Markdown. "
        "With --write, replace the generated part of a page (below its marker) instead.",
        common=common,
        handler=_reference,
    )
    reference.add_argument(
        "--write", type=Path, metavar="PAGE", help="update the reference in this Markdown page"
    )


def _reference(args: argparse.Namespace) -> int:
    if args.write is None:
        print(config_reference(), end="")
        return EXIT_OK
    page: Path = args.write
    try:
        page.write_text(replace_reference(page.read_text(encoding="utf-8")), encoding="utf-8")
    except (OSError, ValueError) as exc:
        print_error(f"cannot update {page}: {exc}")
        return EXIT_FAILURE
    print(f"updated {page}")
    return EXIT_OK
