"""The ``prune`` verb: search widths with a strategy, pick channels with a criterion, cut.

    result = prune(loaded_model, PruneConfig(strategy="uniform", ratio=0.5))
    result.model      # smaller dense nn.Module
    result.plan       # PruningPlan (JSON-able)
    result.report     # dict written to report.json by the CLI
"""
from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn

from .counting import summarize
from .errors import ConfigError
from .graph import ChannelGraph, ChannelGroup, keep_top
from .importance import get_criterion
from .models import LoadedModel
from .plan import PruningPlan, apply


@dataclass
class PruneConfig:
    """What to prune and how. Validated on construction so bad values fail before any work."""

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

    def __post_init__(self):
        if self.ratio is not None and not (0.0 <= self.ratio < 1.0):
            raise ConfigError(f"ratio {self.ratio} is out of range; use a fraction of channels to remove in [0, 1), e.g. 0.5")
        if self.align < 1:
            raise ConfigError(f"align {self.align} must be >= 1 (8 suits tensor cores and SIMD)")
        if self.min_width < 1:
            raise ConfigError(f"min-width {self.min_width} must be >= 1")
        if self.batch < 1:
            raise ConfigError(f"batch {self.batch} must be >= 1")
        self.ignore = tuple(self.ignore)


@dataclass
class SearchContext:
    """Everything a strategy may consult; scores are computed lazily and cached per group."""

    model: nn.Module
    graph: ChannelGraph
    example_input: torch.Tensor
    config: PruneConfig
    calib: Optional[Iterable] = None
    table: Any = None
    evaluator: Any = None
    model_id: dict[str, Any] = field(default_factory=dict)
    _scores: dict[str, torch.Tensor] = field(default_factory=dict)

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


@dataclass
class PruneResult:
    model: nn.Module
    plan: PruningPlan
    report: dict[str, Any]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_context(loaded: LoadedModel, config: PruneConfig, calib=None, table=None, evaluator=None) -> SearchContext:
    size = config.input_size or loaded.input_size
    x = torch.randn(config.batch, 3, size, size, generator=torch.Generator().manual_seed(config.seed))
    graph = ChannelGraph(loaded.model, x, ignore=config.ignore)
    return SearchContext(model=loaded.model, graph=graph, example_input=x, config=config, calib=calib,
                         table=table, evaluator=evaluator, model_id=loaded.model_id)


def prune(loaded: LoadedModel, config: PruneConfig, calib=None, table=None, evaluator=None) -> PruneResult:
    """Search widths, select channels, physically remove them; returns model, plan and report."""
    from .strategies import STRATEGIES

    strategy = STRATEGIES.get(config.strategy)
    if loaded.plan is not None:
        raise ConfigError("this checkpoint is already pruned; prune the original model again with a stronger setting "
                          "(re-pruning a pruned checkpoint is not supported yet)")
    seed_everything(config.seed)
    t0 = time.perf_counter()
    ctx = make_context(loaded, config, calib, table, evaluator)
    widths = strategy(ctx)
    plan = ctx.plan_for(widths, provenance={"strategy": config.strategy, "criterion": config.criterion,
                                            "ratio": config.ratio, "budget": config.budget, "seed": config.seed,
                                            "align": config.align, "min_width": config.min_width})
    pruned = apply(loaded.model, plan)
    search_s = time.perf_counter() - t0
    x = ctx.example_input
    before, after = summarize(loaded.model, x), summarize(pruned, x)
    report = {
        "model": loaded.model_id,
        "input_shape": list(x.shape),
        "config": {k: v for k, v in asdict(config).items()},
        "before": before,
        "after": after,
        "flops_reduction": before["flops"] / max(after["flops"], 1),
        "params_reduction": before["params"] / max(after["params"], 1),
        "widths": {g.name: {"before": g.width, "after": widths.get(g.name, g.width)} for g in ctx.graph.groups},
        "search_seconds": search_s,
    }
    return PruneResult(model=pruned, plan=plan, report=report)
