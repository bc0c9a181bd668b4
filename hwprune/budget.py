"""Budgets: what the user wants to spend, turned into a number in a cost model's unit.

    parse_budget("12ms")       -> Budget("ms", 12.0)         absolute latency on the table's device
    parse_budget("0.5x")       -> Budget("x", 0.5)           fraction of the unpruned latency
    parse_budget("2.0speedup") -> Budget("speedup", 2.0)     baseline / 2.0
    parse_budget("50%flops")   -> Budget("flops_pct", 50.0)  fraction of the unpruned FLOPs
    parse_budget("30%params")  -> Budget("params_pct", 30.0)
    parse_budget("1.2gflops")  -> Budget("gflops", 1.2)      absolute GFLOPs

Latency kinds are spent against the latency table's cost model (unit "ms"); FLOPs and params
kinds against :class:`~hwprune.cost.FlopsCostModel` / :class:`~hwprune.cost.ParamsCostModel`,
so FLOPs-targeted and latency-targeted pruning can be compared with the same strategies.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

from .errors import BudgetError, ConfigError

_EXAMPLES = "e.g. 12ms, 0.5x (half the unpruned latency), 2.0speedup, 50%flops, 30%params, 1.2gflops"
_PATTERNS = [
    (re.compile(r"^([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*ms$"), "ms"),
    (re.compile(r"^([0-9]*\.?[0-9]+)\s*x$"), "x"),
    (re.compile(r"^([0-9]*\.?[0-9]+)\s*(?:speedup|xspeedup)$"), "speedup"),
    (re.compile(r"^([0-9]*\.?[0-9]+)\s*%\s*flops$"), "flops_pct"),
    (re.compile(r"^([0-9]*\.?[0-9]+)\s*%\s*params$"), "params_pct"),
    (re.compile(r"^([0-9]*\.?[0-9]+)\s*gflops$"), "gflops"),
]

#: budget kind -> the unit of the cost model it is spent in
UNITS = {"ms": "ms", "x": "ms", "speedup": "ms", "flops_pct": "flops", "gflops": "flops", "params_pct": "params"}


@dataclass(frozen=True)
class Budget:
    """A parsed budget. ``target(baseline)`` converts it to the cost model's unit."""

    kind: str
    value: float
    text: str = ""

    def __post_init__(self):
        if self.kind not in UNITS:
            raise ConfigError(f"unknown budget kind {self.kind!r}; use one of {sorted(UNITS)}")
        if not self.value > 0:
            raise ConfigError(f"budget {self.text or self.value!r} must be positive ({_EXAMPLES})")
        if self.kind == "x" and self.value > 1:
            raise ConfigError(f"budget {self.text!r} keeps more than the unpruned latency; a fraction in (0, 1] "
                              f"is expected, e.g. 0.5x (or write {self.value}speedup)")
        if self.kind == "speedup" and self.value < 1:
            raise ConfigError(f"budget {self.text!r} asks for a slowdown; use a speedup >= 1, e.g. 2.0speedup")
        if self.kind in ("flops_pct", "params_pct") and self.value > 100:
            raise ConfigError(f"budget {self.text!r} is over 100%; use e.g. 50%flops")

    @property
    def unit(self) -> str:
        return UNITS[self.kind]

    @property
    def is_latency(self) -> bool:
        return self.unit == "ms"

    @property
    def is_relative(self) -> bool:
        """Relative budgets are a fraction of the baseline (closed loop compares measured ratios)."""
        return self.kind in ("x", "speedup", "flops_pct", "params_pct")

    def fraction(self) -> float | None:
        """The kept fraction of the baseline cost for relative budgets, else None."""
        return {"x": self.value, "speedup": 1.0 / self.value, "flops_pct": self.value / 100.0,
                "params_pct": self.value / 100.0}.get(self.kind)

    def target(self, baseline: float) -> float:
        """The budget in the cost model's unit, given the unpruned cost ``baseline``."""
        frac = self.fraction()
        if frac is not None:
            return frac * baseline
        if self.kind == "gflops":
            return self.value * 1e9
        return self.value

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "kind": self.kind, "value": self.value, "unit": self.unit}


def parse_budget(text: str) -> Budget:
    """Parse a budget string; a malformed one is a ConfigError listing the accepted forms."""
    if isinstance(text, Budget):
        return text
    s = str(text).strip().lower().replace(" ", "")
    for pat, kind in _PATTERNS:
        m = pat.match(s)
        if m:
            return Budget(kind, float(m.group(1)), str(text))
    raise ConfigError(f"cannot read budget {text!r}; write a number with a unit: {_EXAMPLES}")


def _fmt(v: float, unit: str) -> str:
    if unit == "ms":
        return f"{v:.3f} ms"
    if unit == "flops":
        return f"{v / 1e9:.4f} GFLOPs"
    return f"{v / 1e6:.4f} M params"


def check_reachable(budget: Budget, target: float, baseline: float, smallest: float) -> None:
    """Raise BudgetError when ``target`` is below what the grid can reach (all groups at min width)."""
    if target < smallest:
        frac = smallest / baseline if baseline else float("nan")
        hint = {"x": f"{frac:.3f}x", "speedup": f"{1 / frac:.2f}speedup" if frac else "",
                "flops_pct": f"{100 * frac:.1f}%flops", "params_pct": f"{100 * frac:.1f}%params"}.get(budget.kind, "")
        raise BudgetError(
            f"budget {budget.text or budget.kind} = {_fmt(target, budget.unit)} is below the smallest reachable "
            f"{_fmt(smallest, budget.unit)} (every group at its minimum width; unpruned {_fmt(baseline, budget.unit)})"
            f"{'; that is ' + hint if hint else ''}. Raise the budget or lower --min-width / --align, "
            f"or --ignore fewer layers."
        )


