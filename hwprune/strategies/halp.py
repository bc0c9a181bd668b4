"""HALP: latency-saliency knapsack."""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from ._options import StrategyOptions, option
from .registry import register_strategy
from ._common import importance, repair


def knapsack_mc(values: list[list[float]], costs: list[list[int]], capacity: int) -> tuple[float, list[int]]:
    """Exact multiple-choice knapsack by dynamic programming over integer costs.

    ``values[i][j]``, ``costs[i][j]``: option ``j`` of item ``i`` (exactly one option per item).
    Returns (best total value, chosen option per item); value -inf and [] if infeasible.
    """
    NEG = -np.inf
    dp = np.full(capacity + 1, NEG)
    dp[0] = 0.0
    choice = []
    for vals, cs in zip(values, costs):
        new = np.full(capacity + 1, NEG)
        arg = np.full(capacity + 1, -1, dtype=np.int64)
        for j, (v, c) in enumerate(zip(vals, cs)):
            if c > capacity:
                continue
            shifted = np.full(capacity + 1, NEG)
            shifted[c:] = dp[:capacity + 1 - c] + v
            better = shifted > new
            new[better] = shifted[better]
            arg[better] = j
        dp = new
        choice.append(arg)
    best_cap = int(np.argmax(dp))
    if not np.isfinite(dp[best_cap]):
        return float("-inf"), []
    picks, cap = [], best_cap
    for i in range(len(values) - 1, -1, -1):
        j = int(choice[i][cap])
        picks.append(j)
        cap -= costs[i][j]
    return float(dp[best_cap]), picks[::-1]


def knapsack_brute(values, costs, capacity):
    """Exhaustive reference for tests."""
    best, pick = float("-inf"), []
    for combo in itertools.product(*[range(len(v)) for v in values]):
        c = sum(costs[i][j] for i, j in enumerate(combo))
        if c <= capacity:
            v = sum(values[i][j] for i, j in enumerate(combo))
            if v > best:
                best, pick = v, list(combo)
    return best, pick


def kept_value(scores: torch.Tensor, widths: list[int], blocks: int = 1) -> list[float]:
    """HALP's augmented knapsack value: keeping ``k`` channels keeps the top-``k`` importances
    (a layer keeps its most important channels first), so value(k) = sum of the k largest."""
    s = scores.float().clamp_min(0).sort(descending=True).values
    c = torch.cat([torch.zeros(1), s.cumsum(0)])
    return [float(c[min(k, len(s))]) for k in widths]


@dataclass
class HalpOptions(StrategyOptions):
    halp_bins: int = option(2000, "latency bins of the knapsack DP (more: finer and slower)", ge=1)
    halp_steps: int = option(4, "progressively tighter steps toward the budget", ge=1)


