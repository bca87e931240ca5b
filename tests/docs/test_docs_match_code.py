"""Numbers the docs state, read from the code, so the two cannot drift apart again.

docs/strategies.md once described session_based with blend weights older than the tuned ones
in the code; the README pointed to an API.md that is not in the repository for the event
weights. Each test here fails as soon as a documented number and its code disagree.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.recommend.strategies import session
from app.settings import DEFAULT_EVENT_WEIGHTS, DEFAULT_FAMILY_WEIGHTS

ROOT = Path(__file__).resolve().parents[2]


def _read(name: str) -> str:
    return " ".join((ROOT / name).read_text().split())  # line breaks as plain spaces


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find(" ### ", start + len(heading))
    return text[start:end if end > 0 else None]


def _number(text: str) -> float:
    return float(text.replace("+", ""))


def test_the_session_based_blend_weights_are_the_codes() -> None:
    text = _section(_read("docs/strategies.md"), "### session_based")
    found = re.search(
        r"go on to next after each item \(weight ([\d.]+)\), behavioural neighbours \(([\d.]+)\) "
        r"and attribute neighbours \(([\d.]+)\)",
        text,
    )
    assert found, "docs/strategies.md no longer states session_based's blend weights in the known words"
    parts = ("transitions", "item_neighbors", "content_neighbors")
    documented = dict(zip(parts, map(float, found.groups()), strict=True))
    assert documented == dict(session._INTENT_PARTS)
    window = re.search(r"the user's last (\d+) distinct items", text)
    assert window and int(window.group(1)) == session.SESSION_WINDOW
    decay = re.search(r"weighing most \(1, ([\d.]+), ([\d.]+), \.\.\.\)", text)
    assert decay and float(decay.group(1)) == session._RECENCY_DECAY
    assert abs(float(decay.group(2)) - session._RECENCY_DECAY**2) < 1e-9


def test_the_event_weight_table_is_the_codes() -> None:
    text = _read("docs/integration.md")
    rows = dict(re.findall(r"\| `([a-z_]+)` \| [a-z]+ \| (-?[\d.]+) \|", _section(text, "### Event names")))
    assert {name: _number(weight) for name, weight in rows.items()} == DEFAULT_EVENT_WEIGHTS
    families = re.search(r"\| any other name \| engagement / conversion \| ([\d.]+) / ([\d.]+) \|", text)
    assert families and (float(families.group(1)), float(families.group(2))) == (
        DEFAULT_FAMILY_WEIGHTS["engagement"], DEFAULT_FAMILY_WEIGHTS["conversion"])
    exposure = re.search(r"\| any name \| exposure \| ([\d.]+) \|", text)
    assert exposure and float(exposure.group(1)) == DEFAULT_FAMILY_WEIGHTS["exposure"]


def test_the_other_pages_state_the_same_weights() -> None:
    strategies = _read("docs/strategies.md")
    listed = re.search(r"Events are weighted \(([^;]+); other names by family: ([^;]+);", strategies)
    assert listed, "docs/strategies.md no longer lists the event weights in the known words"
    names = {n: float(w) for n, w in re.findall(r"([a-z_]+) (-?[\d.]+)", listed.group(1))}
    assert names == DEFAULT_EVENT_WEIGHTS
    by_family = {n: float(w) for n, w in re.findall(r"([a-z]+) (-?[\d.]+)", listed.group(2))}
    assert by_family and by_family == {k: DEFAULT_FAMILY_WEIGHTS[k] for k in by_family}
    readme = _read("README.md")
    row = re.search(r"\| `LEHNZ_FAMILY_WEIGHTS` \| `(\{[^`]+\})` \|", readme)
    assert row and {k: float(v) for k, v in re.findall(r'"([a-z]+)": (-?[\d.]+)', row.group(1))} == (
        DEFAULT_FAMILY_WEIGHTS)


def test_no_page_points_to_a_document_that_is_not_in_the_repository() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        text = page.read_text()
        assert "API.md" not in text, page
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", text):
            assert (page.parent / target).exists(), (page, target)
