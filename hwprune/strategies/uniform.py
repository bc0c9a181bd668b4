"""Uniform baseline: every prunable group keeps the same fraction, snapped to the grid."""
from __future__ import annotations

from ..errors import ConfigError
from . import STRATEGIES


@STRATEGIES.register("uniform")
def uniform(ctx) -> dict[str, int]:
    """Keep ``(1 - ratio) * width`` channels in every group (the common FLOPs-style baseline)."""
    ratio = ctx.config.ratio
    if ratio is None:
        raise ConfigError("strategy 'uniform' needs --ratio (fraction of channels to remove, e.g. 0.5)")
    cfg = ctx.config
    return {g.name: g.snap(g.width * (1.0 - ratio), cfg.align, cfg.min_width) for g in ctx.graph.prunable}
