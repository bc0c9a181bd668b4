"""Search: the context a strategy works in (graph, cost model, target, scores, evaluator) and one
run of a strategy against it. Cutting the result and checking it by measurement live in
:mod:`hwprune.closed_loop`; :func:`hwprune.prune.prune` strings the two together."""
from __future__ import annotations

import random
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch
from torch import nn

from .errors import BudgetError, ConfigError
from .graph import ChannelGraph, ChannelGroup, keep_top
from .importance import get_criterion
from .models import LoadedModel
from .plan import PruningPlan, apply
from .prune_config import PruneConfig


@dataclass
class Constraint:
    """One budget resolved against the graph: its cost model (a latency table is one device), the
    target in ``cost.unit``, the unpruned and smallest reachable costs. A search spends a list of
    them (``SearchContext.constraints``, issue #20); the first is the primary one that
    ``ctx.cost``/``ctx.target`` name, the others only have to be met as well."""

    label: str
    budget: Any
    cost: Any
    target: float
    baseline: float
    smallest: float
    table: Any = None  # the table (path or LatencyTable) of a latency budget
    # an int8 device whose budget is a share of its *fp32* unpruned model: that share (the closed loop times the
    # fp32 model beside the result there and judges against it) and the side-by-side reading that turned it into
    # the int8 table's target (hwprune.int8_budget.measure_int8_ratio); None for every other budget
    fp32_fraction: Optional[float] = None
    int8_ratio: Optional[dict[str, float]] = None

    def predict(self, widths: dict[str, int]) -> float:
        return float(self.cost.predict(widths))

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.label, "budget": self.budget.text, "unit": self.cost.unit, "target": self.target,
                "baseline": self.baseline, "smallest": self.smallest,
                "table": getattr(self.table, "path", self.table if isinstance(self.table, str) else None)}


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
    train: Optional[Iterable] = None  # the training loader, when the run has data (halp's importance)
    constraints: list[Constraint] = field(default_factory=list)  # every budget; [0] is cost/target (issue #20)
    executor: Any = None  # hwprune.executor.Executor for evaluate_many (None: local)
    # an int8 search whose relative budget is a share of the fp32 unpruned model: that share, so the closed loop
    # times the fp32 model beside the result and judges against it (hwprune.closed_loop; None: no such budget)
    fp32_fraction: Optional[float] = None

    def scores(self, group: ChannelGroup) -> torch.Tensor:
        if group.name not in self._scores:
            crit = get_criterion(self.config.criterion)
            sc = crit(self.graph, group, self.calib).detach().float().cpu()
            self._scores[group.name] = self.graph.group_scores(group, sc)  # whole heads: summed per head
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

    def grid(self, group: ChannelGroup, max_prune: Optional[float] = None) -> list[int]:
        """The group's widths on the search grid; ``max_prune`` (default ``--max-prune``) caps how
        much of the group may go (halp's own floor passes a smaller one)."""
        cap = self.config.max_prune if max_prune is None else max_prune
        return group.candidate_widths(self.config.align, self.config.min_width, cap)

    def predict(self, widths: dict[str, int]) -> float:
        return float(self.cost.predict(widths))

    def meets(self, widths: dict[str, int]) -> bool:
        """Predicted within every budget (the primary and, with several, each other device's)."""
        if self.target is None:
            return True
        return all(self.predict_on(i, widths) <= self.target_of(i) * (1 + 1e-9)
                   for i in range(max(1, len(self.constraints))))

    # several budgets (issue #20): constraint 0 is ctx.cost / ctx.target (which a closed loop may tighten)
    def target_of(self, i: int) -> float:
        return self.target if i == 0 else self.constraints[i].target

    def baseline_of(self, i: int) -> float:
        return self.baseline_cost if i == 0 else self.constraints[i].baseline

    def predict_on(self, i: int, widths: dict[str, int]) -> float:
        return self.predict(widths) if i == 0 else self.constraints[i].predict(widths)

    def pressure(self, widths: dict[str, int]) -> list[float]:
        """Predicted / target per constraint (<= 1: met)."""
        return [self.predict_on(i, widths) / self.target_of(i) for i in range(max(1, len(self.constraints)))]

    def tightest(self, widths: dict[str, int]) -> int:
        """The constraint with the largest predicted/target ratio at ``widths`` (the one to step)."""
        p = self.pressure(widths)
        return max(range(len(p)), key=lambda i: p[i])

    @property
    def multi(self) -> bool:
        return len(self.constraints) > 1

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
            from .executor import evaluate_candidate

            self._acc_cache[key] = float(evaluate_candidate(self._eval_shared(),
                                                            (self.plan_for(widths), reconstruct, finetune_steps)))
            self.evaluations += 1
        return self._acc_cache[key]

    def evaluate_many(self, candidates: list[dict[str, int]], reconstruct: bool = False,
                      finetune_steps: int = 0) -> list[float]:
        """:meth:`evaluate` for independent candidates at once: the uncached ones go through
        ``self.executor`` (local, or Ray workers: each work item carries its plan, the shared part the
        unpruned model, calibration data, evaluator and seed), so the scores are those of the local
        run whatever executes them."""
        if self.executor is None or getattr(self.executor, "name", "local") == "local":
            return [self.evaluate(w, reconstruct, finetune_steps) for w in candidates]
        if self.evaluator is None:
            self.evaluate(candidates[0] if candidates else {})  # raises the evaluator ConfigError
        keys = [(tuple(sorted((k, int(v)) for k, v in w.items())), reconstruct, finetune_steps) for w in candidates]
        todo: dict[tuple, dict[str, int]] = {}
        for k, w in zip(keys, candidates):
            if k not in self._acc_cache:
                todo.setdefault(k, w)
        if todo:
            from .executor import evaluate_candidate, thread_mismatch

            why = thread_mismatch(self.executor, finetune_steps)
            if why and not self.__dict__.get("_told_threads"):
                self.__dict__["_told_threads"] = True
                print(f"note: {why}", file=sys.stderr)

            items = [(self.plan_for(w), reconstruct, finetune_steps) for w in todo.values()]
            for k, acc in zip(todo, self.executor.map(evaluate_candidate, items, shared=self._eval_shared())):
                self._acc_cache[k] = float(acc)
                self.evaluations += 1
        return [self._acc_cache[k] for k in keys]

    def _eval_shared(self):
        """What every evaluation work item shares (built once; Ray ships it to the workers once)."""
        if "_eval_payload" not in self.__dict__:
            from .executor import EvalShared

            self.__dict__["_eval_payload"] = EvalShared(self.model, self.calib, self.evaluator, self.config.seed)
        return self.__dict__["_eval_payload"]

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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def with_default_align(config: PruneConfig, table=None) -> PruneConfig:
    """``config`` with ``align`` decided when it is None, as ``hwprune prune`` decides ``--align``:
    the grid of the devices the latency budgets are spent on (``table``, a path or loaded table,
    and any ``@TABLE`` bound to a budget; each read from its fingerprint and profiled grid), else
    this machine's grid for ``config.backend``, else 8 (:func:`hwprune.latency.profile.search_align`).
    A user's own cost model in ``table`` says nothing of a grid."""
    if config.align is not None:
        return config
    from dataclasses import replace

    bounds = [b for b in config.budget_list() if b.budget.is_latency]
    tables = [b.table or table for b in bounds]
    tables = [t for t in tables if isinstance(t, str) or hasattr(t, "protocol")]
    tables = list({id(t) if not isinstance(t, str) else t: t for t in tables}.values())
    from .latency.profile import search_align

    return replace(config, align=search_align(config.backend, config.precision, tables))