def min_widths(graph, align: int, min_width: int, max_prune: float = 1.0) -> dict[str, int]:
    return {g.name: g.candidate_widths(align, min_width, max_prune)[0] for g in graph.prunable}


def cost_model_for(budget: Budget, graph, example_input, table: Any = None):
    """The cost model a budget is spent in.

    ``table`` may be a loaded latency table (with ``cost_model(graph)``), a path to one, or any
    object that already is a CostModel (``unit`` + ``predict``) -- handy for tests and for users
    with their own predictor.
    """
    from .cost import FlopsCostModel, ParamsCostModel

    if budget.unit == "flops":
        return FlopsCostModel(graph, example_input)
    if budget.unit == "params":
        return ParamsCostModel(graph)
    if table is None:
        raise ConfigError(f"budget {budget.text!r} is a latency budget and needs a latency table: pass --table "
                          "PATH, let `hwprune prune` profile one (--backend ort-cpu), or use a FLOPs budget "
                          "such as 50%flops")
    if isinstance(table, str):
        from .latency import LatencyTable  # lazy: the latency package is optional for FLOPs budgets

        table = LatencyTable.load(table)
    if hasattr(table, "predict") and hasattr(table, "unit") and not hasattr(table, "cost_model"):
        return table
    return table.cost_model(graph)


def resolve(budget: Budget, cost, graph, align: int, min_width: int) -> dict[str, float]:
    """Baseline, target and smallest reachable cost; raises BudgetError when unreachable."""
    baseline = float(cost.predict({}))
    target = float(budget.target(baseline))
    smallest = float(cost.predict(min_widths(graph, align, min_width)))
    check_reachable(budget, target, baseline, smallest)
    return {"baseline": baseline, "target": target, "smallest": smallest}


def within(cost: float, target: float, rel_tol: float = 1e-9) -> bool:
    return cost <= target * (1.0 + rel_tol)


def widths_key(widths: Mapping[str, int]) -> tuple:
    return tuple(sorted(widths.items()))


# ------------------------------------------------------------------ several budgets (issue #20)

@dataclass(frozen=True)
class BoundBudget:
    """One budget of several, bound to the latency table (one device) it is spent on.

    ``--budget 0.5x@latency_tables/A.json`` binds 0.5x to table A; a budget without ``@`` uses
    ``--table`` (``table`` None here); FLOPs and params budgets need no table. Every strategy meets
    all of a list of them (:class:`hwprune.search.Constraint` is one resolved against a graph)."""

    budget: Budget
    table: Optional[str] = None

    @property
    def text(self) -> str:
        return self.budget.text + (f"@{self.table}" if self.table else "")

    def to_dict(self) -> dict[str, Any]:
        return {**self.budget.to_dict(), "table": self.table}


def parse_bound_budget(text: str) -> BoundBudget:
    """``BUDGET[@TABLE]`` -> :class:`BoundBudget`; a FLOPs/params budget bound to a table, or an
    empty table path, is a ConfigError saying what to write instead."""
    if isinstance(text, BoundBudget):
        return text
    head, at, path = str(text).partition("@")
    budget = parse_budget(head)
    if at:
        path = path.strip()
        if not path:
            raise ConfigError(f"budget {text!r} ends in '@' without a table; write e.g. {head}@latency_tables/T.json")
        if not budget.is_latency:
            raise ConfigError(f"budget {text!r}: a {budget.unit} budget is not measured on a device, so it takes no "
                              f"table; write {head} alone")
    return BoundBudget(budget, path if at else None)


def parse_budgets(texts: Sequence[str]) -> list[BoundBudget]:
    """Several ``--budget`` values into a typed list; the same budget kind twice on one table
    (``0.5x`` and ``0.4x``, both on --table) is refused as ambiguous."""
    out = [parse_bound_budget(t) for t in texts]
    seen: dict[tuple, str] = {}
    for b in out:
        key = (b.budget.unit, b.table) if b.budget.is_latency else (b.budget.unit, None)
        if key in seen:
            raise ConfigError(f"budgets {seen[key]!r} and {b.text!r} are both on the same "
                              f"{'table' if b.budget.is_latency else 'cost model'}; keep the tighter one")
        seen[key] = b.text
    return out


def check_tables_exist(budgets: Sequence[BoundBudget]) -> None:
    """A budget bound to a table that is not there fails before any model is loaded."""
    import os

    for b in budgets:
        if b.table is not None and not os.path.isfile(b.table):
            raise ConfigError(f"budget {b.text!r} is bound to table {b.table!r}, which does not exist; profile it "
                              f"(`hwprune profile --model M --out {b.table}`) or fix the path")


def describe_unreachable(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per device of an unreachable combination: its budget, target and smallest reachable."""
    lines = []
    for r in rows:
        b: Budget = r["budget"]
        frac = r["smallest"] / r["baseline"] if r["baseline"] else float("nan")
        mark = "UNREACHABLE" if r["target"] < r["smallest"] else "ok"
        lines.append(f"  {r['label']}: budget {b.text} = {_fmt(r['target'], b.unit)}, smallest reachable "
                     f"{_fmt(r['smallest'], b.unit)} ({frac:.3f} of unpruned) [{mark}]")
    return "\n".join(lines)
