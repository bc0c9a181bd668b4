"""HALP: latency-saliency knapsack."""
from __future__ import annotations

import itertools
import sys

import numpy as np
import torch

from ._common import importance, repair
from .knapsack import knapsack_mc  # the exact DP (lives with its multi-dimensional relaxation)


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


FLOOR_STEP = 0.125


def halp_floor(ctx) -> float:
    """The per-group pruning cap halp searches with: ``halp_max_prune`` (0.625: every group keeps
    at least 3/8 of its channels) when the budget can be met with every group at that floor, else
    the cap raised in steps of 1/8 until it can, at most ``--max-prune``.

    Why a floor: the knapsack ranks channels by a Taylor score read off a few hundred images and
    will cut a group down to the hardware grid's last step (8 channels) when that group's summed
    score is small; after a short recovery such bottlenecks cost accuracy. On the accuracy
    benchmark (tiny_resnet on `mosaic`, 0.5x measured latency, 3 epochs of recovery, six paired
    seeds, docs/strategies.md) uncapped halp was 2.0 points behind uniform widths with either
    recipe, every seed; with a cap of 0.625 it was level (+0.17 fine-tune, -0.30 KD), a cap of
    0.75 in between (an earlier run whose seeds did not fix the data order had the cap at -0.4 /
    -1.6 and uncapped halp at -1.3 / -0.6: inside that run's noise). HALP's own code (NVlabs/HALP)
    has no floor, but it prunes during a 90-epoch training run, which heals what a short recovery
    does not. ``--option halp_max_prune=1`` searches without it."""
    from ..budget import min_widths

    cfg = ctx.config
    cap = min(ctx.options.halp_max_prune, cfg.max_prune)
    while cap < cfg.max_prune and not ctx.meets(min_widths(ctx.graph, cfg.align, cfg.min_width, cap)):
        cap = min(cfg.max_prune, cap + FLOOR_STEP)
    return cap


def taylor_ema(ctx, groups, batches: int, momentum: float) -> dict[str, torch.Tensor] | None:
    """Per group, the channels' Taylor importance ``|sum_w w * dL/dw|`` over the group's coupled
    layers (Molchanov et al., CVPR 2019, the score HALP ranks neurons by), computed *per minibatch*
    and averaged over ``batches`` minibatches by an exponential moving average with ``momentum``:
    ``s <- momentum * s + (1 - momentum) * s_batch`` (the first batch initialises ``s``).

    Why: HALP prunes during training and accumulates this score over the many minibatches between
    its pruning steps (HALP Sec. 4; Molchanov et al. average over minibatches likewise). The plain
    ``taylor`` criterion here sums gradients over the 4 calibration batches (256 images), and the
    widths HALP chose from it swung with the data seed. Batches come from ``ctx.train`` (the
    training loader, shuffled by the data seed; its random state is put back afterwards so later
    fine-tuning sees the same order) or, without it, the calibration loader cycled. The model is
    run in eval mode on a copy (BN running statistics), as in :mod:`hwprune.importance.data_driven`.
    None without data."""
    import copy

    import torch.nn.functional as F

    from ..tp_compat import torch_pruning
    from ..train_state import capture_rng, restore_rng

    tp = torch_pruning()

    source = getattr(ctx, "train", None)
    source = ctx.calib if source is None else source
    if source is None:
        return None
    state = capture_rng(source)
    model = copy.deepcopy(ctx.graph.model).eval()
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    own = dict(ctx.graph.model.named_parameters())
    params = dict(model.named_parameters())
    saved = {k: p.grad for k, p in own.items()}
    taylor = tp.importance.TaylorImportance(group_reduction="sum", normalizer=None)
    ema: dict[str, torch.Tensor] = {}
    done = 0
    try:
        while done < batches:
            seen = 0
            for xb, yb, *_ in source:
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(xb), yb).backward()
                for k, p in own.items():
                    p.grad = params[k].grad
                for g in groups:
                    sc = taylor(ctx.graph.tp_group(g.name))
                    sc = torch.zeros(g.width) if sc is None else ctx.graph.group_scores(g, sc.detach().float().cpu())
                    ema[g.name] = sc if g.name not in ema else momentum * ema[g.name] + (1 - momentum) * sc
                done, seen = done + 1, seen + 1
                if done >= batches:
                    break
            if seen == 0:
                return None
    finally:
        for k, p in own.items():
            p.grad = saved[k]
        restore_rng(state, source)
    return ema


def halp(ctx) -> dict[str, int]:
    """Shen et al., 'Structural Pruning via Latency-Saliency Knapsack' (HALP, NeurIPS 2022).

    Per channel a Taylor importance (|w * dL/dw| summed over the group's coupled layers), averaged
    over ``halp_batches`` minibatches (32) with momentum ``halp_momentum`` (0.9) (:func:`taylor_ema`;
    falls back to the configured criterion without data), normalised per network. Per group and
    candidate width, the latency cost is read off the table's marginal deltas with the
    neighbouring groups at their current widths (the latency staircase is kept, not linearised).
    Maximise kept importance under the latency budget as a multiple-choice knapsack, solved exactly
    by DP on latency discretised into ``halp_bins`` bins (rounded up, so the answer is feasible on the
    discretised costs). As in HALP, the budget is approached in ``halp_steps`` progressively tighter
    steps, re-reading the marginal costs at the current widths each time; widths only shrink.
    No group loses more than ``halp_max_prune`` (0.625) of its channels while the budget allows it
    (:func:`halp_floor`: why, and how it is relaxed for tight budgets).

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
    key = f"_taylor_ema:{ctx.options.halp_batches}:{ctx.options.halp_momentum}"
    if key not in ctx.artifacts:  # a closed-loop re-search reuses the scores of the same network
        ctx.artifacts[key] = taylor_ema(ctx, groups, ctx.options.halp_batches, ctx.options.halp_momentum)
    scores = ctx.artifacts[key]
    if scores is None:
        scores = {g.name: importance(ctx, "taylor", g) for g in groups}
    else:
        ctx.artifacts["criterion_used"] = f"taylor (EMA over {ctx.options.halp_batches} minibatches)"
    total = sum(float(s.clamp_min(0).sum()) for s in scores.values()) or 1.0
    widths = {g.name: g.width for g in groups}
    n_con = max(1, len(ctx.constraints))
    dp = min(range(n_con), key=lambda i: ctx.target_of(i) / ctx.baseline_of(i))  # the DP dimension
    others = [i for i in range(n_con) if i != dp]

    def predict(w):
        return ctx.predict_on(dp, w)

    max_prune = halp_floor(ctx)
    ctx.artifacts["halp_max_prune"] = max_prune
    if max_prune > min(ctx.options.halp_max_prune, ctx.config.max_prune):
        print(f"note: halp's floor halp_max_prune={ctx.options.halp_max_prune:g} cannot reach the budget; searching "
              f"with {max_prune:g}", file=sys.stderr)

    bar = ctx.bar(steps, "halp")
    for step in range(1, steps + 1):
        goal = ctx.baseline_of(dp) + (ctx.target_of(dp) - ctx.baseline_of(dp)) * step / steps
        cur = predict(widths)
        options, values, costs_f = [], [], []
        for g in groups:
            ws = [w for w in ctx.grid(g, max_prune) if w <= widths[g.name]]
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
            # no more than every group at full width can use: an exact bound (a table that sees
            # almost no cost in any group makes scale, and so cap, astronomically large otherwise)
            cap = min(cap, sum(max(c) for c in costs))
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
