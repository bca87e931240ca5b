"""The examples of the docs that a reader's terminal cannot reproduce as written, checked against what
the code renders (the `doc-test: checked` blocks; see tests/docs/doc_blocks.py).

A 429 needs an org limited to a few requests, and an import that fails needs a bad file whose
failure would stop the page's `set -e` run: both are made here, with the api and the importer
themselves, and compared with the block the page shows (numbers that depend on the moment or the
file, such as `Retry-After` or a line number, masked).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.bulk_import.staging import ImportFailed, run_import
from app.settings import Settings
from tests.docs.doc_blocks import Block, read_blocks
from tests.factories import OrgKeys, event

ROOT = Path(__file__).resolve().parents[2]


def checked_block(page: str, test_name: str) -> Block:
    found = [block for block in read_blocks(ROOT / page, root=ROOT)
             if block.kind == "checked" and block.argument.endswith(f"::{test_name}")]
    assert len(found) == 1, f"{page} has {len(found)} blocks checked by {test_name}"
    return found[0]


def _numbers_masked(text: str) -> str:
    return re.sub(r"\d+", "N", text)


async def test_the_429_shown_in_the_integration_guide_is_what_the_api_sends(app_with: Any, org: OrgKeys) -> None:
    block = checked_block("docs/integration.md", "test_the_429_shown_in_the_integration_guide_is_what_the_api_sends")
    head, _, body = block.text.strip().partition("\n\n")
    status_line, *header_lines = head.splitlines()
    documented_headers = dict(line.split(": ", 1) for line in header_lines)
    limit = documented_headers["ratelimit-limit"]
    async with app_with(rate_limit=f"{limit}/minute") as client:
        for _ in range(int(limit)):
            accepted = await client.post("/v1/ingest/events/ingest", json=event("u", "view", "i"), headers=org.pk)
            assert accepted.status_code == 202
        limited = await client.post("/v1/ingest/events/ingest", json=event("u", "view", "i"), headers=org.pk)

    assert f"HTTP/1.1 {limited.status_code} {limited.reason_phrase}" == status_line
    for name, value in documented_headers.items():
        assert name in limited.headers, name
        if name == "ratelimit-limit" or name == "ratelimit-remaining":
            assert limited.headers[name] == value
        else:  # seconds to the end of the window: the moment's
            assert limited.headers[name].isdigit() and value.isdigit()
    assert limited.headers["retry-after"] == limited.headers["ratelimit-reset"]
    assert _numbers_masked(limited.text) == _numbers_masked(body)
    assert orjson.loads(limited.text).keys() == orjson.loads(body).keys()


async def test_the_import_errors_shown_are_what_the_importer_reports(
    settings: Settings, org: OrgKeys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = checked_block("docs/import.md", "test_the_import_errors_shown_are_what_the_importer_reports")
    *documented_errors, documented_summary = block.text.strip().splitlines()
    records: list[dict[str, Any]] = [event(f"u{n}", "view", f"sku-{n}") for n in range(6)]
    records[1]["event_family"] = "click"
    records[4] = {"user_id": "u4", "event_family": "system", "event_name": "identify"}
    monkeypatch.chdir(tmp_path)  # the page's command names the file relative to where it runs
    Path("events.jsonl").write_bytes(b"".join(orjson.dumps(record) + b"\n" for record in records))

    with pytest.raises(ImportFailed) as failed:
        await run_import(settings, org=org.slug, events=Path("events.jsonl"))

    assert [line.split(":")[1] for line in failed.value.errors] == ["2", "5"]  # the bad lines, in order
    masked = [re.sub(r"^events\.jsonl:\d+:", "events.jsonl:N:", line) for line in failed.value.errors]
    assert masked == [re.sub(r"^events\.jsonl:\d+:", "events.jsonl:N:", line) for line in documented_errors]
    # the last line is the command's: `error: ` and the exception's message
    assert documented_summary == f"error: {failed.value}"
