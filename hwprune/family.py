"""Copycat families: one pruned network's width profile, rescaled to several budgets.

Crowley, Turner, Storkey & O'Boyle, "Pruning neural networks: is it time to nip it in the bud?"
(NeurIPS 2018 CDNNRIA workshop) Fisher-pruned a WRN-40-2 and found that the *architecture*
pruning leaves behind, not its weights, is what is worth keeping: the pruned networks trained
from scratch beat their fine-tuned selves and beat simply thinner networks (a linear rescaling
of every width) trained from scratch. And the architecture is easy to copy: take the fraction of
channels each block kept, ``frac_g = kept_g / full_g``, scale all of them by one multiplier ``m``
and train the result from scratch -- their *copycat* networks -- and one pruning run gives a
whole family of networks, one per budget, that performs like pruning to each budget separately.

Here the budget is spent on the device's latency table (or FLOPs / params), not on a parameter
count. For each budget :func:`build_family` finds the largest ``m`` whose widths
``w_g = snap(min(m * frac_g, 1) * full_g)`` (snapped to the device grid, ties up, never above a
group's full width) the cost model predicts within the budget. ``baseline="uniform"`` adds the
paper's comparison family: the same with ``frac_g = 1`` (the unpruned network, linearly
rescaled). Each member is a :class:`~hwprune.plan.PruningPlan` on the base model (its first
channels kept: members are trained from scratch, which channels does not matter) plus a
checkpoint of its random-init weights (meta ``{"init": "scratch-pending"}``) for ``hwprune
train --init scratch``.

    result = build_family(FamilyConfig(plan="out/plan.json", budgets="0.3x,0.5x,0.7x",
                                       table="latency_tables/....json", baseline="uniform", out="fam"))
    result.members[0].plan, result.members[0].predicted     # {"ms", "flops", "params"}
"""
from __future__ import annotations

import bisect
import math
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch

from .budget import Budget, parse_budget
from .errors import BudgetError, ConfigError, PlanMismatchError, TableError
from .graph import ChannelGraph, ChannelGroup, keep_top
from .family_plots import AccuracyPoint, plot_accuracy_vs_latency, plot_width_profiles
from .plan import PruningPlan

__all__ = ["AccuracyPoint", "FamilyConfig", "FamilyMember", "FamilyResult", "WidthLadder", "build_family",
           "fit_level", "fractions_of", "parse_budget_list", "plot_accuracy_vs_latency", "plot_width_profiles",
           "scratch_init_", "write_family"]

FAMILY_FORMAT = "hwprune-family"
FAMILY_VERSION = 1
BASELINES = ("none", "uniform")
CITATION = ("Crowley et al., 'Pruning neural networks: is it time to nip it in the bud?', "
            "NeurIPS 2018 CDNNRIA workshop (copycat architectures)")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.]*$")


def parse_budget_list(text: str | Sequence[str]) -> tuple[Budget, ...]:
    """``"0.3x,0.5x,0.7x"`` (or a list of such strings) -> budgets; an empty item, a malformed
    one or a repeat is a ConfigError naming it."""
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else [str(s).strip() for s in text]
    if not items or not any(items):
        raise ConfigError(f"budget list {text!r} is empty; give comma-separated budgets, e.g. 0.3x,0.5x,0.7x")
    budgets, seen = [], {}
    for i, item in enumerate(items):
        if not item:
            raise ConfigError(f"budget list {text!r} has an empty item (position {i + 1}); write e.g. 0.3x,0.5x,0.7x "
                              "with no doubled or trailing comma")
        b = parse_budget(item)
        slug = budget_slug(b)
        if slug in seen:
            raise ConfigError(f"budget list {text!r} names {item!r} twice (as {seen[slug]!r} too); "
                              "give each budget once")
        seen[slug] = item
        budgets.append(b)
    return tuple(budgets)


def budget_slug(budget: Budget) -> str:
    """A file-name-safe spelling of a budget: ``0.5x``, ``12ms``, ``50pctflops``."""
    s = (budget.text or f"{budget.value}{budget.kind}").strip().lower().replace(" ", "").replace("%", "pct")
    return re.sub(r"[^a-z0-9.]+", "_", s)


