"""Iterative pruning (``hwprune prune --iterative K``): reach the budget in K cut-and-fine-tune steps.

The pruning overview in the seeds (../shared/seeds/pruning-overview-plan-cut-finetune.txt) sums up
the classic recipe (Han et al. 2015; the lottery-ticket procedure): "steps 2 and 3 [cut, fine-tune]
are often iterated many times, cutting a little at a time and approaching the target gradually",
and "to reach a p% pruning rate, do n rounds cutting p^(1/n) each" -- a *geometric* schedule, an
equal fraction of what is left per round. Here the rate is the budget: with baseline cost B and
final target T (in the budget's currency: table milliseconds, FLOPs or params), step k of K aims at

    t_k = B * (T / B) ** (k / K),       k = 1 .. K   (t_K = T)

Each step runs the configured strategy on the *current* (already cut and fine-tuned) network,
with every prediction made on the unpruned network's cost model (the latency table is profiled
for the unpruned architecture: :class:`NestedCost` maps the current network's widths back to
it), cuts, and fine-tunes for ``iterative_epochs`` epochs with the one training loop
(:func:`hwprune.recover.recover`, KD from the unpruned model with ``distill``). The last step is
checked by measurement exactly as a one-shot prune (:func:`hwprune.closed_loop.close_loop`,
measured side by side with the *unpruned* model), then ``finetune_epochs`` fine-tune as today.
The kept channel indices compose step by step, so the written plan is relative to the unpruned
model and ``pruned.pt`` loads like any other.
"""
from __future__ import annotations

import copy
import time
from dataclasses import replace
from typing import Any

from .base_model import LoadedModel
from .errors import ConfigError
from .plan import PruningPlan, apply


def step_targets(baseline: float, final: float, steps: int) -> list[float]:
    """The geometric schedule ``baseline * (final / baseline) ** (k / steps)``, k = 1..steps."""
    if steps < 1:
        raise ConfigError(f"--iterative {steps} must be >= 1")
    return [baseline * (final / baseline) ** (k / steps) for k in range(1, steps + 1)]


class NestedCost:
    """A cost model for a network cut from the unpruned one: ``predict(widths)`` of the current
    network (its group names are the unpruned network's; a width not given is the current one)
    is the unpruned cost model's prediction for the same architecture."""

    def __init__(self, original_cost, current: dict[str, int]):
        self.original = original_cost
        self.current = dict(current)
        self.unit = original_cost.unit

    def predict(self, widths: dict[str, int]) -> float:
        return float(self.original.predict({**self.current, **widths}))


def _relative_budget(budget, fraction: float) -> str:
    """A budget string for ``fraction`` of the current network's cost, in the budget's currency."""
    fraction = min(max(fraction, 1e-6), 1.0)
    if budget.unit == "ms":
        return f"{fraction:.9f}x"
    return f"{100 * fraction:.9f}%{budget.unit}"


def compose(kept_total: dict[str, list[int]], plan: PruningPlan) -> dict[str, list[int]]:
    """Channels of the unpruned network kept after a further cut ``plan`` of the current one."""
    out = {k: list(v) for k, v in kept_total.items()}
    for g, idx in plan.kept.items():
        out[g] = [out[g][i] for i in idx]
    return out