def make_context(loaded: LoadedModel, config: PruneConfig, calib=None, table=None, evaluator=None) -> SearchContext:
    config = with_default_align(config, table)
    size = config.input_size or loaded.input_size
    x = torch.randn(config.batch, 3, size, size, generator=torch.Generator().manual_seed(config.seed))
    graph = ChannelGraph(loaded.model, x, ignore=config.ignore)
    ctx = SearchContext(model=loaded.model, graph=graph, example_input=x, config=config, calib=calib,
                        table=table, evaluator=evaluator, model_id=loaded.model_id)
    if config.budget is not None:
        ctx.constraints = resolve_constraints(config, graph, x, table)
        first = ctx.constraints[0]
        ctx.budget, ctx.cost = first.budget, first.cost
        ctx.baseline_cost, ctx.target = first.baseline, first.target
        ctx.artifacts["smallest_cost"] = first.smallest
    else:
        from .cost import FlopsCostModel

        ctx.cost = FlopsCostModel(graph, x)
        ctx.baseline_cost = ctx.predict({})
    return ctx


def device_label(bound, table) -> str:
    """How a report names the device a budget is on: its table's backend and settings, and file."""
    import os

    if not bound.budget.is_latency:
        return bound.budget.unit
    from .latency.measure import table_spinning

    t = table
    if isinstance(t, str):
        return os.path.basename(t)
    if not hasattr(t, "backend"):
        return type(t).__name__
    n = t.device.get("threads", "?")
    settings = f"{t.backend} {t.precision} b{t.batch} {n} thread{'' if n == 1 else 's'}"
    settings += ", spinning" if table_spinning(t) else ""
    return f"{settings} ({os.path.basename(t.path)})" if getattr(t, "path", None) else settings


