"""Uniform baseline: every prunable group keeps the same fraction, snapped to the grid."""
from __future__ import annotations

from ..errors import ConfigError


def uniform_widths(ctx, ratio: float) -> dict[str, int]:
    cfg = ctx.config
    return {g.name: g.snap(g.width * (1.0 - ratio), cfg.align, cfg.min_width, cfg.max_prune) for g in ctx.graph.prunable}


def uniform(ctx) -> dict[str, int]:
    """Keep ``(1 - ratio) * width`` channels in every group (the common FLOPs-style baseline,
    e.g. Li et al. ICLR 2017 / Torch-Pruning's default).

    Ratio mode (``--ratio``): that ratio. Budget mode (``--budget``): bisect the uniform ratio until
    the cost model (latency table, FLOPs or params) meets the budget; the smallest such ratio wins.
    """
    if ctx.config.ratio is not None and ctx.target is None:
        return uniform_widths(ctx, ctx.config.ratio)
    if ctx.target is None:
        raise ConfigError("strategy 'uniform' needs --ratio (fraction of channels to remove, e.g. 0.5) "
                          "or --budget (e.g. 0.5x, 50%flops)")
    lo, hi = 0.0, 1.0  # lo: may miss; hi: meets (ratio 1 snaps every group to its minimum)
    if ctx.meets(uniform_widths(ctx, 0.0)):
        return uniform_widths(ctx, 0.0)
    for _ in range(40):
        mid = (lo + hi) / 2
        if ctx.meets(uniform_widths(ctx, mid)):
            hi = mid
        else:
            lo = mid
    widths = uniform_widths(ctx, hi)
    if not ctx.meets(widths):  # snapping ties: fall back to every group at its minimum
        widths = {g.name: ctx.grid(g)[0] for g in ctx.graph.prunable}
    ctx.artifacts["uniform_ratio"] = hi
    return widths
