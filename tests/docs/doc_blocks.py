"""The fenced blocks of a markdown page and the `doc-test` markers that say what each one is.

The convention (docs/README.md, "Docs that run"): an HTML comment on the line right before a fence,
invisible on the rendered page, never hiding a command (the commands are the fenced text itself):

    <!-- doc-test: run -->            a shell block, run as written in the page's bash session
    <!-- doc-test: output -->         what the run block before it prints (JSON compared with ids,
                                      keys, times and latencies masked; text compared line by line)
    <!-- doc-test: output shape -->   the same, but only the shape: keys, types, text with numbers masked
    <!-- doc-test: serve -->          starts the server: the test runs `lehnz serve` itself, and the
                                      block's output block is compared with what serve printed
    <!-- doc-test: file NAME -->      saved as NAME in the page's working directory (a script, a data file)
    <!-- doc-test: request METHOD PATH -->      a request body: sent, with the page's key, must succeed
    <!-- doc-test: response METHOD PATH BODY --> the answer the api gives to that request, compared
                                                 like an output block
    <!-- doc-test: checked TEST -->   not run as a command; the test named (path::function) checks
                                      the block against what the code renders
    <!-- doc-test: skip: REASON -->   not run, and why (an install step, a synopsis, a browser script)

Every fenced block of a page the test reads carries one marker, so a new example cannot escape it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*doc-test:\s*(.*?)\s*-->\s*$")
KINDS = ("run", "output", "serve", "file", "request", "response", "checked", "skip")


@dataclass(frozen=True)
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    kind: str | None  # one of KINDS, or None when the block has no marker
    argument: str  # what follows the kind in the marker

    def where(self) -> str:
        return f"{self.page}:{self.line}"


def read_blocks(path: Path, *, root: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    page = str(path.relative_to(root))
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        close = next((j for j in range(index + 1, len(lines)) if lines[j].strip() == fence.group(1)), None)
        assert close is not None, f"{page}:{index + 1}: unclosed code fence"
        kind, argument = _marker(lines, index)
        blocks.append(Block(page, index + 1, fence.group(2), "\n".join(lines[index + 1:close]) + "\n", kind, argument))
        index = close + 1
    return blocks


def _marker(lines: list[str], fence_index: int) -> tuple[str | None, str]:
    previous = fence_index - 1
    while previous >= 0 and not lines[previous].strip():
        previous -= 1
    found = _MARKER.match(lines[previous]) if previous >= 0 else None
    if not found:
        return None, ""
    words = found.group(1)
    kind, _, argument = words.partition(" ")
    kind = kind.rstrip(":")
    assert kind in KINDS, f"unknown doc-test marker {words!r} (one of {', '.join(KINDS)})"
    return kind, argument.strip()
