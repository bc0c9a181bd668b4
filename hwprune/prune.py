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

import random
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn

from hwprune_deploy.runner import timing_ms

from .bench import BUDGET_STATISTIC
from .counting import summarize
from .errors import BudgetError, ConfigError
from .graph import ChannelGraph, ChannelGroup, keep_top
from .importance import get_criterion
from .models import LoadedModel
from .plan import PruningPlan, apply


@dataclass
class PruneConfig:
    """What to prune and how. Validated on construction so bad values fail before any work.

    ``options`` holds strategy knobs (``amc_episodes``, ``netadapt_decay``, ``evo_pop``, ...), checked
    against the strategy's options dataclass (:func:`hwprune.strategies.check_options`): its own are
    coerced and range-checked, another strategy's are kept but ignored, an unknown name is an error.
    """

    strategy: str = "uniform"
    ratio: Optional[float] = None
    criterion: str = "l1"
    align: int = 8
    min_width: int = 8
    batch: int = 1
    input_size: Optional[int] = None
    ignore: tuple[str, ...] = ()
    seed: int = 0
    budget: Optional[str] = None
    options: dict[str, Any] = field(default_factory=dict)
    backend: Optional[str] = None  # closed loop: measure the result on this backend
    threads: int = 2
    closed_loop_rounds: int = 3  # re-searches with a tightened target at most this many times
    tolerance: float = 0.03  # measured latency may exceed the budget by this fraction
    finetune_epochs: int = 0
    finetune_lr: float = 0.01
    distill: bool = False
    progress: bool = True

    def __post_init__(self):
        if self.ratio is not None and not (0.0 <= self.ratio < 1.0):
            raise ConfigError(f"ratio {self.ratio} is out of range; use a fraction of channels to remove in [0, 1), e.g. 0.5")
        if self.align < 1:
            raise ConfigError(f"align {self.align} must be >= 1 (8 suits tensor cores and SIMD)")
        if self.min_width < 1:
            raise ConfigError(f"min-width {self.min_width} must be >= 1")
        if self.batch < 1:
            raise ConfigError(f"batch {self.batch} must be >= 1")
        if self.budget is not None:
            from .budget import parse_budget

            parse_budget(self.budget)  # malformed -> ConfigError now, not after loading the model
            if self.ratio is not None:
                raise ConfigError("give either --ratio or --budget, not both")
        if self.threads < 1:
            raise ConfigError(f"threads {self.threads} must be >= 1")
        if self.closed_loop_rounds < 0:
            raise ConfigError(f"closed-loop rounds {self.closed_loop_rounds} must be >= 0")
        if not (0 <= self.tolerance < 1):
            raise ConfigError(f"tolerance {self.tolerance} must be a fraction in [0, 1), e.g. 0.03")
        if self.finetune_epochs < 0:
            raise ConfigError(f"finetune-epochs {self.finetune_epochs} must be >= 0")
        self.ignore = tuple(self.ignore)
        from .strategies import check_options

        self.options = check_options(self.strategy, self.options)  # also rejects an unknown strategy


