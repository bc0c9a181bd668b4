"""The report of one ``prune``: typed, and serialised to report.json by :meth:`PruneReport.to_dict`
(the same keys report.json always had; optional parts are left out when they did not happen).

Readers in the library use the attributes (``report.latency.met_budget``); ``report["latency"]``
reads the JSON form, for code that treats a report as the file it becomes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Optional


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


@dataclass
class LatencyReport:
    """What the table predicted and, with a backend, what the closed loop measured (ms)."""

    baseline_predicted_ms: Optional[float] = None
    predicted_ms: Optional[float] = None
    speedup_predicted: Optional[float] = None
    backend: Optional[str] = None
    threads: Optional[int] = None
    precision: Optional[str] = None
    spinning: Optional[bool] = None
    statistic: Optional[str] = None
    baseline_ms: Optional[float] = None
    baseline_median_ms: Optional[float] = None
    baseline_p90_ms: Optional[float] = None
    measured_ms: Optional[float] = None
    measured_median_ms: Optional[float] = None
    measured_p90_ms: Optional[float] = None
    speedup_measured: Optional[float] = None
    table_drift: Optional[dict[str, Any]] = None
    budget_ms: Optional[float] = None
    met_budget: Optional[bool] = None
    # an int8 search on a share of the fp32 unpruned model: that model, timed in fp32 beside the result
    fp32_baseline_ms: Optional[float] = None
    speedup_over_fp32: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(dataclasses.asdict(self))


@dataclass
class PruneReport:
    """Everything ``hwprune prune`` says about its result (see module doc)."""

    model: dict[str, Any]
    strategy: str
    seed: int
    budget: Optional[dict[str, Any]]
    table: Optional[str]
    input_shape: list[int]
    config: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    flops_reduction: float
    params_reduction: float
    widths: dict[str, dict[str, int]]
    search_seconds: float
    evaluations: int
    cost: dict[str, Any]
    latency: Optional[LatencyReport] = None
    closed_loop: Optional[list[dict[str, Any]]] = None
    warnings: list[str] = field(default_factory=list)
    verdict: Optional[str] = None
    accuracy: Optional[dict[str, float]] = None
    finetune: Optional[dict[str, Any]] = None
    artifacts: list[str] = field(default_factory=list)
    evaluator: Optional[str] = None  # what scored candidates, in words (the CLI sets it)
    fallback: Optional[dict[str, Any]] = None  # `hwprune run`'s measured bisection, when it stood in
    regularize: Optional[dict[str, Any]] = None  # regularise-then-cut's history (hwprune.regularize), when asked
    devices: Optional[list[dict[str, Any]]] = None  # several budgets: one row per device (hwprune.devices)
    iterative: Optional[dict[str, Any]] = None  # --iterative K: per step target, cut, fine-tune (hwprune.iterative)
    sparsity: Optional[dict[str, Any]] = None  # 2:4 masks applied after the cut (hwprune.sparsify), when asked

    @property
    def met_budget(self) -> Optional[bool]:
        """True/False when a latency budget was checked by measurement, else None; with several
        budgets, whether every device measured met its budget (None if none was measured)."""
        if self.devices:
            measured = [r["met"] for r in self.devices if r.get("checked") == "measured"]
            return all(measured) if measured else None
        return self.latency.met_budget if self.latency is not None else None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "latency":
                v = v.to_dict() if v is not None else None
            elif f.name == "warnings" and not v:
                v = None
            elif f.name == "artifacts":
                v = list(v)
            if v is not None or f.name in ("budget", "table", "evaluator"):
                d[f.name] = v
        return d

    # the JSON view, for readers of report.json's shape
    def __getitem__(self, key: str) -> Any:
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    def __contains__(self, key: str) -> bool:
        return key in self.to_dict()