@register_strategy("halp", HalpOptions, needs_budget=True)
def halp(ctx) -> dict[str, int]:
    """Shen et al., 'Structural Pruning via Latency-Saliency Knapsack' (HALP, NeurIPS 2022).

    Per channel a Taylor importance (|w * dL/dw| summed over the group's coupled layers; falls back
    to the configured criterion without calibration data), normalised per network. Per group and
    candidate width, the latency cost is read off the table's marginal deltas with the
    neighbouring groups at their current widths (the latency staircase is kept, not linearised).
    Maximise kept importance under the latency budget as a multiple-choice knapsack, solved exactly
    by DP on latency discretised into ``halp_bins`` bins (rounded up, so the answer is feasible on the
    discretised costs). As in HALP, the budget is approached in ``halp_steps`` progressively tighter
    steps, re-reading the marginal costs at the current widths each time; widths only shrink.

    Several budgets (devices, issue #20) make it a knapsack with several cost dimensions: the budget
    with the most to shed (smallest target/unpruned) is the DP dimension; every other one is moved
    into the objective by Lagrangian relaxation with the exact DP inside
    (:func:`hwprune.strategies.knapsack.knapsack_mc_multi`: multipliers by coordinate bisection,
    feasibility checked on each table's real prediction, a greedy pass on the best feasible answer;
    on small random cases within ~1% of exhaustive search on average, always feasible).
    """
    ctx.need_budget("halp")
    bins, steps = ctx.options.halp_bins, ctx.options.halp_steps
    groups = ctx.graph.prunable
    scores = {g.name: importance(ctx, "taylor", g) for g in groups}
    total = sum(float(s.clamp_min(0).sum()) for s in scores.values()) or 1.0
    widths = {g.name: g.width for g in groups}
    n_con = max(1, len(ctx.constraints))
    dp = min(range(n_con), key=lambda i: ctx.target_of(i) / ctx.baseline_of(i))  # the DP dimension
    others = [i for i in range(n_con) if i != dp]

    def predict(w):
        return ctx.predict_on(dp, w)

    bar = ctx.bar(steps, "halp")
    for step in range(1, steps + 1):
        goal = ctx.baseline_of(dp) + (ctx.target_of(dp) - ctx.baseline_of(dp)) * step / steps
        cur = predict(widths)
        options, values, costs_f = [], [], []
        for g in groups:
            ws = [w for w in ctx.grid(g) if w <= widths[g.name]]
            options.append(ws)
            values.append(kept_value(scores[g.name] / total, ws, g.blocks))
            # marginal latency of this group at width w, relative to its minimum (>= 0)
            c = [predict({**widths, g.name: w}) for w in ws]
            costs_f.append([ci - c[0] for ci in c])
        base = cur - sum(cf[ws.index(widths[g.name])] for cf, ws, g in zip(costs_f, options, groups))
        span = max(max(max(cf) for cf in costs_f), 1e-12)
        scale = bins / (span * len(groups))
        costs = [[max(0, int(np.ceil(c * scale - 1e-9))) for c in cf] for cf in costs_f]
        floor = {g.name: o[0] for g, o in zip(groups, options)}
        solve = extra_dimensions(ctx, others, step, steps, groups, options, widths, values)
        extra = 0.0  # the separable approximation can under-count; tighten until the table agrees
        for _ in range(30):
            cap = int(np.floor((goal - base - extra) * scale))
            val, picks = solve(costs, cap) if cap >= 0 else (float("-inf"), [])
            new = {g.name: o[p] for g, o, p in zip(groups, options, picks)} if picks else floor
            over = predict(new) - goal
            if over <= 1e-9 * abs(goal) or not picks:
                break
            extra += over + 0.5 / scale
        widths = new
        kept = sum(v[o.index(widths[g.name])] for g, v, o in zip(groups, values, options))
        bar.update(1)
        bar.set_postfix_str(f"step {step}: kept importance {kept:.3f}, pred {predict(widths):.4g}/"
                            f"{goal:.4g} {ctx.cost.unit}")
    bar.close()
    return repair(ctx, widths)


def extra_dimensions(ctx, others: list[int], step: int, steps: int, groups, options, widths, values):
    """``solve(costs, cap) -> (value, picks)`` for one HALP step: the plain exact DP with one budget;
    with several, :func:`~hwprune.strategies.knapsack.knapsack_mc_multi` over the other budgets
    (their marginal costs at the current widths, their goals for this step, usage checked on each
    table's prediction of the picked widths)."""
    if not others:
        return lambda costs, cap: knapsack_mc(values, costs, cap)
    from .knapsack import knapsack_mc_multi

    goals, bases, extra_costs = [], [], []
    for k in others:
        goals.append(ctx.baseline_of(k) + (ctx.target_of(k) - ctx.baseline_of(k)) * step / steps)
        cf = []
        for g, ws in zip(groups, options):
            c = [ctx.predict_on(k, {**widths, g.name: w}) for w in ws]
            cf.append([ci - c[0] for ci in c])
        extra_costs.append(cf)
        bases.append(ctx.predict_on(k, widths) - sum(c[ws.index(widths[g.name])]
                                                     for c, ws, g in zip(cf, options, groups)))
    caps = [max(goal - base, 1e-12) for goal, base in zip(goals, bases)]

    def usage(picks):  # the tables' own prediction (not additive over groups), as marginal usage
        new = {g.name: o[p] for g, o, p in zip(groups, options, picks)}
        return [ctx.predict_on(k, new) - base for k, base in zip(others, bases)]

    def solve(costs, cap):
        val, picks, info = knapsack_mc_multi(values, costs, cap, extra_costs, caps, check=usage)
        ctx.artifacts.setdefault("halp_lagrange", []).append(
            {"step": step, "lambdas": info["lambdas"], "solves": info["solves"], "feasible": bool(picks)})
        return val, picks

    return solve