@dataclass
class SearchContext:
    """Everything a strategy may consult; scores are computed lazily and cached per group.

    With a budget: ``cost`` (a CostModel), ``target`` (in ``cost.unit``), ``baseline_cost``.
    ``artifacts`` collects extra outputs a strategy wants kept (Pareto front, curves).
    """

    model: nn.Module
    graph: ChannelGraph
    example_input: torch.Tensor
    config: PruneConfig
    calib: Optional[Iterable] = None
    table: Any = None
    evaluator: Any = None
    model_id: dict[str, Any] = field(default_factory=dict)
    _scores: dict[str, torch.Tensor] = field(default_factory=dict)
    cost: Any = None
    target: Optional[float] = None
    baseline_cost: Optional[float] = None
    budget: Any = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    evaluations: int = 0
    _acc_cache: dict[tuple, float] = field(default_factory=dict)

    def scores(self, group: ChannelGroup) -> torch.Tensor:
        if group.name not in self._scores:
            crit = get_criterion(self.config.criterion)
            self._scores[group.name] = crit(self.graph, group, self.calib).detach().float().cpu()
        return self._scores[group.name]

    def plan_for(self, widths: dict[str, int], provenance: dict[str, Any] | None = None) -> PruningPlan:
        """Turn per-group widths into a plan, keeping the highest-scoring channels."""
        kept = {}
        for g in self.graph.prunable:
            w = widths.get(g.name, g.width)
            if w < g.width:
                kept[g.name] = keep_top(self.scores(g), w, g.blocks)
        return PruningPlan(model_id=self.model_id, input_shape=list(self.example_input.shape), kept=kept,
                           widths_before={g.name: g.width for g in self.graph.groups},
                           provenance=dict(provenance or {}), ignore=list(self.config.ignore))

    # ------------------------------------------------------------------ helpers for strategies
    @property
    def options(self):
        """The running strategy's typed options (its :class:`hwprune.strategies.StrategyOptions`
        dataclass, defaults filled in) from ``config.options``."""
        from .strategies import strategy_options

        return strategy_options(self.config.strategy, self.config.options)

    def grid(self, group: ChannelGroup) -> list[int]:
        return group.candidate_widths(self.config.align, self.config.min_width)

    def predict(self, widths: dict[str, int]) -> float:
        return float(self.cost.predict(widths))

    def meets(self, widths: dict[str, int]) -> bool:
        return self.target is None or self.predict(widths) <= self.target * (1 + 1e-9)

    def need_budget(self, name: str) -> None:
        if self.target is None:
            raise ConfigError(f"strategy {name!r} needs --budget (e.g. 0.5x, 12ms, 50%flops)")

    def build(self, widths: dict[str, int]) -> nn.Module:
        return apply(self.model, self.plan_for(widths))

    def evaluate(self, widths: dict[str, int], reconstruct: bool = False, finetune_steps: int = 0) -> float:
        """Accuracy of the model pruned to ``widths`` (cached); optionally least-squares reconstruction
        of the kept weights on the calibration batches, or a few fine-tune steps, before evaluation."""
        if self.evaluator is None:
            raise ConfigError(f"strategy {self.config.strategy!r} evaluates candidates and needs an evaluator: "
                              "pass --data synthetic (or imagefolder:PATH ...) and --evaluator adaptive-bn")
        key = (tuple(sorted((k, int(v)) for k, v in widths.items())), reconstruct, finetune_steps)
        if key not in self._acc_cache:
            model = self.build(widths)
            if reconstruct:
                reconstruct_model(model, self.model, self.calib)
            if finetune_steps:
                from .strategies._common import short_finetune

                short_finetune(model, self.calib, finetune_steps, seed=self.config.seed)
            self._acc_cache[key] = float(self.evaluator(model))
            self.evaluations += 1
        return self._acc_cache[key]

    def bar(self, total: int, desc: str):
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, file=sys.stderr, disable=not self.config.progress, leave=True,
                    dynamic_ncols=True)


def reconstruct_model(pruned: nn.Module, original: nn.Module, calib, max_batches: int = 4) -> None:
    """Least-squares weight reconstruction (EAPruning / He et al. 2017), from hwprune.evaluate."""
    if calib is None:
        raise ConfigError("reconstruction needs calibration data: pass --data")
    from .evaluate import reconstruct_

    reconstruct_(pruned, original, calib, max_batches)


@dataclass
class PruneResult:
    model: nn.Module
    plan: PruningPlan
    report: dict[str, Any]
    artifacts: dict[str, Any] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_context(loaded: LoadedModel, config: PruneConfig, calib=None, table=None, evaluator=None) -> SearchContext:
    size = config.input_size or loaded.input_size
    x = torch.randn(config.batch, 3, size, size, generator=torch.Generator().manual_seed(config.seed))
    graph = ChannelGraph(loaded.model, x, ignore=config.ignore)
    ctx = SearchContext(model=loaded.model, graph=graph, example_input=x, config=config, calib=calib,
                        table=table, evaluator=evaluator, model_id=loaded.model_id)
    if config.budget is not None:
        from .budget import cost_model_for, parse_budget, resolve

        ctx.budget = parse_budget(config.budget)
        ctx.cost = cost_model_for(ctx.budget, graph, x, table)
        r = resolve(ctx.budget, ctx.cost, graph, config.align, config.min_width)
        ctx.baseline_cost, ctx.target = r["baseline"], r["target"]
        ctx.artifacts["smallest_cost"] = r["smallest"]
    else:
        from .cost import FlopsCostModel

        ctx.cost = FlopsCostModel(graph, x)
        ctx.baseline_cost = ctx.predict({})
    return ctx


def _search(strategy: Callable, ctx: SearchContext) -> dict[str, int]:
    seed_everything(ctx.config.seed)
    widths = {k: int(v) for k, v in strategy(ctx).items()}
    if ctx.target is not None and not ctx.meets(widths):
        raise BudgetError(f"strategy {ctx.config.strategy!r} returned widths predicted at {ctx.predict(widths):.4g} "
                          f"{ctx.cost.unit}, over the target {ctx.target:.4g}; this is a bug in the strategy")
    return widths


