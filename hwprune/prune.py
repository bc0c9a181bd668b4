"""The ``prune`` verb: search widths with a strategy, pick channels with a criterion, cut, check.

    result = prune(loaded_model, PruneConfig(strategy="uniform", ratio=0.5))
    result = prune(loaded, PruneConfig(strategy="netadapt", budget="0.5x", backend="ort-cpu"),
                   calib=data.calib, table="latency_tables/....json", evaluator=make_evaluator(...))
    result.model      # smaller dense nn.Module
    result.plan       # PruningPlan (JSON-able)
    result.report     # dict written to report.json by the CLI

With a latency budget the search spends the latency table's cost model; afterwards the pruned
model is measured end to end on the backend, side by side with the unpruned one (the closed
loop): a result that misses the budget by more than ``tolerance`` re-runs the strategy with a
target scaled by budget/measured, and says so plainly if it still misses.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from torch import nn

from hwprune_deploy.runner import timing_ms

from .closed_loop import (CONFIRM_BAND, DRIFT_WARN, MEASURE_STATISTIC, LoopOutcome, close_loop, measure_as,
                          measure_pair)
from .counting import summarize
from .errors import ConfigError
from .models import LoadedModel
from .plan import PruningPlan
from .prune_config import PruneConfig
from .prune_report import LatencyReport, PruneReport
from .search import SearchContext, make_context, reconstruct_model, run_search, seed_everything, table_prediction

__all__ = ["CONFIRM_BAND", "DRIFT_WARN", "MEASURE_STATISTIC", "LatencyReport", "PruneConfig", "PruneReport",
           "PruneResult", "SearchContext", "make_context", "measure_as", "measure_pair", "prune",
           "reconstruct_model", "seed_everything"]


@dataclass
class PruneResult:
    model: nn.Module
    plan: PruningPlan
    report: PruneReport
    artifacts: dict[str, Any] = field(default_factory=dict)


def prune(loaded: LoadedModel, config: PruneConfig, calib=None, table=None, evaluator=None,
          data=None) -> PruneResult:
    """Search widths (:mod:`hwprune.search`), cut and check them by measurement
    (:mod:`hwprune.closed_loop`), report (:mod:`hwprune.prune_report`), score and fine-tune.
    ``data`` (a DataBundle) is only needed for ``finetune_epochs``."""
    from .strategies import STRATEGIES

    strategy = STRATEGIES.get(config.strategy)
    if loaded.plan is not None and loaded.plan.kept:  # a trained, uncut model (hwprune train) prunes as any other
        raise ConfigError("this checkpoint is already pruned; prune the original model again with a stronger setting "
                          "(re-pruning a pruned checkpoint is not supported yet)")
    from .sparsity import masks_of

    if masks_of(loaded.model) is not None:
        raise ConfigError("this checkpoint carries 2:4 masks (hwprune prune --sparsity 2:4); a channel cut would leave "
                          "them the wrong shape: cut the dense model, then add --sparsity 2:4 (one command does both)")
    if config.finetune_epochs and data is None:
        raise ConfigError("--finetune-epochs needs training data: pass --data synthetic (or imagefolder:PATH ...)")
    if config.iterative > 1:
        from .iterative import prune_iterative

        return prune_iterative(loaded, config, calib=calib, table=table, evaluator=evaluator, data=data)
    seed_everything(config.seed)
    t0 = time.perf_counter()
    config, int8 = _int8_config(loaded, config, table)
    ctx = make_context(loaded, config, calib, table, evaluator)
    ctx.train = getattr(data, "train", None)
    if table is None and ctx.constraints and getattr(ctx.constraints[0].table, "path", None):
        table = ctx.constraints[0].table.path  # one budget bound to a table (0.5x@T) reads as --table T
    from .executor import make_executor

    ctx.executor = make_executor(config.executor, config.ray_address, config.worker_threads)
    try:
        result = _search_and_check(ctx, loaded, config, strategy, table, evaluator, data, t0)
        if int8 is not None:
            result.report.config["int8"] = int8
        return result
    finally:
        ctx.executor.close()


def _int8_config(loaded: LoadedModel, config: PruneConfig, table):
    """An int8 search (``config.precision``): its table must be an int8 table, and a relative budget
    referred to the fp32 unpruned model is re-expressed against the int8 one
    (:func:`hwprune.int8_budget.resolve_int8_budget`). (config, what was done or None)."""
    if table is not None and not isinstance(table, str) and not hasattr(table, "precision"):
        return config, None  # a user's own cost model
    loaded_table = None
    if table is not None:
        from .latency import LatencyTable

        loaded_table = LatencyTable.load(table) if isinstance(table, str) else table
        prec = loaded_table.precision
        if prec != config.precision:
            raise ConfigError(f"the latency table holds {prec} latencies and this search is {config.precision}: "
                              + ("set precision='int8' (--precision int8) to spend it" if prec == "int8" else
                                 f"profile an {config.precision} table (hwprune profile --precision {config.precision})"))
    if config.precision != "int8":
        return config, None
    import torch

    from .int8_budget import resolve_int8_budget
    from .latency.measure import table_spinning

    size = config.input_size or loaded.input_size
    x = torch.randn(config.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    spinning = table_spinning(loaded_table) if loaded_table is not None else False
    return resolve_int8_budget(loaded.model, config, x, spinning=spinning)


def _search_and_check(ctx: SearchContext, loaded: LoadedModel, config: PruneConfig, strategy, table, evaluator,
                      data, t0: float) -> PruneResult:
    original_target = ctx.target
    widths = run_search(strategy, ctx)
    search_s = time.perf_counter() - t0
    measured_table = table
    if isinstance(table, str) and (config.backend or ctx.cost.unit != "ms"):  # read once: loop and prediction
        from .latency import LatencyTable

        measured_table = LatencyTable.load(table)
    if ctx.multi:  # several budgets: every reachable device is measured (hwprune.devices)
        from .devices import close_loop_devices

        loop = close_loop_devices(ctx, loaded, config, strategy, widths, table)
    else:
        loop = close_loop(ctx, loaded, config, strategy, widths, table, measured_table)
    report = build_report(ctx, loaded, config, loop, original_target, search_s + loop.search_seconds, measured_table)
    if evaluator is not None:  # an evaluator may recalibrate BN in place: never let it touch the user's model
        report.accuracy = {"before": float(evaluator(copy.deepcopy(loaded.model))),
                           "after": float(evaluator(loop.pruned))}
    if config.sparsity:  # ASP: 2:4 masks on the cut model, then the fine-tune below keeps them fixed
        from .sparsify import apply_sparsity

        report.sparsity = apply_sparsity(loop.pruned, config.sparsity, evaluator, report.accuracy)
    if config.finetune_epochs:
        report.finetune = finetune_pruned(loop.pruned, loaded.model, data, config)
        if evaluator is not None:
            report.accuracy["after_finetune"] = float(evaluator(loop.pruned))
    if report.sparsity:  # as the fine-tuned weights hold it
        from .sparsity import masks_of

        report.sparsity["holds"] = masks_of(loop.pruned).summary(loop.pruned)["holds"]
    return PruneResult(model=loop.pruned, plan=loop.plan, report=report, artifacts=ctx.artifacts)


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
        goal = loop.steps[-1]["goal_ms"]
        lat.budget_ms, lat.met_budget = goal, p_ms <= goal * (1 + config.tolerance)
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
    report.verdict = verdict(loop.devices, config.tolerance)
    return report