@dataclass
class FamilyConfig:
    """What family to build. ``plan``: the pruned network whose width profile is copied (a path
    to ``plan.json`` or a :class:`PruningPlan`). ``budgets``: ``"0.3x,0.5x"`` or a list. ``table``:
    the latency table (needed for latency budgets and for predicted ms; default: the table the
    plan was searched on, from its provenance, where that file exists). ``align`` /
    ``min_width``: the grid (default: the plan's, else the table's, else 8). ``out``: folder to
    write (whole or absent); None writes nothing."""

    plan: Any
    budgets: Any
    table: Optional[str] = None
    baseline: str = "none"
    name: str = "copycat"
    align: Optional[int] = None
    min_width: Optional[int] = None
    out: Optional[str] = None
    checkpoints: bool = True
    plot: bool = True
    seed: int = 0

    def __post_init__(self):
        self.budgets = parse_budget_list(self.budgets)
        if self.baseline not in BASELINES:
            raise ConfigError(f"baseline {self.baseline!r} is not one of {', '.join(BASELINES)}; "
                              "use --baseline uniform for the linearly rescaled unpruned network")
        if not _NAME.match(self.name) or self.name in BASELINES:
            raise ConfigError(f"family name {self.name!r} must be lower-case letters, digits, '_' or '.' and not "
                              f"{' or '.join(BASELINES)}, e.g. copycat")
        if self.align is not None and self.align < 1:
            raise ConfigError(f"align {self.align} must be >= 1 (8 suits tensor cores and SIMD)")
        if self.min_width is not None and self.min_width < 1:
            raise ConfigError(f"min-width {self.min_width} must be >= 1")
        if self.plan is None or (isinstance(self.plan, str) and not self.plan):
            raise ConfigError("a family needs a source plan: pass --plan OUT/plan.json (written by `hwprune prune`)")


class WidthLadder:
    """Every width assignment ``snap(min(m * frac_g, 1) * full_g)`` takes as ``m`` grows from 0.

    A group's snapped width steps from grid width ``ws[j]`` to ``ws[j+1]`` where ``m * frac_g *
    full_g`` reaches their midpoint (ties go up, as :meth:`ChannelGroup.snap`); the union of those
    multipliers, with 0, is a finite ascending list of *levels*. Level 0 puts every group at its
    grid minimum; the last puts every group at full width. Working on levels rather than on a
    continuous ``m`` makes the search exact: level ``k + 1`` is precisely "the next grid step up".
    """

    def __init__(self, groups: Sequence[ChannelGroup], fractions: Mapping[str, float], align: int, min_width: int):
        self.grids: dict[str, list[int]] = {}
        self.steps: dict[str, list[float]] = {}
        for g in groups:
            ws = g.candidate_widths(align, min_width)
            frac = float(fractions.get(g.name, 1.0))
            if len(ws) < 2:
                continue
            if not frac > 0:
                raise ConfigError(f"group {g.name!r} keeps a fraction {frac} of its channels; a copycat family needs "
                                  "every group to keep at least one")
            self.grids[g.name] = ws
            self.steps[g.name] = [(a + b) / 2.0 / (frac * g.width) for a, b in zip(ws, ws[1:])]
        self.levels = [0.0] + sorted({m for s in self.steps.values() for m in s if m > 0})

    def __len__(self) -> int:
        return len(self.levels)

    def widths_at(self, m: float) -> dict[str, int]:
        return {g: ws[bisect.bisect_right(self.steps[g], m)] for g, ws in self.grids.items()}

    def widths(self, level: int) -> dict[str, int]:
        return self.widths_at(self.levels[level])