def _measure(config: PruneConfig, models: dict[str, nn.Module], x: torch.Tensor, precision: str = "fp32",
             spinning: bool = False) -> dict[str, Any]:
    """Measure ``pruned`` against ``baseline`` the way the latency table was calibrated and is
    validated (:meth:`hwprune.latency.measure.Measurer.models`): the unpruned model in every
    chunk as the reference, >=4 passes, the mean of the two fastest, the protocol statistic
    (p10 of repeats). The closed loop then checks the budget with the very estimator the table's
    calibration was fitted with; with a different one (an unfiltered median of interleaved
    repeats) the two disagreed by several % on a busy 2-vCPU VM and the loop chased the gap.
    ``precision`` and ``spinning`` (ORT workers): as the table was measured (:func:`_measure_as`).
    Returns ``{"baseline": Timing, "pruned": Timing}``, ``baseline`` being the reference level."""
    from .latency.measure import measure_against_baseline

    return measure_against_baseline(config.backend, models, x, config.threads, precision, spinning=spinning)


#: what the closed loop's milliseconds are (recorded in the report): the budget's estimator,
#: the one ``hwprune bench`` reports its speedup with
MEASURE_STATISTIC = BUDGET_STATISTIC

#: a first reading within this band of the budget line (relative, either side) is measured again
#: and pooled with the second before the loop decides
CONFIRM_BAND = 0.05


def _mean_timing(a, b):
    from hwprune_deploy.timing import Timing

    return Timing((a.median_ms + b.median_ms) / 2, (a.p10_ms + b.p10_ms) / 2, (a.p90_ms + b.p90_ms) / 2,
                  (a.iqr_ms + b.iqr_ms) / 2, a.repeats + b.repeats, a.inner)


#: the unpruned model measured this much off the table's prediction means the machine changed
DRIFT_WARN = 0.15


def _table_drift(ctx: SearchContext, config: PruneConfig, table, base_ms: float) -> Optional[dict]:
    """When the table is for the backend the closed loop measures on and the unpruned model
    measures more than :data:`DRIFT_WARN` off what the table predicts for it, the machine is not
    the one the table was profiled on (on the 2-vCPU VM the tables come from it ran 2x faster five
    days later, and ratios at the heavily pruned end moved with it): say so, loudly, once."""
    if ctx.cost.unit != "ms" or not ctx.baseline_cost or getattr(table, "backend", None) != config.backend:
        return None
    rel = base_ms / ctx.baseline_cost - 1
    if abs(rel) <= DRIFT_WARN:
        return None
    warning = (f"the table predicts the unpruned model at {ctx.baseline_cost:.3f} ms but it measured {base_ms:.3f} ms "
               f"here ({100 * rel:+.0f}%): this machine is not in the state the table was profiled in, and ratios "
               "at the heavily pruned end shift with it; recalibrate the table (`hwprune prune ... --recalibrate`, or "
               f"`hwprune profile --model {ctx.model_id.get('spec', 'M')} --out {getattr(table, 'path', None) or 'TABLE'} "
               "--recalibrate`: re-times the full model and the table's calibration variants, no re-profile) or profile it again")
    print(f"warning: {warning}", file=sys.stderr)
    return {"predicted_full_ms": ctx.baseline_cost, "measured_full_ms": base_ms, "relative": rel, "warning": warning}


def _measure_as(config: PruneConfig, table) -> tuple[str, bool]:
    """(precision, spinning) to measure with: the table's, when it was profiled on the backend the
    closed loop measures on (a torch-cuda fp16 table is checked in fp16, a table timed with ORT's
    workers spinning is checked spinning), else fp32 with blocked workers."""
    from .latency.measure import table_spinning

    if config.backend and getattr(table, "backend", None) == config.backend:
        return getattr(table, "precision", "fp32"), table_spinning(table)
    return "fp32", False


