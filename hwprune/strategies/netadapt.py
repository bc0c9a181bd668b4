"""NetAdapt: iterative, per-iteration latency decrement, one layer at a time."""
from __future__ import annotations

import random

from ._common import repair


def decrement_schedule(baseline: float, initial: float, decay: float, iteration: int) -> float:
    """Latency to remove in ``iteration`` (0-based): ``initial * baseline * decay**iteration``
    (NetAdapt Sec. 3.2: 'the resource reduction schedule ... decays over iterations')."""
    return initial * baseline * decay ** iteration


def iteration_target(current: float, final: float, baseline: float, initial: float, decay: float,
                     iteration: int) -> float:
    """This iteration's constraint: current minus the scheduled decrement, never below the budget."""
    return max(current - decrement_schedule(baseline, initial, decay, iteration), final)


def largest_meeting(ctx, widths: dict[str, int], group, target: float, on: int = 0):
    """NetAdapt's per-layer proposal: the largest grid width below the current one whose
    predicted cost (table; constraint ``on`` of several budgets) meets ``target``; None if even the
    minimum does not."""
    cur = widths[group.name]
    for w in reversed([w for w in ctx.grid(group) if w < cur]):
        if ctx.predict_on(on, {**widths, group.name: w}) <= target:
            return w
    return None


def netadapt(ctx) -> dict[str, int]:
    """Yang et al., 'NetAdapt: Platform-Aware Neural Network Adaptation for Mobile Applications'
    (ECCV 2018), Algorithm 1, with the latency lookup table as the empirical measurement.

    Each iteration sets a constraint = current latency minus a decrement from a decaying schedule
    (``netadapt_initial`` fraction of the baseline, decay ``netadapt_decay``); every group proposes
    the largest grid width meeting it (from the table); proposals are evaluated (the configured
    evaluator, e.g. adaptive-BN, after ``netadapt_ft_steps`` short fine-tune steps) and the most
    accurate one is kept. Repeats until the budget is met. A group that cannot meet the constraint
    alone proposes its minimum width (so progress never stalls).

    With several budgets (devices, issue #20) each iteration steps the currently tightest one -- the
    largest predicted/budget ratio -- with that budget's own schedule, until all are met. The
    proposals of an iteration are independent and are scored together through the executor
    (``ctx.evaluate_many``: local, or Ray workers), the same scores either way.

    The seed (``--seed``) is used where NetAdapt draws at random: the short-term fine-tune's
    training images (:func:`~hwprune.strategies._common.short_finetune`), and
    ties between equally accurate proposals (common with a held-out set of 1000 images: accuracy
    moves in steps of 0.001), broken in a seeded random order instead of by group name.
    """
    ctx.need_budget("netadapt")
    opts = ctx.options
    initial, decay, ft_steps = opts.netadapt_initial, opts.netadapt_decay, opts.netadapt_ft_steps
    baseline, final = ctx.baseline_cost, ctx.target
    widths = {g.name: g.width for g in ctx.graph.prunable}
    history = []
    bar = ctx.bar(0, "netadapt")
    it = 0
    rng = random.Random(ctx.config.seed)
    while not ctx.meets(widths):
        on = ctx.tightest(widths)  # several budgets: step the tightest one
        cur, final, baseline = ctx.predict_on(on, widths), ctx.target_of(on), ctx.baseline_of(on)
        target = iteration_target(cur, final, baseline, initial, decay, it)
        proposals = {}
        for g in ctx.graph.prunable:
            w = largest_meeting(ctx, widths, g, target, on)
            if w is None:
                below = [v for v in ctx.grid(g) if v < widths[g.name]]
                w = below[0] if below else None
            if w is not None:
                proposals[g.name] = w
        if not proposals:
            break
        scored = []
        names = list(proposals)
        rng.shuffle(names)  # tie order: seeded, not alphabetical
        accs = ctx.evaluate_many([{**widths, n: proposals[n]} for n in names], finetune_steps=ft_steps)
        for rank, (name, acc) in enumerate(zip(names, accs)):
            w = proposals[name]
            cand = {**widths, name: w}
            meets = ctx.predict_on(on, cand) <= target
            scored.append((meets, acc, -ctx.predict_on(on, cand), -rank, name, w))
        meets, acc, neg_cost, _, name, w = max(scored)
        widths[name] = w
        history.append({"iteration": it, "target": target, "group": name, "width": w, "accuracy": acc,
                        "predicted": -neg_cost})
        bar.update(1)
        bar.set_postfix_str(f"it {it}: {name}->{w} acc {acc:.4f} pred {-neg_cost:.4g}/{final:.4g} {ctx.cost.unit}")
        it += 1
    bar.close()
    ctx.artifacts["netadapt_history"] = history
    return repair(ctx, widths)