def primary_table(ctx, table):
    """The table a search's closed loop and plan read: ``table`` (``--table``), else the one the first
    budget is bound to (``0.5x@T`` reads as ``--table T``), else None -- for the one-shot prune and
    the iterative one alike."""
    if table is None and ctx.constraints and getattr(ctx.constraints[0].table, "path", None):
        return ctx.constraints[0].table.path
    return table


def resolve_constraints(config: PruneConfig, graph, x, table=None) -> list[Constraint]:
    """Every budget of ``config`` resolved on ``graph``: a budget bound to a table (``0.5x@T``) is
    spent on that table, one without ``@`` on ``table`` (``--table``). A table for another model is
    a TableError naming the budget; budgets out of reach are one BudgetError listing, per device,
    the budget and the smallest reachable cost (every group at its minimum width)."""
    from .budget import check_reachable, cost_model_for, describe_unreachable, min_widths
    from .errors import TableBatchError, TableError
    from .service import check_bound_precision, check_budget_ref, fp32_share_on_int8

    rows, bound_precisions = [], []
    bounds = config.budget_list()
    for bound in bounds:
        t = bound.table if bound.table is not None else table
        if bound.budget.is_latency:
            from .latency import as_table

            t = as_table(t)
            if bound.table is not None and hasattr(t, "precision"):  # --table is checked where it is given
                check_bound_precision(bound, t.precision, config.precision, several=len(bounds) > 1,
                                      budget_ref=config.budget_ref, table=t)
                bound_precisions.append(t.precision)
        try:
            cost = cost_model_for(bound.budget, graph, x, t)
        except TableError as e:
            hint = "" if isinstance(e, TableBatchError) else " (is the table for another model?)"
            raise TableError(f"budget {bound.text!r}: {e}{hint}") from None
        baseline = float(cost.predict({}))
        row = {"bound": bound, "budget": bound.budget, "cost": cost, "table": t, "label": device_label(bound, t),
               "baseline": baseline, "target": float(bound.budget.target(baseline)),
               "smallest": float(cost.predict(min_widths(graph, config.align, config.min_width, config.max_prune)))}
        if len(bounds) > 1 and bound.table is not None and fp32_share_on_int8(
                bound.budget, getattr(t, "precision", "fp32"), config.precision, config.budget_ref):
            row.update(_int8_target(bound, t, graph.model, x, baseline))
        rows.append(row)
    check_budget_ref(bound_precisions, config.precision, config.budget_ref)
    if len(rows) == 1:
        r = rows[0]
        check_reachable(r["budget"], r["target"], r["baseline"], r["smallest"])
    elif any(r["target"] < r["smallest"] for r in rows):
        raise BudgetError("these budgets cannot all be met: every group at its minimum width is the smallest "
                          "reachable on each device, and it misses at least one:\n" + describe_unreachable(rows)
                          + "\nRaise the marked budgets (or lower --min-width / --align, or --ignore fewer layers).")
    return [Constraint(r["label"], r["budget"], r["cost"], r["target"], r["baseline"], r["smallest"], r["table"],
                       r.get("fp32_fraction"), r.get("int8_ratio")) for r in rows]


