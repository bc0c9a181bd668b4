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
import math
from typing import Mapping, Optional, Sequence


def spread_points(candidates: Sequence[int], n: int) -> list[int]:
    """``n`` of the sorted ``candidates``, spread evenly in *log* width, always with both ends.

    Log spacing, because a unit's latency is not proportional to its width where the width is
    small: below a few SIMD blocks a conv runs at a floor (thread dispatch, vector tails), then
    grows linearly, so a chord from the narrowest width to a wide one over-predicts everything
    in between. Heavily pruned models live exactly there, and their total is made of such small
    units, so the narrow end needs the denser sampling; the wide end is close to linear."""
    c = sorted(set(int(v) for v in candidates))
    if len(c) <= n:
        return c
    lo, hi = math.log(max(c[0], 1)), math.log(max(c[-1], 1))
    chosen = {c[0], c[-1]}
    for i in range(1, n - 1):
        target = lo + (hi - lo) * i / (n - 1)
        free = [v for v in c if v not in chosen]
        chosen.add(min(free, key=lambda v: abs(math.log(max(v, 1)) - target)))
    return sorted(chosen)


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


def warped_t(curve: Optional[Mapping[int, float]], x0: int, x1: int, x: float, t: float) -> float:
    """Where ``x`` sits between grid widths ``x0`` and ``x1``, measured in the latency of a 1-D
    scan ``curve`` ({width: ms}) instead of in width; ``t`` (the linear weight) where the scan
    does not cover the three widths or is flat between x0 and x1."""
    if curve is None or x0 == x1:
        return t
    g0, g1 = curve.get(x0), curve.get(x1)
    if g0 is None or g1 is None or g1 - g0 <= 1e-12 * max(abs(g1), 1e-12) or not (x0 <= x <= x1):
        return t
    gx = curve.get(x)
    if gx is None:  # an off-grid width inside the scan: linear between the scan's neighbours
        ks = list(curve)
        j = bisect.bisect_left(ks, x)
        if j == 0 or j >= len(ks):
            return t
        a, b = ks[j - 1], ks[j]
        gx = curve[a] + (curve[b] - curve[a]) * (x - a) / (b - a)
    return (gx - g0) / (g1 - g0)


def bilinear(xs: Sequence[int], ys: Sequence[int], value, x: float, y: float,
             warp_x: Optional[Mapping[int, float]] = None, warp_y: Optional[Mapping[int, float]] = None) -> float:
    """Bilinear interpolation of ``value(xi, yj)`` on the grid ``xs`` x ``ys`` (exact on it).

    ``warp_x`` / ``warp_y``: optional 1-D latency scans ({width: ms}) along each axis; the
    interpolation weights then follow the scans (see :func:`warped_t`), which is exact for
    ``value = alpha + beta * A(x) * B(y)`` whatever staircases A and B are."""
    i0, i1, tx = bracket(xs, x)
    j0, j1, ty = bracket(ys, y)
    tx = warped_t(warp_x, xs[i0], xs[i1], x, tx)
    ty = warped_t(warp_y, ys[j0], ys[j1], y, ty)
    v00, v01 = value(xs[i0], ys[j0]), value(xs[i0], ys[j1])
    v10, v11 = value(xs[i1], ys[j0]), value(xs[i1], ys[j1])
    return (v00 * (1 - tx) * (1 - ty) + v10 * tx * (1 - ty) + v01 * (1 - tx) * ty + v11 * tx * ty)


def probe_disagrees(predicted: float, measured: float, iqr: float, repeats: int, tol: float) -> float:
    """How far a probe midpoint is off the interpolation, relative to its reading (0 when it is not
    off): the miss must exceed ``tol`` of the reading *and* the reading's own noise.

    The noise is the standard error of the reading, from the repeats' inter-quartile range: the
    p10 of ``n`` repeats of a normal spread has a standard error of ``sqrt(0.1 * 0.9 / n) /
    pdf(z_0.1) = 1.71 sigma / sqrt(n)``, and ``iqr = 1.35 sigma``, so ``1.28 * iqr / sqrt(n)``.
    Why: a unit of a few microseconds (an SE block's FCs on a 1x1 map) reads with an IQR of 30-90%
    of its value on a shared 2-core host, and with a 5% tolerance alone its near edge was refined
    on readings such as 5.1, 8.1, 5.4, 6.5, 6.2, 8.7 us at six widths (IQRs up to 11 us): grid
    points that pin the interpolation to noise. On mobilenet_v3_small this rule measured 726 unit
    points instead of 766; most of a family's points are its axis scans (every candidate width
    along the far edges), which refinement does not touch.
    """
    miss = abs(predicted - measured)
    noise = 1.28 * max(iqr, 0.0) / max(repeats, 1) ** 0.5
    if miss <= tol * max(measured, 1e-9) or miss <= noise:
        return 0.0
    return miss / max(measured, 1e-9)


def midpoints(axis: Sequence[int], candidates: Sequence[int]) -> list[int]:
    """For each gap of ``axis`` with candidate widths inside, the candidate nearest its middle
    in log width (the geometric mean; see :func:`spread_points`)."""
    cand = sorted(set(candidates))
    out = []
    for a, b in zip(axis, axis[1:]):
        inside = [c for c in cand if a < c < b]
        if inside:
            mid = 0.5 * (math.log(max(a, 1)) + math.log(max(b, 1)))
            out.append(min(inside, key=lambda c: abs(math.log(c) - mid)))
    return out


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


def suffix_min(curve: Mapping[int, float]) -> dict[int, float]:
    """A 1-D scan ({width: ms}) lowered to the smallest value at any larger width (see
    :func:`monotone_envelope`)."""
    out: dict[int, float] = {}
    best = float("inf")
    for k in sorted(curve, reverse=True):
        best = min(best, curve[k])
        out[k] = best
    return dict(sorted(out.items()))


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
