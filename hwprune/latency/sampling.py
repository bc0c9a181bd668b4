"""Sparse sampling of a unit's (cin, cout) plane and interpolation between the samples.

Measuring every (cin, cout) pair on the align grid is far too slow (ResNet-50's widest unit has
256 x 64 pairs), so each axis is sampled at a few grid widths and the plane is interpolated
bilinearly -- exact at the sampled points. Because CPU/GPU latency is a staircase in the width
(vector/tile sizes), an axis is refined where a probe midpoint disagrees with the interpolation
by more than a tolerance (NetAdapt's look-up tables are dense per layer; this is the same table,
sampled where the curve bends). Marginal costs (HALP-style deltas) are read off this surface.
"""
from __future__ import annotations

import bisect
from typing import Sequence


def spread_points(candidates: Sequence[int], n: int) -> list[int]:
    """``n`` of the sorted ``candidates``, evenly spread by index, always with both ends."""
    c = sorted(set(int(v) for v in candidates))
    if len(c) <= n:
        return c
    idx = {round(i * (len(c) - 1) / (n - 1)) for i in range(n)}
    return [c[i] for i in sorted(idx)]


def bracket(xs: Sequence[int], x: float) -> tuple[int, int, float]:
    """Indices (i, j) of the axis points around ``x`` and the weight of j (0 at xs[i])."""
    if len(xs) == 1:
        return 0, 0, 0.0
    j = bisect.bisect_left(xs, x)
    if j < len(xs) and xs[j] == x:
        return j, j, 0.0
    j = min(max(j, 1), len(xs) - 1)  # outside the range: extrapolate from the end segment
    i = j - 1
    return i, j, (x - xs[i]) / (xs[j] - xs[i])


def interp1(xs: Sequence[int], vals: Sequence[float], x: float) -> float:
    i, j, t = bracket(xs, x)
    return vals[i] * (1 - t) + vals[j] * t


def bilinear(xs: Sequence[int], ys: Sequence[int], value, x: float, y: float) -> float:
    """Bilinear interpolation of ``value(xi, yj)`` on the grid ``xs`` x ``ys`` (exact on it)."""
    i0, i1, tx = bracket(xs, x)
    j0, j1, ty = bracket(ys, y)
    v00, v01 = value(xs[i0], ys[j0]), value(xs[i0], ys[j1])
    v10, v11 = value(xs[i1], ys[j0]), value(xs[i1], ys[j1])
    return (v00 * (1 - tx) * (1 - ty) + v10 * tx * (1 - ty) + v01 * (1 - tx) * ty + v11 * tx * ty)


def midpoints(axis: Sequence[int], candidates: Sequence[int]) -> list[int]:
    """For each gap of ``axis`` with candidate widths inside, the candidate nearest its middle."""
    cand = sorted(set(candidates))
    out = []
    for a, b in zip(axis, axis[1:]):
        inside = [c for c in cand if a < c < b]
        if inside:
            out.append(min(inside, key=lambda c: abs(c - (a + b) / 2)))
    return out


def needs_refinement(axis: Sequence[int], vals: dict[int, float], probes: dict[int, float], tol: float) -> list[int]:
    """Probe points whose measured value is off the interpolation of ``axis`` by more than ``tol``."""
    xs = list(axis)
    line = [vals[x] for x in xs]
    bad = []
    for p, v in probes.items():
        est = interp1(xs, line, p)
        if abs(est - v) > tol * max(v, 1e-9):
            bad.append(p)
    return bad


def monotone_envelope(xs: Sequence[int], ys: Sequence[int], value, tied: bool = False) -> dict[tuple[int, int], float]:
    """Lower each point to the smallest value among points with at least as many channels.

    A unit cannot get cheaper by adding channels, and measurement noise on a shared machine only
    ever *adds* time, so a point above a point that dominates it in (cin, cout) is a noise spike;
    the suffix minimum removes such spikes without touching a clean staircase."""
    out: dict[tuple[int, int], float] = {}
    if tied:
        best = float("inf")
        for x in reversed(list(xs)):
            best = min(best, value(x, x))
            out[(x, x)] = best
        return out
    for i in range(len(xs) - 1, -1, -1):
        for j in range(len(ys) - 1, -1, -1):
            v = value(xs[i], ys[j])
            if i + 1 < len(xs):
                v = min(v, out[(xs[i + 1], ys[j])])
            if j + 1 < len(ys):
                v = min(v, out[(xs[i], ys[j + 1])])
            out[(xs[i], ys[j])] = v
    return out


def edge_spikes(xs: Sequence[int], ys: Sequence[int], value, tied: bool = False, factor: float = 1.25) -> list:
    """Points on the far edges (largest cin or cout) that the envelope cannot correct: flagged
    when above ``factor`` x the linear extrapolation of the two points before them."""
    def extrap(axis, get):
        if len(axis) < 3:
            return None
        a, b, c = axis[-3], axis[-2], axis[-1]
        va, vb = get(a), get(b)
        return vb + (vb - va) * (c - b) / (b - a)

    out = []
    if tied:
        e = extrap(list(xs), lambda v: value(v, v))
        if e is not None and value(xs[-1], xs[-1]) > factor * max(e, 1e-9):
            out.append((xs[-1], xs[-1]))
        return out
    for y in ys:  # last cin, every cout
        e = extrap(list(xs), lambda v: value(v, y))
        if e is not None and value(xs[-1], y) > factor * max(e, 1e-9):
            out.append((xs[-1], y))
    for x in xs:  # last cout, every cin
        e = extrap(list(ys), lambda v: value(x, v))
        if e is not None and value(x, ys[-1]) > factor * max(e, 1e-9):
            out.append((x, ys[-1]))
    return list(dict.fromkeys(out))