def _int8_target(bound, table, model, x, baseline: float) -> dict[str, Any]:
    """The int8 table's target for a share of the fp32 unpruned model on that device, as the
    single-device int8 search turns one (:mod:`hwprune.int8_budget`): the fp32 and the quantized
    unpruned model timed side by side with the table's settings, ``share x fp32 = share * fp32_ms /
    int8_ms x int8`` (at most 1: quantizing alone may meet it). The device is reachable (checked by
    :func:`hwprune.service.check_bound_precision`)."""
    import os

    from .int8_budget import measure_int8_ratio, share_of_int8
    from .latency.measure import table_spinning

    m = share_of_int8(bound.budget, measure_int8_ratio(model, x, table.backend, int(table.device.get("threads", 2)),
                                                       table_spinning(table)))
    print(f"int8 device {os.path.basename(getattr(table, 'path', None) or table.backend)}: {m['note']}", file=sys.stderr)
    return {"target": min(m["share_of_int8"], 1.0) * baseline, "fp32_fraction": bound.budget.fraction(), "int8_ratio": m}


def run_search(strategy: Callable, ctx: SearchContext) -> dict[str, int]:
    seed_everything(ctx.config.seed)
    widths = {k: int(v) for k, v in strategy(ctx).items()}
    if ctx.target is not None and ctx.multi and not ctx.meets(widths):
        over = [f"{c.label}: {ctx.predict_on(i, widths):.4g} > {ctx.target_of(i):.4g} {c.cost.unit}"
                for i, c in enumerate(ctx.constraints) if ctx.predict_on(i, widths) > ctx.target_of(i) * (1 + 1e-9)]
        raise BudgetError(f"strategy {ctx.config.strategy!r} returned widths over budget on {'; '.join(over)}; "
                          "this is a bug in the strategy")
    if ctx.target is not None and not ctx.meets(widths):
        raise BudgetError(f"strategy {ctx.config.strategy!r} returned widths predicted at {ctx.predict(widths):.4g} "
                          f"{ctx.cost.unit}, over the target {ctx.target:.4g}; this is a bug in the strategy")
    return widths


def table_prediction(ctx: SearchContext, table, widths: dict[str, int]) -> Optional[dict[str, float]]:
    """What a latency table predicts for the unpruned model and for ``widths`` when the search
    spent another currency (a --ratio, a FLOPs or params budget): a user who passed --table wants
    the latency and speedup it says, as a latency-budget run reports them. None without a table."""
    if table is None:
        return None
    from .latency import as_table

    table = as_table(table)
    cost = table if hasattr(table, "predict") and not hasattr(table, "cost_model") else table.cost_model(ctx.graph)
    if getattr(cost, "unit", None) != "ms":
        return None
    base, pred = float(cost.predict({})), float(cost.predict(widths))
    return {"baseline_predicted_ms": base, "predicted_ms": pred, "speedup_predicted": base / max(pred, 1e-12)}