def prune_iterative(loaded: LoadedModel, config, calib=None, table=None, evaluator=None, data=None):
    """:func:`hwprune.prune.prune` in ``config.iterative`` steps (see module doc)."""
    from .closed_loop import close_loop, mark_not_measured, mark_proxy, provenance, where_measured
    from .latency import as_table
    from .prune_steps import PruneResult, build_report, finetune_pruned
    from .recover import RecoverConfig, recover
    from .search import make_context, primary_table, run_search, seed_everything
    from .strategies import STRATEGIES

    if getattr(config, "more_budgets", ()):
        raise ConfigError(f"--iterative {config.iterative} spends one budget; it does not combine with several "
                          "budgets (BUDGET@TABLE) yet: prune with one --budget, or without --iterative")
    if data is None:
        raise ConfigError(f"--iterative {config.iterative} fine-tunes between steps and needs training data: pass "
                          "--data synthetic (or imagefolder:PATH ...)")
    strategy = STRATEGIES.get(config.strategy)
    seed_everything(config.seed)
    t0 = time.perf_counter()
    ctx0 = make_context(loaded, config, calib, table, evaluator)
    base, final = ctx0.baseline_cost, ctx0.target
    table = primary_table(ctx0, table)  # 0.5x@T reads as --table T, as in a one-shot prune
    measured_table = as_table(table, check_device=False)  # the last step's loop measures as it was measured
    # another machine's table: a budget in ms is not measured in the last step, a share is, as a proxy (as one-shot)
    config_last, elsewhere, proxy = where_measured(ctx0, config, measured_table)
    targets = step_targets(base, final, config.iterative)
    current = copy.deepcopy(loaded.model)
    kept = {g.name: list(range(g.width)) for g in ctx0.graph.groups}
    teacher = loaded.model if config.distill else None
    steps: list[dict[str, Any]] = []
    search_s = 0.0
    ctx = None
    for k, target in enumerate(targets, start=1):
        widths_now = {g: len(v) for g, v in kept.items()}
        cur = ctx0.predict(widths_now)
        sub = LoadedModel(model=current, model_id=loaded.model_id, input_size=loaded.input_size)
        last = k == len(targets)
        cfg = replace(config, budget=_relative_budget(ctx0.budget, target / cur), backend=None, iterative=1,
                      finetune_epochs=0, progress=config.progress)
        ctx = make_context(sub, cfg, calib, NestedCost(ctx0.cost, widths_now), evaluator)
        ctx.target = target
        ctx.train = getattr(data, "train", None)
        t1 = time.perf_counter()
        widths = run_search(strategy, ctx)
        search_s += time.perf_counter() - t1
        step: dict[str, Any] = {"step": k, "target": target, "fraction_of_unpruned": target / base,
                                "predicted_before": cur, "predicted": ctx.predict(widths)}
        if last:
            ctx.config = config_last  # the closed loop's tolerance, rounds and backend are the user's
            ctx.budget = ctx0.budget  # the goal: a fraction of the *unpruned* model, measured
            # measured as a one-shot prune is (the table's precision and worker mode), without the
            # drift check (the context's baseline here is the current network's)
            loop = close_loop(ctx, loaded, config_last, strategy, widths, table, measured_table,
                              cut_from=current, check_drift=False)
            plan = loop.plan
            step["predicted"] = ctx.predict(loop.widths)
        else:
            plan = ctx.plan_for(widths)
        new = apply(current, plan)
        kept = compose(kept, plan)
        if evaluator is not None:
            step["accuracy_after_cut"] = float(evaluator(copy.deepcopy(new)))
        if not last:
            rec = recover(LoadedModel(model=new, model_id=loaded.model_id, input_size=loaded.input_size), data,
                          RecoverConfig(epochs=config.iterative_epochs, lr=config.finetune_lr, seed=config.seed + k,
                                        progress=config.progress, evaluate=False), teacher=teacher)
            step["finetune"] = {"epochs": config.iterative_epochs, "lr": config.finetune_lr,
                                "distill": config.distill, "loss": rec.report.loss, "seconds": rec.report.seconds}
            if evaluator is not None:
                step["accuracy_after_finetune"] = float(evaluator(copy.deepcopy(new)))
        current = new
        step["widths"] = {g: len(v) for g, v in kept.items()}
        steps.append(step)
    final_plan = PruningPlan(model_id=loaded.model_id, input_shape=list(ctx0.example_input.shape),
                             kept={g: v for g, v in kept.items() if len(v) < ctx0.graph.group(g).width},
                             widths_before={g.name: g.width for g in ctx0.graph.groups},
                             provenance={**provenance(ctx0, config, table), "iterative": config.iterative},
                             ignore=list(config.ignore))
    model = apply(loaded.model, final_plan)
    model.load_state_dict(current.state_dict())  # the composed plan is the same architecture
    loop.plan, loop.pruned = final_plan, model
    loop.widths = {g: len(v) for g, v in kept.items()}
    report = build_report(ctx, loaded, config_last, loop, final, search_s + loop.search_seconds, None)
    _fix_report(report, ctx0, loop.widths, base, time.perf_counter() - t0)
    if elsewhere:
        mark_not_measured(report, ctx0.predict(loop.widths), final, elsewhere)
    elif proxy and loop.measured is not None:
        mark_proxy(report, proxy)
    report.iterative = {"steps": len(targets), "schedule": "geometric: baseline * (target/baseline)**(k/K)",
                        "epochs_between": config.iterative_epochs, "history": steps}
    if evaluator is not None:
        report.accuracy = {"before": float(evaluator(copy.deepcopy(loaded.model))),
                           "after": float(evaluator(copy.deepcopy(model)))}
    if config.finetune_epochs:
        report.finetune = finetune_pruned(model, loaded.model, data, config)
        if evaluator is not None:
            report.accuracy["after_finetune"] = float(evaluator(model))
    return PruneResult(model=model, plan=final_plan, report=report, artifacts=ctx.artifacts)


def _fix_report(report, ctx0, widths: dict[str, int], base: float, seconds: float) -> None:
    """The last step's context sees the already-cut network: restate what is relative to the unpruned one."""
    report.widths = {g.name: {"before": g.width, "after": widths.get(g.name, g.width)} for g in ctx0.graph.groups}
    report.cost["baseline"] = base
    lat = report.latency
    if lat is not None and lat.baseline_predicted_ms is not None and report.cost.get("unit") == "ms":
        lat.baseline_predicted_ms = base
        lat.speedup_predicted = base / max(lat.predicted_ms, 1e-12)
    report.config["wall_seconds"] = seconds
