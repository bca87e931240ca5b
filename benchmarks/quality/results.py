"""What a protocol reports: rows of metrics (strategies, baselines, references), goals, facts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Kind = Literal["strategy", "baseline", "reference", "candidate"]


@dataclass
class Row:
    name: str
    kind: Kind  # strategy: the server's answer; baseline: measured here; reference: published/ablation
    metrics: dict[str, float | None]  # None: not published / not applicable
    note: str = ""


@dataclass
class Goal:
    text: str
    met: bool
    detail: str
    closing: str = ""  # when unmet: the gap's cause and what would close it


@dataclass
class ProtocolResult:
    key: str
    title: str
    description: str  # the protocol, precisely enough to reproduce it (markdown)
    columns: list[str]  # metric names, in display order
    rows: list[Row]
    facts: dict[str, Any] = field(default_factory=dict)  # splits, seeds, counts, parameters
    goals: list[Goal] = field(default_factory=list)
    seconds: float = 0.0

    def row(self, name: str) -> Row:
        return next(r for r in self.rows if r.name == name)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Metric-wise mean over folds."""
    return {name: sum(run[name] for run in runs) / len(runs) for name in runs[0]}
