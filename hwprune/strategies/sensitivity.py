"""Sensitivity analysis: per-group accuracy-vs-width curves, then a greedy allocation."""
from __future__ import annotations


import numpy as np

from ._common import lower, repair


def curve_points(grid: list[int], n: int) -> list[int]:
    """``n`` widths spread over the grid (always the smallest and the full width)."""
    if len(grid) <= n:
        return list(grid)
    idx = np.unique(np.round(np.linspace(0, len(grid) - 1, n)).astype(int))
    return [grid[i] for i in idx]


def interp_acc(curve: dict[int, float], width: int) -> float:
    ws = sorted(curve)
    return float(np.interp(width, ws, [curve[w] for w in ws]))


def sensitivity(ctx) -> dict[str, int]:
    """Li et al., 'Pruning Filters for Efficient ConvNets' (ICLR 2017), Sec. 3.3: prune each group
    alone to several widths and record accuracy (the sensitivity curve), then allocate.

    Allocation: start at full width and repeatedly step the group whose next grid step costs the
    least interpolated accuracy per unit of cost saved (ms on the table), until the budget is met.
    Options: ``sens_points`` (widths per curve, default 5). The curve points are independent and are
    scored together through the executor (``--executor ray``: on Ray workers, same scores).
    """
    ctx.need_budget("sensitivity")
    n = ctx.options.sens_points
    groups = ctx.graph.prunable
    base_acc = ctx.evaluate({})
    curves: dict[str, dict[int, float]] = {}
    points = {g.name: curve_points(ctx.grid(g), n) for g in groups}
    jobs = [(g.name, w) for g in groups for w in points[g.name] if w < g.width]
    # every curve point is independent: scored together through the executor (local or Ray workers)
    scored = dict(zip(jobs, ctx.evaluate_many([{name: w} for name, w in jobs])))
    bar = ctx.bar(len(groups), "sensitivity")
    for g in groups:
        curves[g.name] = {w: scored.get((g.name, w), base_acc) for w in points[g.name]}
        worst = min(curves[g.name].values())
        bar.set_postfix_str(f"{g.name}: acc@min {worst:.3f} (full {base_acc:.3f})")
        bar.update(1)
    bar.close()
    ctx.artifacts["sensitivity_curves"] = {k: {str(w): a for w, a in v.items()} for k, v in curves.items()}
    widths = {g.name: g.width for g in groups}
    while not ctx.meets(widths):
        on = ctx.tightest(widths)  # several budgets: save on the one most over its budget
        cur = ctx.predict_on(on, widths)
        best, best_rate = None, None
        for g in groups:
            nw = lower(ctx.grid(g), widths[g.name])
            if nw is None:
                continue
            saved = cur - ctx.predict_on(on, {**widths, g.name: nw})
            if saved <= 0:
                continue
            drop = interp_acc(curves[g.name], widths[g.name]) - interp_acc(curves[g.name], nw)
            rate = (max(drop, 0.0) / saved, -saved)  # ties (flat curves): the bigger saving first
            if best is None or rate < best_rate:
                best, best_rate = (g.name, nw), rate
        if best is None:
            break
        widths[best[0]] = best[1]
    return repair(ctx, widths)
