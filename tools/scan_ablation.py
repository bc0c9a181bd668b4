"""Would bisected axis scans do? An offline check on a profiled table, no measurement.

    python tools/scan_ablation.py                                   # the committed CPU table, tol 1%, 3%, 5%
    python tools/scan_ablation.py --table T.json --tol 0.02 --no-noise-gate --variants 500 --json out.json

The profiler times every candidate width along a family's two far edges (the *axis scans*,
:func:`hwprune.latency.profile._measure_family` step 2); they are about 58% of the points of the
committed resnet18/resnet50/mobilenet_v2 table and most of a family's profiling time. A cheaper
scan would bisect: start from the grid widths on the edge, time the middle candidate of each
interval, and split the interval further only where that midpoint misses the straight line
between its neighbours by more than ``--tol`` (and, unless ``--no-noise-gate``, by more than its
own reading's noise, as the profiler's refinement asks:
:func:`hwprune.latency.sampling.probe_disagrees`).

This tool replays that bisection on a table that has the full scans, using the table's own
readings as what the bisection would have measured, keeps only the scan points it would have
timed, and compares the two tables' predictions: per model in the table, the predicted latency
ratio (variant / unpruned) of ``--variants`` random pruned variants drawn as ``hwprune validate``
draws them (seed 0, the table's alignment). Each difference is an error the cheaper scan adds on
top of the table's own; the fidelity bar is +-5% of the measured ratio. Where the figures in
docs/latency.md ("Why every width is scanned") come from.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from hwprune.graph import ChannelGraph  # noqa: E402
from hwprune.latency.measure import random_widths  # noqa: E402
from hwprune.latency.sampling import probe_disagrees  # noqa: E402
from hwprune.latency.table import Family, LatencyTable, _pk  # noqa: E402
from hwprune.models import load_model  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TABLE = os.path.join(ROOT, "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")


def bisected(curve: dict[int, float], seeds, iqr_of, repeats: float, tol: float) -> set[int]:
    """The widths of ``curve`` ({width: ms}, every candidate) a bisection starting from ``seeds``
    (and both ends) would time, reading each probe off ``curve``."""
    ws = sorted(curve)
    idx = {w: i for i, w in enumerate(ws)}
    keep = {w for w in seeds if w in curve} | {ws[0], ws[-1]}
    todo = list(zip(sorted(keep), sorted(keep)[1:]))
    while todo:
        a, b = todo.pop()
        if idx[b] - idx[a] < 2:
            continue
        m = ws[(idx[a] + idx[b]) // 2]
        keep.add(m)
        line = curve[a] + (curve[b] - curve[a]) * (m - a) / (b - a)
        if probe_disagrees(line, curve[m], iqr_of(m), repeats, tol) > 0:
            todo += [(a, m), (m, b)]
    return keep


def thin_family(fam: Family, repeats: float, tol: float) -> Family:
    """``fam`` with only the scan points a bisection keeps (grid points all kept)."""
    if fam.spec.tied or len(fam.cins) < 2 or len(fam.couts) < 2:
        return fam
    cin_curve, cout_curve = fam.curves()
    far_in, far_out = fam.cins[-1], fam.couts[-1]
    keep_in = bisected(cin_curve, fam.cins, lambda c: fam.iqr.get(_pk(c, far_out), 0.0), repeats, tol)
    keep_out = bisected(cout_curve, fam.couts, lambda c: fam.iqr.get(_pk(far_in, c), 0.0), repeats, tol)
    points = {}
    for k, v in fam.points.items():
        a, b = (int(t) for t in k.split(","))
        if (a in fam.cins and b in fam.couts) or (b == far_out and a in keep_in) or (a == far_in and b in keep_out):
            points[k] = v
    return Family(fam.spec, list(fam.cins), list(fam.couts), points, {k: fam.iqr.get(k, 0.0) for k in points},
                  {k: fam.measured_at.get(k, 0.0) for k in points})


def ablate(table: LatencyTable, tol: float, noise_gate: bool, variants: int, graphs: dict) -> dict:
    repeats = float(table.protocol.get("unit", {}).get("repeats", 12)) if noise_gate else float("inf")
    thin = copy.deepcopy(table)
    for key, fam in table.families.items():
        thin.families[key] = thin_family(fam, repeats, tol)
    n_full = sum(len(f.points) for f in table.families.values())
    n_thin = sum(len(f.points) for f in thin.families.values())
    align = int(table.protocol.get("align") or 8)
    out = {"tol": tol, "noise_gate": noise_gate, "points_full": n_full, "points_bisected": n_thin, "models": {}}
    for spec, graph in graphs.items():
        full_cm, thin_cm = table.cost_model(graph), thin.cost_model(graph)
        base_full, base_thin = full_cm.predict({}), thin_cm.predict({})
        rng = np.random.default_rng(0)
        diffs = []
        for _ in range(variants):
            w = random_widths(graph.groups, rng, align, 8)
            diffs.append((thin_cm.predict(w) / base_thin) / (full_cm.predict(w) / base_full) - 1)
        d = np.abs(np.array(diffs))
        out["models"][spec] = {"mean": float(d.mean()), "p95": float(np.percentile(d, 95)), "max": float(d.max()),
                               "within_1pct": float((d <= 0.01).mean())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", default=DEFAULT_TABLE, help="a table profiled with full axis scans (default: the committed CPU table)")
    ap.add_argument("--tol", type=float, nargs="+", default=[0.01, 0.03, 0.05],
                    help="bisection tolerances to try (fractions of the straight line's value)")
    ap.add_argument("--no-noise-gate", action="store_true",
                    help="split on --tol alone, not also on the probe's own noise (more points, no better)")
    ap.add_argument("--variants", type=int, default=300, help="random pruned variants per model (seed 0)")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a table from another machine: only its numbers are read
        table = LatencyTable.load(args.table)
    graphs = {}
    for rec in table.models.values():
        loaded = load_model(rec["spec"])
        x = torch.randn(*rec["input_shape"])
        graphs[rec["spec"]] = ChannelGraph(loaded.model, x)
    rows = []
    for tol in args.tol:
        r = ablate(table, tol, not args.no_noise_gate, args.variants, graphs)
        rows.append(r)
        saved = 1 - r["points_bisected"] / r["points_full"]
        print(f"tol {tol:.0%}{'' if r['noise_gate'] else ' (no noise gate)'}: points {r['points_full']} -> "
              f"{r['points_bisected']} ({saved:.0%} fewer)")
        for spec, m in r["models"].items():
            print(f"  {spec:14s} predicted ratio moved: mean {m['mean']:.2%}, p95 {m['p95']:.2%}, max {m['max']:.2%}, "
                  f"within 1%: {m['within_1pct']:.0%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"table": os.path.relpath(args.table, ROOT), "variants": args.variants, "runs": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
