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


def run_search(strategy: Callable, ctx: SearchContext) -> dict[str, int]:
    seed_everything(ctx.config.seed)
    widths = {k: int(v) for k, v in strategy(ctx).items()}
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
    if isinstance(table, str):
        from .latency import LatencyTable

        table = LatencyTable.load(table)
    cost = table if hasattr(table, "predict") and not hasattr(table, "cost_model") else table.cost_model(ctx.graph)
    if getattr(cost, "unit", None) != "ms":
        return None
    base, pred = float(cost.predict({})), float(cost.predict(widths))
    return {"baseline_predicted_ms": base, "predicted_ms": pred, "speedup_predicted": base / max(pred, 1e-12)}
