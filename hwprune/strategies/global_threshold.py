"""Global importance threshold across groups."""
from __future__ import annotations

import torch

from ._common import repair, snap_down


def normalised_scores(ctx) -> dict[str, torch.Tensor]:
    """Per-group scores divided by the group's mean, so groups of different size/scale compare
    (the 'mean' normaliser of Torch-Pruning's global pruning)."""
    out = {}
    for g in ctx.graph.prunable:
        s = ctx.scores(g).float().clamp_min(0)
        out[g.name] = s / s.mean().clamp_min(1e-12)
    return out


def widths_at(ctx, norm: dict[str, torch.Tensor], thr: float) -> dict[str, int]:
    widths = {}
    for g in ctx.graph.prunable:
        keep = int((norm[g.name] > thr).sum())
        widths[g.name] = snap_down(ctx.grid(g), keep) if keep < g.width else g.width
    return widths


def global_threshold(ctx) -> dict[str, int]:
    """One importance threshold for the whole network (Liu et al., 'Learning Efficient
    Convolutional Networks through Network Slimming', ICCV 2017; Torch-Pruning ``global_pruning``).

    Channels whose per-group-normalised score falls under the threshold are removed (each group
    rounded down to its grid); the threshold is bisected until the cost meets the budget, so groups
    with many unimportant channels shrink most.
    """
    ctx.need_budget("global")
    norm = normalised_scores(ctx)
    allv = torch.cat(list(norm.values())).sort().values
    lo, hi = -1, len(allv) - 1  # index into sorted scores; threshold = allv[i]
    if ctx.meets(widths_at(ctx, norm, float(allv[0]) - 1)):
        return widths_at(ctx, norm, float(allv[0]) - 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ctx.meets(widths_at(ctx, norm, float(allv[mid]))):
            hi = mid
        else:
            lo = mid
    return repair(ctx, widths_at(ctx, norm, float(allv[hi])))
