"""Evolutionary multi-objective search over per-group widths (EAPruning)."""
from __future__ import annotations


import numpy as np



def dominates(a, b) -> bool:
    """``a`` Pareto-dominates ``b`` (all objectives minimised): no worse in all, better in one."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_front(points) -> list[int]:
    """Indices of the non-dominated points (duplicates keep their first occurrence)."""
    pts = [tuple(map(float, p)) for p in points]
    keep, seen = [], set()
    for i, p in enumerate(pts):
        if p in seen:
            continue
        if not any(dominates(q, p) for j, q in enumerate(pts) if j != i):
            keep.append(i)
            seen.add(p)
    return keep


def choose_for_budget(front: list[dict], target: float) -> dict | None:
    """The most accurate front member meeting the budget (ties: the cheaper)."""
    ok = [m for m in front if m["cost"] <= target * (1 + 1e-9)]
    return min(ok, key=lambda m: (m["error"], m["cost"])) if ok else None


def fill_budget(ctx, widths: dict[str, int]) -> dict[str, int]:
    """Grow ``widths`` up the grid while the prediction still meets ``ctx.target``: each step adds
    the one grid step (of any group) with the most kept importance (``ctx.scores``, the configured
    criterion; the channels that would come back are the best of those cut) per unit of predicted
    cost; a step that costs nothing goes first. Stops when no single step fits.

    Why: the Pareto front's most accurate member within budget can sit far below it (0.35x for a
    0.5x budget on resnet18 with a small population), throwing away latency the user granted.
    EAPruning samples "subnets that meet different constraints from the Pareto front" (Sec. 3.5);
    with a coarse front the member nearest a constraint is still far from it, so it is repaired
    upward, the mirror image of :func:`hwprune.strategies._common.repair`."""
    widths = dict(widths)
    while True:
        cur = ctx.predict(widths)
        best, best_key = None, None
        for g in ctx.graph.prunable:
            w = widths.get(g.name, g.width)
            up = [v for v in ctx.grid(g) if v > w]
            if not up:
                continue
            cand = {**widths, g.name: up[0]}
            if not ctx.meets(cand):
                continue
            s = ctx.scores(g).float().clamp_min(0).sort(descending=True).values
            gain = float(s[w:up[0]].sum()) + 1e-12 * (up[0] - w)
            dc = ctx.predict(cand) - cur
            key = (dc <= 0, gain / max(dc, 1e-12))
            if best_key is None or key > best_key:
                best, best_key = cand, key
        if best is None:
            return widths
        widths = best


def evolution(ctx) -> dict[str, int]:
    """EAPruning (Li et al., 'EAPruning: Evolutionary Pruning for Vision Transformers and CNNs',
    BMVC 2022; arXiv 2210.00181): NSGA-III (Deb & Jain 2014, via pymoo) over channel *numbers*
    (one integer per group: an index into its width grid), two objectives minimised: evaluator error
    of the sub-network after least-squares weight reconstruction on calibration batches (instead of
    fine-tuning; ``evo_reconstruct``, on when calibration data is given) and its latency on the
    table. The whole Pareto front is kept (``ctx.artifacts['pareto']`` -> out/pareto.json) and the
    most accurate member meeting the budget is chosen. The initial population holds the uniform
    solution for the budget, so a budget-meeting member always exists. With ``evo_fill`` (default)
    the chosen member is then grown up to the budget (:func:`fill_budget`): it is returned, and
    recorded in the artifact as ``filled`` with its own evaluation. Options: ``evo_pop`` (16),
    ``evo_gens`` (8).
    """
    from pymoo.algorithms.moo.nsga3 import NSGA3
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.util.ref_dirs import get_reference_directions

    from .uniform import uniform

    ctx.need_budget("evolution")
    opts = ctx.options
    pop, gens = opts.evo_pop, opts.evo_gens
    recon = opts.evo_reconstruct and ctx.calib is not None
    groups = ctx.graph.prunable
    grids = [ctx.grid(g) for g in groups]
    archive: dict[tuple, dict] = {}

    def decode(idx) -> dict[str, int]:
        return {g.name: grid[int(np.clip(round(float(i)), 0, len(grid) - 1))] for g, grid, i in zip(groups, grids, idx)}

    # several budgets (issue #20): the cost objective is the tightest predicted/budget ratio, so a
    # member meets every budget exactly when its cost is <= 1
    limit = 1.0 if ctx.multi else ctx.target

    def cost_of(widths: dict[str, int]) -> float:
        return max(ctx.pressure(widths)) if ctx.multi else ctx.predict(widths)

    def score(idx) -> tuple[float, float]:
        widths = decode(idx)
        key = tuple(widths[g.name] for g in groups)
        if key not in archive:
            err = 1.0 - ctx.evaluate(widths, reconstruct=recon)
            archive[key] = {"widths": widths, "error": err, "cost": cost_of(widths)}
            if ctx.multi:
                archive[key]["predicted"] = [ctx.predict_on(i, widths) for i in range(len(ctx.constraints))]
        m = archive[key]
        return m["error"], m["cost"]

    class WidthProblem(Problem):
        def __init__(self):
            super().__init__(n_var=len(groups), n_obj=2, xl=np.zeros(len(groups)),
                             xu=np.array([len(g) - 1 for g in grids], dtype=float), vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            ctx.evaluate_many([decode(x) for x in X], reconstruct=recon)  # a generation at once (executor)
            out["F"] = np.array([score(x) for x in X])

    rng = np.random.default_rng(ctx.config.seed)
    uni = uniform(ctx)
    seeds = [[grid.index(uni[g.name]) for g, grid in zip(groups, grids)]]
    while len(seeds) < pop:
        seeds.append([int(rng.integers(0, len(grid))) for grid in grids])
    ref = get_reference_directions("das-dennis", 2, n_partitions=pop - 1)
    algo = NSGA3(ref_dirs=ref, pop_size=pop, sampling=np.array(seeds, dtype=float),
                 crossover=SBX(prob=0.9, eta=15, vtype=float, repair=RoundingRepair()),
                 mutation=PM(eta=20, vtype=float, repair=RoundingRepair()), eliminate_duplicates=True)
    algo.setup(WidthProblem(), termination=("n_gen", gens), seed=ctx.config.seed, verbose=False)
    bar = ctx.bar(gens, "evolution")
    while algo.has_next():
        algo.next()
        members = list(archive.values())
        best = choose_for_budget(members, limit)
        bar.update(1)
        unit = "of budget" if ctx.multi else ctx.cost.unit
        bar.set_postfix_str(f"gen {algo.n_gen - 1}: {len(archive)} evaluated, best in budget acc "
                            f"{1 - best['error']:.4f} pred {best['cost']:.4g}/{limit:.4g} {unit}"
                            if best else f"gen {algo.n_gen - 1}: none in budget yet")
    bar.close()
    members = list(archive.values())
    front = [members[i] for i in pareto_front([(m["error"], m["cost"]) for m in members])]
    front.sort(key=lambda m: m["cost"])
    chosen = choose_for_budget(front, limit)
    for m in front:
        m["meets_budget"] = m["cost"] <= limit * (1 + 1e-9)
        m["chosen"] = m is chosen
    ctx.artifacts["pareto"] = {"objectives": ["error", "max predicted/budget" if ctx.multi else ctx.cost.unit],
                               "target": limit,
                               "reconstruct": recon, "evaluated": len(members), "front": front}
    if not opts.evo_fill:
        return dict(chosen["widths"])
    filled = fill_budget(ctx, chosen["widths"])
    ctx.artifacts["pareto"]["filled"] = {"widths": filled, "cost": ctx.predict(filled),
                                         "error": 1.0 - ctx.evaluate(filled, reconstruct=recon),
                                         "grown_from_cost": chosen["cost"]}
    return filled
