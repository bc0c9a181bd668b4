"""What a one-shot prune and an iterative one (:mod:`hwprune.iterative`) both build on: the result
type, the fine-tune after the cut, and the typed report. Apart from :mod:`hwprune.prune` so that
the iterative path (which :func:`hwprune.prune.prune` dispatches to) imports these, not ``prune``:
no import cycle."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from torch import nn

from hwprune_deploy.runner import timing_ms

from .closed_loop import MEASURE_STATISTIC, LoopOutcome
from .counting import summarize
from .models import LoadedModel
from .plan import PruningPlan
from .prune_config import PruneConfig
from .prune_report import LatencyReport, PruneReport
from .search import SearchContext, table_prediction


@dataclass
class PruneResult:
    model: nn.Module
    plan: PruningPlan
    report: PruneReport
    artifacts: dict[str, Any] = field(default_factory=dict)



def finetune_pruned(pruned: nn.Module, teacher: nn.Module, data, config: PruneConfig) -> dict[str, Any]:
    """Fine-tune the pruned model in place (KD from the unpruned one with ``config.distill``)."""
    from .train import train

    t1 = time.perf_counter()
    train(pruned, data, epochs=config.finetune_epochs, lr=config.finetune_lr,
          teacher=teacher if config.distill else None, seed=config.seed, progress=config.progress)
    pruned.eval()
    return {"epochs": config.finetune_epochs, "lr": config.finetune_lr, "distill": config.distill,
            "seconds": time.perf_counter() - t1}


def build_report(ctx: SearchContext, loaded: LoadedModel, config: PruneConfig, loop: LoopOutcome,
                 original_target: Optional[float], search_seconds: float, measured_table) -> PruneReport:
    """The typed report of a search and its closed loop (accuracy and fine-tune are added after)."""
    x, widths = ctx.example_input, loop.widths
    before, after = summarize(loaded.model, x), summarize(loop.pruned, x)
    predicted = ctx.predict(widths)
    latency = None
    if ctx.cost.unit == "ms":
        latency = LatencyReport(baseline_predicted_ms=ctx.baseline_cost, predicted_ms=predicted,
                                speedup_predicted=ctx.baseline_cost / max(predicted, 1e-12))
    elif (tp := table_prediction(ctx, measured_table, widths)) is not None:
        latency = LatencyReport(**tp)
    report = PruneReport(
        model=loaded.model_id, strategy=config.strategy, seed=config.seed,
        budget=ctx.budget.to_dict() if ctx.budget is not None else None, table=loop.plan.provenance.get("table"),
        input_shape=list(x.shape), config=dict(asdict(config)), before=before, after=after,
        flops_reduction=before["flops"] / max(after["flops"], 1), params_reduction=before["params"] / max(after["params"], 1),
        widths={g.name: {"before": g.width, "after": widths.get(g.name, g.width)} for g in ctx.graph.groups},
        search_seconds=search_seconds, evaluations=ctx.evaluations,
        cost={"unit": ctx.cost.unit, "baseline": ctx.baseline_cost, "predicted": predicted,
              "target": original_target, "final_target": ctx.target},
        latency=latency, artifacts=sorted(k for k in ctx.artifacts if k != "smallest_cost"))
    if loop.devices is not None:
        return _devices_report(report, ctx, config, loop)
    if loop.measured is None:
        return report
    b, p = loop.measured["baseline"], loop.measured["pruned"]
    b_ms, p_ms = timing_ms(b), timing_ms(p)
    lat = report.latency = report.latency or LatencyReport()
    lat.backend, lat.threads, lat.precision, lat.spinning = config.backend, config.threads, loop.precision, loop.spinning
    lat.statistic = MEASURE_STATISTIC
    lat.baseline_ms, lat.baseline_median_ms, lat.baseline_p90_ms = b_ms, b.median_ms, b.p90_ms
    lat.measured_ms, lat.measured_median_ms, lat.measured_p90_ms = p_ms, p.median_ms, p.p90_ms
    lat.speedup_measured = b_ms / max(p_ms, 1e-12)
    report.closed_loop = loop.steps
    if loop.drift is not None:
        lat.table_drift = loop.drift
        report.warnings.append(loop.drift["warning"])
    if ctx.budget is not None and ctx.budget.is_latency:
        goal = loop.goal_ms  # close_loop sets it whenever it measured against a latency budget
        lat.budget_ms, lat.met_budget = goal, p_ms <= goal * (1 + config.tolerance)
        if loop.precision == "int8" and ctx.fp32_fraction and goal:  # goal = share x fp32
            lat.fp32_baseline_ms = goal / ctx.fp32_fraction
            lat.speedup_over_fp32 = lat.fp32_baseline_ms / max(p_ms, 1e-12)
        report.verdict = (f"measured {p_ms:.3f} ms meets the budget {goal:.3f} ms (+{100 * config.tolerance:.0f}% tolerance)"
                          if lat.met_budget else
                          f"MISSED: measured {p_ms:.3f} ms is over the budget {goal:.3f} ms by "
                          f"{100 * (p_ms / goal - 1):.1f}% after {len(loop.steps)} measurement round(s); "
                          "lower the budget, re-profile the table on a quiet machine, or raise --closed-loop-rounds")
    return report


def _devices_report(report: PruneReport, ctx: SearchContext, config: PruneConfig, loop: LoopOutcome) -> PruneReport:
    """Several budgets: one row per device, the primary's measurement in ``latency`` as with one."""
    from .devices import verdict

    report.devices = loop.devices
    report.closed_loop = loop.steps
    report.budget = {**report.budget, "all": [c.to_dict() for c in ctx.constraints]}
    first = loop.devices[0]
    if first.get("measured_ms") is not None:
        lat = report.latency = report.latency or LatencyReport()
        lat.backend, lat.threads, lat.precision, lat.spinning = (first["backend"], first["threads"],
                                                                 first["precision"], first["spinning"])
        lat.statistic = MEASURE_STATISTIC
        lat.baseline_ms, lat.measured_ms = first["baseline_ms"], first["measured_ms"]
        lat.measured_median_ms = first["measured_median_ms"]
        lat.speedup_measured, lat.budget_ms, lat.met_budget = (first["speedup_measured"], first["budget_ms"],
                                                               first["met"])
    report.warnings += [r["table_drift"]["warning"] for r in loop.devices if r.get("table_drift")]
    report.verdict = verdict(loop.devices, config.tolerance)
    return report
