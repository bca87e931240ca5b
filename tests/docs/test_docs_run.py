"""The README and the docs run as written, top to bottom, and print what they say they print (issue #15).

Each page is read for its fenced blocks and their `doc-test` markers (tests/docs/doc_blocks.py; the
convention is in docs/README.md). A real `lehnz serve` is started by the test in a fresh, empty
directory, as a reader starts it in a fresh clone (embedded Postgres and Redis under `./.lehnz`), on a
free port. The `run` blocks are then run in order by bash in that directory, with the exports of one
block carried to the next as in a reader's terminal, `set -eo pipefail` so that no failing command
goes unnoticed, and the `lehnz` of this checkout on the PATH. Each `output` block is compared with
what the run block before it printed (tests/docs/json_pattern.py: ids, keys, times, latencies and
versions are compared by type; everything else, scores included, exactly).

The one substitution: the docs say the server is at `localhost:8000` (README) or
`API=http://localhost:8000` (quickstart); the test's server listens on a free port, so every
`localhost:8000` and `127.0.0.1:8000` in the commands and the outputs becomes `...:<that port>`.

README.md runs against a server of its own. docs/quickstart.md runs against another, and then
docs/strategies.md, docs/integration.md and docs/import.md continue in the quickstart's terminal
(their examples use its `$API`, `$PK`, `$SK` and its organisation), in that order.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.cli.support import Serve, kill_embedded, remove_dir, scratch_dir
from tests.docs.doc_blocks import Block, read_blocks
from tests.docs.json_pattern import PatternError, mismatches, parse_pattern, split_documents

ROOT = Path(__file__).resolve().parents[2]
README = ["README.md"]
QUICKSTART_AND_AFTER = ["docs/quickstart.md", "docs/strategies.md", "docs/integration.md", "docs/import.md"]
PAGES = README + QUICKSTART_AND_AFTER
DOCUMENTED_HOST = re.compile(r"\b(localhost|127\.0\.0\.1):8000\b")
BLOCK_TIMEOUT_S = 150


def page_blocks(page: str) -> list[Block]:
    return read_blocks(ROOT / page, root=ROOT)


# --- every block is accounted for (fast) -------------------------------------------------------------
def test_every_block_of_the_pages_says_whether_and_how_it_runs() -> None:
    problems = []
    for page in PAGES:
        blocks = page_blocks(page)
        for previous, block in zip([None, *blocks], blocks, strict=False):
            if block.kind is None:
                problems.append(f"{block.where()}: a ```{block.language} block without a doc-test marker")
            elif block.kind == "output" and (previous is None or previous.kind not in ("run", "serve")):
                problems.append(f"{block.where()}: an output block that follows no run block")
            elif block.kind == "run" and block.language not in ("bash", "sh"):
                problems.append(f"{block.where()}: only shell blocks run")
            elif block.kind == "skip" and not block.argument:
                problems.append(f"{block.where()}: say why the block does not run")
            elif block.kind == "checked":
                test_file, _, test_name = block.argument.partition("::")
                if not (ROOT / test_file).is_file() or f"def {test_name}(" not in (ROOT / test_file).read_text():
                    problems.append(f"{block.where()}: no test {block.argument} checks this block")
    assert not problems, "\n".join(problems)


# --- running them ------------------------------------------------------------------------------------
@dataclass
class Terminal:
    """A reader's terminal: one directory, one server, exports carried from block to block."""

    directory: Path
    env: dict[str, str] = field(repr=False)
    serve: Serve = field(repr=False)
    problems: list[str] = field(default_factory=list)
    timings: list[tuple[str, float]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.serve.port

    def local(self, text: str) -> str:
        return DOCUMENTED_HOST.sub(lambda m: f"{m.group(1)}:{self.port}", text)

    def exports(self) -> dict[str, str]:
        path = self.directory / ".doc-test-env"
        if not path.exists():
            return {}
        pairs = (entry.split("=", 1) for entry in path.read_text().split("\0") if "=" in entry)
        return dict(pairs)

    def run(self, block: Block) -> subprocess.CompletedProcess[str]:
        script = (
            "set -eo pipefail\n"
            '[ -f .doc-test-state ] && . ./.doc-test-state\n'
            f"{self.local(block.text)}\n"
            "export -p > .doc-test-state\n"
            "env -0 > .doc-test-env\n"
        )
        started = time.monotonic()
        try:
            done = subprocess.run(["bash", "-c", script], cwd=self.directory, env=self.env, capture_output=True,
                                  text=True, timeout=BLOCK_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            self.problems.append(f"{block.where()}: still running after {BLOCK_TIMEOUT_S} s: {block.text[:300]}")
            return subprocess.CompletedProcess(exc.cmd, 124, str(exc.stdout or ""), str(exc.stderr or ""))
        self.timings.append((block.where(), time.monotonic() - started))
        if done.returncode != 0:
            self.problems.append(f"{block.where()}: exit {done.returncode}\n--- stdout\n{done.stdout[-2000:]}"
                                 f"\n--- stderr\n{done.stderr[-2000:]}")
        return done

    def request(self, block: Block, *, body: str | None = None) -> httpx.Response:
        """The request a `request`/`response` block names, with the key the page's terminal holds."""
        method, path = block.argument.split()[:2]
        publishable = path in ("/v1/recommend", "/v1/ingest/events/ingest")
        key = self.exports().get("PK" if publishable else "SK", "")
        return httpx.request(method, f"http://127.0.0.1:{self.port}{path}", timeout=30,
                             content=body if body is not None else block.text,
                             headers={"X-API-KEY": key, "Content-Type": "application/json"})

    def compare(self, block: Block, printed: str, what: str) -> None:
        shape = block.argument == "shape"
        expected = self.local(block.text)
        found = compare_output(expected, printed, shape=shape)
        if found:
            self.problems.append(f"{block.where()}: {what} differs from the docs:\n  " + "\n  ".join(found)
                                 + f"\n--- printed\n{printed[-3000:]}")


def compare_output(expected: str, printed: str, *, shape: bool) -> list[str]:
    try:
        patterns = parse_pattern(expected)
    except PatternError:
        return _compare_text(expected, printed, shape=shape)
    documents, rest = split_documents(printed)
    found = []
    if rest.strip():
        found.append(f"printed text that is not JSON: {rest[:300]!r}")
    if len(documents) != len(patterns):
        found.append(f"documented {len(patterns)} JSON answer(s), printed {len(documents)}")
    for index, (pattern, document) in enumerate(zip(patterns, documents, strict=False)):
        found += mismatches(pattern, document, path=f"answer {index + 1}", shape=shape)
    return found


def _compare_text(expected: str, printed: str, *, shape: bool) -> list[str]:
    def lines(text: str) -> list[str]:
        if shape:
            text = re.sub(r"\d[\d,.]*", "N", text)
            return [" ".join(line.split()) for line in text.strip().splitlines()]
        return [line.rstrip() for line in text.strip().splitlines()]

    want, got = lines(expected), lines(printed)
    if want == got:
        return []
    return [f"line {n + 1}: documented {w!r}, printed {g!r}"
            for n, (w, g) in enumerate(zip(want + [""] * len(got), got + [""] * len(want), strict=False))
            if w != g][:10]


def run_pages(terminal: Terminal, pages: list[str]) -> None:
    served_output = terminal.serve.log()
    for page in pages:
        blocks = page_blocks(page)
        printed: str | None = None
        for block in blocks:
            if block.kind == "run":
                done = terminal.run(block)
                printed = done.stdout
                if not _followed_by_output(blocks, block):
                    documents, _ = split_documents(printed)
                    failed = [d for d in documents if isinstance(d, dict) and d.get("success") is False]
                    if failed:
                        terminal.problems.append(f"{block.where()}: answered {failed}")
            elif block.kind == "serve":
                printed = served_output
            elif block.kind == "output":
                assert printed is not None
                if _after_serve(blocks, block):
                    missing = [line for line in terminal.local(block.text).strip().splitlines()
                               if line not in printed.splitlines()]
                    if missing:
                        terminal.problems.append(f"{block.where()}: lehnz serve did not print {missing}")
                else:
                    terminal.compare(block, printed, "the output")
            elif block.kind == "file":
                (terminal.directory / block.argument).write_text(terminal.local(block.text))
            elif block.kind == "request":
                response = terminal.request(block)
                if not response.is_success:
                    terminal.problems.append(f"{block.where()}: {block.argument} answered "
                                             f"{response.status_code} {response.text[:500]}")
            elif block.kind == "response":
                method_and_path = " ".join(block.argument.split()[:2])
                body = block.argument[len(method_and_path):].strip()
                response = terminal.request(block, body=body)
                terminal.compare(block, response.text, f"the answer to {block.argument}")


def _followed_by_output(blocks: list[Block], block: Block) -> bool:
    index = blocks.index(block)
    return index + 1 < len(blocks) and blocks[index + 1].kind == "output"


def _after_serve(blocks: list[Block], block: Block) -> bool:
    index = blocks.index(block)
    return index > 0 and blocks[index - 1].kind == "serve"


@pytest.fixture(scope="module")
def terminals() -> Iterator[dict[str, Terminal]]:
    """Two fresh directories, each with its `lehnz serve` (started together: each takes a while)."""
    made: dict[str, Terminal] = {}
    try:
        for name in ("readme", "quickstart"):
            directory, runtime = scratch_dir(f"doc-{name}"), scratch_dir(f"doc-{name}-run")
            env = {k: v for k, v in os.environ.items() if not k.startswith("LEHNZ_")}
            env.update({"PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
                        "XDG_RUNTIME_DIR": str(runtime)})
            serve = Serve(env, cwd=directory, log_path=runtime / "serve.log")
            made[name] = Terminal(directory, env, serve)
        for terminal in made.values():
            terminal.serve.wait_ready(timeout=180)
        yield made
    finally:
        for terminal in made.values():  # both stop at once: each takes a while
            with contextlib.suppress(ProcessLookupError):
                terminal.serve.process.send_signal(signal.SIGINT)
        for terminal in made.values():
            try:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    terminal.serve.process.wait(timeout=60)
            finally:
                terminal.serve.kill()
                kill_embedded(terminal.directory / ".lehnz")
                remove_dir(terminal.directory)
                remove_dir(Path(terminal.env["XDG_RUNTIME_DIR"]))


def _report(terminal: Terminal) -> str:
    slowest = sorted(terminal.timings, key=lambda t: -t[1])[:5]
    return "\n\n".join(terminal.problems) + "\n\nslowest blocks: " + ", ".join(f"{w} {s:.1f} s" for w, s in slowest)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_readme_walkthrough_runs_as_written(terminals: dict[str, Terminal]) -> None:
    terminal = terminals["readme"]
    run_pages(terminal, README)
    problems = terminal.problems
    assert not problems, _report(terminal)


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_the_quickstart_and_the_pages_after_it_run_as_written(terminals: dict[str, Terminal]) -> None:
    terminal = terminals["quickstart"]
    run_pages(terminal, QUICKSTART_AND_AFTER)
    problems = terminal.problems
    assert not problems, _report(terminal)


def test_json_in_the_docs_is_read_as_documented() -> None:
    """The comparison itself: `...` in its three places, masked ids, exact scores and messages."""
    documented = '{"a": 1, ..., "data": {"org_id": "...", "key": "lehnz_pk_...", "items": [{...}, ...]}}'
    assert not compare_output(documented, json.dumps(
        {"a": 1, "b": 2, "data": {"org_id": "x-1", "key": "lehnz_pk_abc", "items": [{"z": 0}, 3]}}), shape=False)
    assert compare_output(documented, json.dumps(
        {"a": 2, "data": {"org_id": "x", "key": "lehnz_sk_abc", "items": []}}), shape=False)
    assert compare_output('{"score": 0.18658}', '{"score": 0.040678}', shape=False)
    assert not compare_output('{"latency_ms": 71.2}', '{"latency_ms": 2.9}', shape=False)
    assert compare_output('{"model_version": "2026"}', '{"model_version": null}', shape=False)
    assert compare_output('{"a": 1}', '{"a": 1, "b": 2}', shape=False)  # an unshown member needs `...`
    assert not compare_output('{"a": 1}\n{"b": [1, 2]}', '{"a":1}{"b":[1,2]}', shape=False)  # curl, twice
    assert not compare_output('{"a": 1, "b": "x"}', '{"a": 7, "b": "y"}', shape=True)
    assert compare_output("lehnz serving on x", "lehnz serving on y", shape=False)
