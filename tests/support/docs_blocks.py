"""Fenced code blocks of the Markdown docs, with the ``<!-- docs: ... -->`` marker before each.

Markers (an HTML comment on the last non-blank line before the fence):

* ``<!-- docs: not-run (reason) -->`` — the block is shown but not executed; the reason is
  required. Keep these rare.
* ``<!-- docs: continue -->`` — the block goes on from the previous Python block of the page, in
  the same namespace (fragments of one example).
* ``<!-- docs: pytest -->`` — the block is a test module: it is run with pytest, and then, like
  any block, executed so later ``continue`` blocks can use its names.

A block whose whole body is ``--8<-- "path"`` (pymdownx.snippets) stands for that file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*docs:\s*(?P<kind>[\w-]+)\s*(?P<rest>.*?)\s*-->\s*$")
_SNIPPET = re.compile(r'^--8<--\s+"(?P<path>[^"]+)"$')
MARKERS = {"not-run", "continue", "pytest"}


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and its marker."""

    page: str
    line: int  # the line of the first line of code, 1-based
    lang: str
    source: str
    marker: str | None = None
    reason: str = ""

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def snippet(self) -> Path | None:
        match = _SNIPPET.match(self.source.strip())
        return ROOT / match["path"] if match else None

    def text(self) -> str:
        """The code, with a snippet replaced by the file it includes."""
        snippet = self.snippet
        return snippet.read_text(encoding="utf-8") if snippet is not None else self.source


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page``, in order."""
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    name = str(page.relative_to(ROOT))
    previous = ""
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            if lines[index].strip():
                previous = lines[index]
            index += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: list[str] = []
        start = index + 2
        index += 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
            index += 1
        marker = _MARKER.match(previous)
        found.append(
            Block(
                page=name,
                line=start,
                lang=opening["lang"].lower(),
                source="\n".join(body) + "\n",
                marker=marker["kind"] if marker else None,
                reason=marker["rest"] if marker else "",
            )
        )
        previous = ""
        index += 1
    return found


def all_blocks() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


def python_chains() -> list[list[Block]]:
    """Python blocks to execute, grouped: a ``continue`` block joins the chain before it."""
    chains: list[list[Block]] = []
    for page in PAGES:
        page_chains: list[list[Block]] = []
        for block in blocks(page):
            if block.lang != "python" or block.marker == "not-run":
                continue
            if block.marker == "continue" and page_chains:
                page_chains[-1].append(block)
            else:
                page_chains.append([block])
        chains.extend(page_chains)
    return chains