def fit_level(ladder: WidthLadder, predict, target: float) -> int | None:
    """The level whose widths meet ``target`` while the next level up does not, by bisection
    (``predict(widths) -> cost``); the top level when even full width meets it; None when level 0
    (every group at its grid minimum) misses it. The pair (level, level + 1) brackets the target
    by construction, so the result is tight even where the cost model is not monotone."""
    def meets(k: int) -> bool:
        return predict(ladder.widths(k)) <= target * (1.0 + 1e-9)

    top = len(ladder) - 1
    if not meets(0):
        return None
    if meets(top):
        return top
    lo, hi = 0, top  # invariant: lo meets, hi misses
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if meets(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass
class FamilyMember:
    family: str
    budget: Budget
    level: int
    multiplier: float
    multiplier_next: Optional[float]  # where the next grid step up starts (None: already full width)
    target: float
    widths: dict[str, int]
    predicted: dict[str, Optional[float]]  # {"ms", "flops", "params"}
    plan: PruningPlan

    @property
    def name(self) -> str:
        return f"{self.family}-{budget_slug(self.budget)}"


@dataclass
class FamilyResult:
    members: list[FamilyMember]
    summary: dict[str, Any]
    fractions: dict[str, dict[str, float]] = field(default_factory=dict)
    out: Optional[str] = None


def _load_plan(plan: Any) -> tuple[PruningPlan, Optional[str]]:
    if isinstance(plan, PruningPlan):
        return plan, None
    return PruningPlan.load(str(plan)), str(plan)


def _base_graph(plan: PruningPlan, source: str) -> ChannelGraph:
    from .base_model import build_from_id
    from .plan import example_input

    model, _ = build_from_id(plan.model_id, source=source)
    model.eval()
    graph = ChannelGraph(model, example_input(plan.input_shape), ignore=plan.ignore)
    names = {g.name: g for g in graph.groups}
    unknown = [k for k in plan.kept if k not in names]
    bad = [f"{k} ({names[k].width} here, {w} in the plan)" for k, w in plan.widths_before.items()
           if k in names and names[k].width != w]
    if unknown or bad:
        what = f"unknown groups {unknown[:3]}" if unknown else "widths " + "; ".join(bad[:3])
        raise PlanMismatchError(f"{source} does not fit its own model {plan.model_id.get('spec')!r}: {what}; "
                                "re-run `hwprune prune` to write a fresh plan")
    return graph


def _table_cost(table_path: str, graph: ChannelGraph, plan: PruningPlan, source: str):
    from .latency import LatencyTable

    table = LatencyTable.load(table_path)
    try:
        table.record_for(graph)
    except TableError:
        shape = "x".join(map(str, plan.input_shape))
        held = "; ".join(f"{r.get('spec')} @ {'x'.join(map(str, r.get('input_shape', [])))}"
                         for r in table.models.values()) or "no model"
        raise PlanMismatchError(
            f"{source} is for model {plan.model_id.get('spec')!r} at input {shape}, but table {table_path!r} profiles "
            f"{held}; pass a table profiled for that model (`hwprune profile --model {plan.model_id.get('spec')} "
            f"--input-size {plan.input_shape[-1]} --out {table_path}` adds it) or a plan of a model the table covers"
        ) from None
    return table, table.cost_model(graph)


def fractions_of(plan: PruningPlan, graph: ChannelGraph) -> dict[str, float]:
    """Per prunable group, the fraction of its channels ``plan`` keeps (1.0 where it keeps all)."""
    widths = plan.widths
    return {g.name: widths.get(g.name, g.width) / g.width for g in graph.prunable}


def _fmt_budget_value(budget: Budget, cost: float, baseline: float, up: bool) -> str:
    """``cost`` spelled in the budget's own kind, rounded so that the spelled value is reachable
    (up for ceilings such as 0.5x; down for a speedup)."""
    def r(v: float, digits: int = 3) -> float:
        if v <= 0 or not math.isfinite(v):
            return v
        scale = 10 ** (digits - 1 - math.floor(math.log10(v)))
        return (math.ceil if up else math.floor)(v * scale - 1e-9) / scale

    frac = cost / baseline if baseline else float("nan")
    return {"x": f"{r(frac):g}x", "speedup": f"{r(1 / frac):g}speedup" if frac else "inf",
            "flops_pct": f"{r(100 * frac):g}%flops", "params_pct": f"{r(100 * frac):g}%params",
            "gflops": f"{r(cost / 1e9):g}gflops"}.get(budget.kind, f"{r(cost):g}ms")


def _unreachable(family: str, budget: Budget, target: float, smallest: float, baseline: float) -> BudgetError:
    reach = _fmt_budget_value(budget, smallest, baseline, up=budget.kind != "speedup")
    if budget.kind == "speedup":
        return BudgetError(f"budget {budget.text} is beyond the largest speedup the {family} family reaches, {reach} "
                           f"(all groups at the grid minimum); lower it, or lower --min-width / --align")
    unit = {"ms": "ms", "flops": "FLOPs", "params": "params"}[budget.unit]
    return BudgetError(f"budget {budget.text} ({target:.4g} {unit}) is below the smallest the {family} family reaches, "
                       f"{reach} ({smallest:.4g} {unit}, all groups at the grid minimum); raise it, or lower "
                       "--min-width / --align")


def _first_channels(group: ChannelGroup, width: int) -> list[int]:
    """The first ``width`` channels (per block for heads): members are trained from scratch."""
    return keep_top(-torch.arange(group.width, dtype=torch.float32), width, group.blocks)


def _member_plan(source: PruningPlan, graph: ChannelGraph, widths: Mapping[str, int],
                 provenance: dict[str, Any]) -> PruningPlan:
    kept = {g.name: _first_channels(g, widths[g.name]) for g in graph.prunable
            if widths.get(g.name, g.width) < g.width}
    return PruningPlan(model_id=dict(source.model_id), input_shape=list(source.input_shape), kept=kept,
                       widths_before={g.name: g.width for g in graph.groups}, provenance=provenance,
                       ignore=list(source.ignore))


def build_family(config: FamilyConfig) -> FamilyResult:
    """Build the copycat family (and the uniform baseline if asked) of ``config.plan`` at every
    budget; write it to ``config.out`` when given (see the module doc and :func:`write_family`)."""
    from .cost import FlopsCostModel, ParamsCostModel
    from .outdir import check_output_dir

    if config.out:
        check_output_dir(config.out)  # before any work
    source, source_path = _load_plan(config.plan)
    where = f"plan {source_path!r}" if source_path else "the plan"
    graph = _base_graph(source, where)
    x = graph.example_input
    costs: dict[str, Any] = {"flops": FlopsCostModel(graph, x), "params": ParamsCostModel(graph)}
    prov = source.provenance or {}
    table_path = config.table or (prov.get("table") if isinstance(prov.get("table"), str) and
                                  os.path.isfile(prov["table"]) else None)
    latency = [b.text for b in config.budgets if b.is_latency]
    if latency and not table_path:
        raise ConfigError(f"budget {latency[0]!r} is a latency budget and needs a latency table: pass --table PATH "
                          f"(the one {where} was searched on; `hwprune profile` makes one), or use FLOPs / params "
                          "budgets such as 50%flops")
    table = None
    if table_path:
        table, costs["ms"] = _table_cost(table_path, graph, source, where)
    proto = table.protocol if table is not None else {}
    align = int(config.align or prov.get("align") or proto.get("align") or 8)
    min_width = int(config.min_width or prov.get("min_width") or proto.get("min_width") or 8)
    baseline = {u: float(c.predict({})) for u, c in costs.items()}
    fractions = {config.name: fractions_of(source, graph)}
    if config.baseline == "uniform":
        fractions["uniform"] = {g.name: 1.0 for g in graph.prunable}
    members = []
    for fam, frac in fractions.items():
        ladder = WidthLadder(graph.prunable, frac, align, min_width)
        for budget in config.budgets:
            cost = costs[budget.unit]
            target = float(budget.target(baseline[budget.unit]))
            level = fit_level(ladder, lambda w: float(cost.predict(w)), target)
            if level is None:
                raise _unreachable(fam, budget, target, float(cost.predict(ladder.widths(0))), baseline[budget.unit])
            widths = ladder.widths(level)
            predicted = {u: float(costs[u].predict(widths)) if u in costs else None for u in ("ms", "flops", "params")}
            m = ladder.levels[level]
            m_next = ladder.levels[level + 1] if level + 1 < len(ladder) else None
            provenance = {
                "strategy": f"{fam}-family", "family": fam, "method": CITATION if fam != "uniform" else
                "uniform width multiplier (the linearly rescaled unpruned network)",
                "budget": budget.text, "budget_parsed": budget.to_dict(), "target": target, "unit": budget.unit,
                "multiplier": m, "multiplier_next": m_next, "predicted": predicted, "baseline": baseline,
                "source_plan": source_path, "source_strategy": prov.get("strategy"), "fractions": frac,
                "align": align, "min_width": min_width, "table": table_path, "channels": "first (train from scratch)",
                "seed": config.seed}
            members.append(FamilyMember(fam, budget, level, m, m_next, target, widths, predicted,
                                        _member_plan(source, graph, widths, provenance)))
    summary = _summary(config, source, source_path, table_path, graph, members, fractions, baseline, align, min_width)
    result = FamilyResult(members=members, summary=summary, fractions=fractions)
    if config.out:
        write_family(result, config.out, graph, checkpoints=config.checkpoints, plot=config.plot, seed=config.seed)
        result.out = config.out
    return result


def _by_depth(graph: ChannelGraph) -> list[ChannelGroup]:
    """Prunable groups in network order (by the first layer whose output they cut), for the plot."""
    order = {name: i for i, (name, _) in enumerate(graph.model.named_modules())}

    def depth(g: ChannelGroup) -> int:
        return min([order.get(m.module, len(order)) for m in g.members if m.side == "out"] or [len(order)])

    return sorted(graph.prunable, key=depth)


def _summary(config, source, source_path, table_path, graph, members, fractions, baseline, align,
             min_width) -> dict[str, Any]:
    def rel(v, u):
        return v / baseline[u] if v is not None and baseline.get(u) else None

    first: dict[tuple, str] = {}
    same_as = {}
    for mb in members:
        key = (mb.family, tuple(sorted(mb.widths.items())))
        same_as[mb.name] = first.get(key)
        first.setdefault(key, mb.name)
    return {
        "format": FAMILY_FORMAT, "version": FAMILY_VERSION, "method": CITATION,
        "source_plan": source_path, "source_strategy": (source.provenance or {}).get("strategy"),
        "model_id": source.model_id, "input_shape": list(source.input_shape), "table": table_path,
        "align": align, "min_width": min_width, "baseline_cost": baseline,
        "groups": [g.name for g in _by_depth(graph)], "full_widths": {g.name: g.width for g in graph.prunable},
        "source_widths": {g.name: source.widths.get(g.name, g.width) for g in graph.prunable},
        "families": {f: {"fractions": fr} for f, fr in fractions.items()},
        "members": [{
            "name": mb.name, "family": mb.family, "budget": mb.budget.text, "unit": mb.budget.unit,
            "target": mb.target, "multiplier": mb.multiplier, "multiplier_next": mb.multiplier_next,
            "predicted_ms": mb.predicted["ms"], "predicted_x": rel(mb.predicted["ms"], "ms"),
            "flops": mb.predicted["flops"], "flops_x": rel(mb.predicted["flops"], "flops"),
            "params": mb.predicted["params"], "params_x": rel(mb.predicted["params"], "params"),
            "widths": mb.widths, "same_as": same_as[mb.name], "plan": f"{mb.name}.json",
            "checkpoint": f"{mb.name}.pt" if config.checkpoints else None,
        } for mb in members],
    }


def scratch_init_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Re-initialise every layer that knows how (``reset_parameters``; BatchNorm statistics too),
    seeded: a member starts from scratch, as in the paper, not from a slice of the base weights."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for mod in model.modules():
            reset = getattr(mod, "reset_parameters", None) or getattr(mod, "_reset_parameters", None)
            if callable(reset):
                reset()
    finally:
        torch.random.set_rng_state(gen_state)
    return model


def write_family(result: FamilyResult, out: str, graph: ChannelGraph, checkpoints: bool = True, plot: bool = True,
                 seed: int = 0) -> list[str]:
    """Write ``<member>.json`` plans, ``<member>.pt`` random-init checkpoints (meta ``init:
    scratch-pending``), ``family.json`` and ``family.png`` into ``out``, whole or not at all."""
    from .checkpoint import save_checkpoint
    from .jsonio import write_json
    from .outdir import staged_output_dir
    from .plan import apply

    written = []
    with staged_output_dir(out) as work:
        for mb in result.members:
            mb.plan.save(os.path.join(work, f"{mb.name}.json"))
            written.append(f"{mb.name}.json")
            if checkpoints:
                model = scratch_init_(apply(graph.model, mb.plan), seed)
                save_checkpoint(os.path.join(work, f"{mb.name}.pt"), model, mb.plan,
                                meta={"init": "scratch-pending", "family": mb.family, "budget": mb.budget.text,
                                      "multiplier": mb.multiplier, "seed": seed,
                                      "note": "random-init weights: train from scratch (hwprune train --init scratch)"})
                written.append(f"{mb.name}.pt")
        write_json(os.path.join(work, "family.json"), result.summary)
        written.append("family.json")
        if plot:
            plot_width_profiles(result.summary, os.path.join(work, "family.png"))
            written.append("family.png")
    return written