def table_prediction(ctx: SearchContext, table, widths: dict[str, int]) -> Optional[dict[str, float]]:
    """What a latency table predicts for the unpruned model and for ``widths`` when the search
    spent another currency (a --ratio, a FLOPs or params budget): a user who passed --table wants
    the latency and speedup it says, as a latency-budget run reports them. None without a table."""
    if table is None:
        return None
    if isinstance(table, str):
        from .latency import LatencyTable

        table = LatencyTable.load(table)
    cost = table if hasattr(table, "predict") and not hasattr(table, "cost_model") else table.cost_model(ctx.graph)
    if getattr(cost, "unit", None) != "ms":
        return None
    base, pred = float(cost.predict({})), float(cost.predict(widths))
    return {"baseline_predicted_ms": base, "predicted_ms": pred, "speedup_predicted": base / max(pred, 1e-12)}


def prune(loaded: LoadedModel, config: PruneConfig, calib=None, table=None, evaluator=None,
          data=None) -> PruneResult:
    """Search widths, select channels, physically remove them, check by measurement; returns
    model, plan and report. ``data`` (a DataBundle) is only needed for ``finetune_epochs``."""
    from .strategies import STRATEGIES

    strategy = STRATEGIES.get(config.strategy)
    if loaded.plan is not None:
        raise ConfigError("this checkpoint is already pruned; prune the original model again with a stronger setting "
                          "(re-pruning a pruned checkpoint is not supported yet)")
    seed_everything(config.seed)
    t0 = time.perf_counter()
    ctx = make_context(loaded, config, calib, table, evaluator)
    x = ctx.example_input
    original_target = ctx.target
    widths = _search(strategy, ctx)
    search_s = time.perf_counter() - t0
    closed_loop: list[dict[str, Any]] = []
    measured = None
    pruned = None
    if isinstance(table, str) and config.backend:  # read once for the closed loop's precision and drift check
        from .latency import LatencyTable

        measured_table = LatencyTable.load(table)
    else:
        measured_table = table
    precision, spinning = _measure_as(config, measured_table)
    drift = None
    while True:
        plan = ctx.plan_for(widths, provenance={
            "strategy": config.strategy, "criterion": config.criterion, "ratio": config.ratio,
            "budget": config.budget, "seed": config.seed, "align": config.align, "min_width": config.min_width,
            "table": getattr(table, "path", table if isinstance(table, str) else None),
            "target": ctx.target, "unit": ctx.cost.unit})
        pruned = apply(loaded.model, plan)
        if not config.backend:
            break
        measured = _measure(config, {"baseline": loaded.model, "pruned": pruned}, x, precision, spinning)
        base_ms, got_ms = timing_ms(measured["baseline"]), timing_ms(measured["pruned"])
        if not closed_loop:  # the first measurement of the unpruned model
            drift = _table_drift(ctx, config, measured_table, base_ms)
        step = {"round": len(closed_loop), "target": ctx.target, "predicted": ctx.predict(widths),
                "baseline_ms": base_ms, "measured_ms": got_ms}
        if ctx.budget is None or not ctx.budget.is_latency:
            closed_loop.append(step)
            break
        frac = ctx.budget.fraction()
        goal_ms = frac * base_ms if frac is not None else ctx.budget.value
        step["goal_ms"] = goal_ms
        if abs(got_ms / goal_ms - (1 + config.tolerance)) <= CONFIRM_BAND:
            # a reading near the line, on either side, is measured again and the two are pooled,
            # so one noisy reading neither passes nor shrinks the model; a clear pass or a clear
            # miss stands as measured
            again = _measure(config, {"baseline": loaded.model, "pruned": pruned}, x, precision, spinning)
            readings = [(base_ms, got_ms), (timing_ms(again["baseline"]), timing_ms(again["pruned"]))]
            base_ms = sum(r[0] for r in readings) / 2
            got_ms = sum(r[1] for r in readings) / 2
            measured = {"baseline": _mean_timing(measured["baseline"], again["baseline"]),
                        "pruned": _mean_timing(measured["pruned"], again["pruned"])}
            goal_ms = frac * base_ms if frac is not None else ctx.budget.value
            step.update(readings_ms=[list(r) for r in readings], baseline_ms=base_ms, measured_ms=got_ms,
                        goal_ms=goal_ms)
        closed_loop.append(step)
        if got_ms <= goal_ms * (1 + config.tolerance) or len(closed_loop) > config.closed_loop_rounds:
            break
        # scale what the table said of *this* result, not the target: a search that landed under
        # its target (amc, evolution) would otherwise be handed a target its last result already
        # meets and return it again, wasting the round
        new_target = min(ctx.target, step["predicted"]) * goal_ms / got_ms
        if new_target < ctx.artifacts["smallest_cost"]:
            step["note"] = "tightened target below the smallest reachable cost; stopped"
            break
        print(f"closed loop: measured {got_ms:.3f} ms > budget {goal_ms:.3f} ms (+{100 * config.tolerance:.0f}%); "
              f"re-searching with the table target tightened {ctx.target:.3f} -> {new_target:.3f} ms",
              file=sys.stderr)
        ctx.target = new_target
        t1 = time.perf_counter()
        widths = _search(strategy, ctx)
        search_s += time.perf_counter() - t1
    before, after = summarize(loaded.model, x), summarize(pruned, x)
    report: dict[str, Any] = {
        "model": loaded.model_id,
        "strategy": config.strategy,
        "seed": config.seed,
        "budget": ctx.budget.to_dict() if ctx.budget is not None else None,
        "table": plan.provenance.get("table"),
        "input_shape": list(x.shape),
        "config": {k: v for k, v in asdict(config).items()},
        "before": before,
        "after": after,
        "flops_reduction": before["flops"] / max(after["flops"], 1),
        "params_reduction": before["params"] / max(after["params"], 1),
        "widths": {g.name: {"before": g.width, "after": widths.get(g.name, g.width)} for g in ctx.graph.groups},
        "search_seconds": search_s,
        "evaluations": ctx.evaluations,
    }
    cost = {"unit": ctx.cost.unit, "baseline": ctx.baseline_cost, "predicted": ctx.predict(widths),
            "target": original_target, "final_target": ctx.target}
    report["cost"] = cost
    if ctx.cost.unit == "ms":
        report["latency"] = {"baseline_predicted_ms": ctx.baseline_cost, "predicted_ms": cost["predicted"],
                             "speedup_predicted": ctx.baseline_cost / max(cost["predicted"], 1e-12)}
    elif (predicted := table_prediction(ctx, measured_table, widths)) is not None:
        report["latency"] = predicted
    if measured is not None:
        b, p = measured["baseline"], measured["pruned"]
        b_ms, p_ms = timing_ms(b), timing_ms(p)
        lat = report.setdefault("latency", {})
        lat.update({"backend": config.backend, "threads": config.threads, "precision": precision, "spinning": spinning,
                    "statistic": MEASURE_STATISTIC,
                    "baseline_ms": b_ms, "baseline_median_ms": b.median_ms, "baseline_p90_ms": b.p90_ms,
                    "measured_ms": p_ms, "measured_median_ms": p.median_ms, "measured_p90_ms": p.p90_ms,
                    "speedup_measured": b_ms / max(p_ms, 1e-12)})
        report["closed_loop"] = closed_loop
        if drift is not None:
            lat["table_drift"] = drift
            report.setdefault("warnings", []).append(drift["warning"])
        if ctx.budget is not None and ctx.budget.is_latency:
            goal = closed_loop[-1]["goal_ms"]
            met = p_ms <= goal * (1 + config.tolerance)
            lat["budget_ms"] = goal
            lat["met_budget"] = met
            report["verdict"] = (f"measured {p_ms:.3f} ms meets the budget {goal:.3f} ms (+{100 * config.tolerance:.0f}% tolerance)"
                                 if met else
                                 f"MISSED: measured {p_ms:.3f} ms is over the budget {goal:.3f} ms by "
                                 f"{100 * (p_ms / goal - 1):.1f}% after {len(closed_loop)} measurement round(s); "
                                 "lower the budget, re-profile the table on a quiet machine, or raise --closed-loop-rounds")
    if evaluator is not None:
        import copy  # an evaluator may recalibrate BN in place: never let it touch the user's model

        acc = report["accuracy"] = {"before": float(evaluator(copy.deepcopy(loaded.model))),
                                    "after": float(evaluator(pruned))}
    if config.finetune_epochs:
        if data is None:
            raise ConfigError("--finetune-epochs needs training data: pass --data synthetic (or imagefolder:PATH ...)")
        from .train import train

        t1 = time.perf_counter()
        train(pruned, data, epochs=config.finetune_epochs, lr=config.finetune_lr,
              teacher=loaded.model if config.distill else None, seed=config.seed, progress=config.progress)
        pruned.eval()
        report["finetune"] = {"epochs": config.finetune_epochs, "lr": config.finetune_lr, "distill": config.distill,
                              "seconds": time.perf_counter() - t1}
        if evaluator is not None:
            acc["after_finetune"] = float(evaluator(pruned))
    report["artifacts"] = sorted(k for k in ctx.artifacts if k != "smallest_cost")
    return PruneResult(model=pruned, plan=plan, report=report, artifacts=ctx.artifacts)
