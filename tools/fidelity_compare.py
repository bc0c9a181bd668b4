"""Two latency tables judged on the same measurements: which predicts better, beyond the noise?

    python tools/fidelity_compare.py A/fidelity-spin.json A/table.json B/fidelity-spin.json B/table.json

Takes two `tools/fidelity.py` reports over the same variants (same seed, same grid: the widths
must match) and the tables they validated. Each variant's measured ratio is the mean of the two
runs' readings, so both tables are scored against the same, less noisy, number; per model it
prints each table's median |error|, share within ±5% / ±10% and worst, and how far the two runs'
own measurements of the same variant differ (the noise floor the comparison has to clear).
Used for the SE-family comparison of 2026-12-01 in docs/latency.md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report_a")
    ap.add_argument("table_a")
    ap.add_argument("report_b")
    ap.add_argument("table_b")
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    from hwprune.graph import ChannelGraph
    from hwprune.latency import LatencyTable
    from hwprune.models import load_model

    runs = []
    for report, table in ((args.report_a, args.table_a), (args.report_b, args.table_b)):
        with open(report) as f:
            rows = {r["model"]: r for r in json.load(f)["results"]}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runs.append((rows, LatencyTable.load(table, check_device=False)))
    (ra, ta), (rb, tb) = runs
    for spec in [m for m in ra if m in rb]:
        va = {v["index"]: v for v in ra[spec]["variants"]}
        vb = {v["index"]: v for v in rb[spec]["variants"]}
        if set(va) != set(vb) or any(va[i]["widths"] != vb[i]["widths"] for i in va):
            print(f"{spec}: the two reports measured different variants; skipped")
            continue
        size = int(ra[spec].get("input_size", 224))
        g = ChannelGraph(load_model(spec).model.eval(), torch.randn(1, 3, size, size))
        ca, cb = ta.cost_model(g), tb.cost_model(g)
        err = []
        for i, v in va.items():
            m = (v["measured_ratio"] + vb[i]["measured_ratio"]) / 2
            err.append((ca.predict(v["widths"]) / ca.predict({}) / m - 1, cb.predict(v["widths"]) / cb.predict({}) / m - 1,
                        v["measured_ratio"] / vb[i]["measured_ratio"] - 1))
        a = np.abs(np.array(err))
        for j, name in ((0, "A"), (1, "B")):
            print(f"{spec:28s} table {name}: median {100 * np.median(a[:, j]):.1f}%  within 5% {100 * np.mean(a[:, j] <= .05):.0f}%  "
                  f"within 10% {100 * np.mean(a[:, j] <= .10):.0f}%  worst {100 * a[:, j].max():.1f}%")
        print(f"{spec:28s} the runs' own readings differ: median {100 * np.median(a[:, 2]):.1f}%, worst {100 * a[:, 2].max():.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
