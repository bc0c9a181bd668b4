"""Where a model's time goes, by unit kind, in two latency tables side by side (e.g. fp32 and int8).

Sums each table's full-width unit latencies (before calibration) per unit kind and kernel --
conv3x3, dwconv3x3, conv1x1, linear, se, ... -- and prints each kind's share of the units' time
in both tables and the ratio. Used for issue #19's question of which layers gain little from int8:

    python tools/unit_breakdown.py --model mobilenet_v2 --tables FP32.json INT8.json

Tables profiled at different times measure the machine in different states: compare shares
rather than absolute sums unless they were profiled back to back.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hwprune.graph import ChannelGraph  # noqa: E402
from hwprune.latency import LatencyTable  # noqa: E402
from hwprune.models import load_model  # noqa: E402


def breakdown(graph: ChannelGraph, table: str) -> dict[str, tuple[float, int]]:
    """{unit kind: (ms at full width, number of units)} of the model behind ``graph`` in ``table``."""
    cost = LatencyTable.load(table, check_device=False).cost_model(graph)  # shares, not this machine's ms
    costs = cost.unit_costs({})
    out: dict = collections.defaultdict(lambda: [0.0, 0])
    for use, fam in cost.units:
        spec = fam.spec
        kind = spec.kind + ("" if spec.kind in ("linear", "attn", "se") else "%dx%d" % tuple(spec.kernel))
        out[kind][0] += costs[use.layer]
        out[kind][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--tables", nargs=2, required=True, metavar=("A", "B"), help="two tables holding the model")
    p.add_argument("--size", type=int, default=224)
    args = p.parse_args(argv)
    graph = ChannelGraph(load_model(args.model).model, torch.randn(1, 3, args.size, args.size))  # traced once
    a, b = (breakdown(graph, t) for t in args.tables)
    ta, tb = sum(v[0] for v in a.values()), sum(v[0] for v in b.values())
    print(f"{args.model}: units at full width {ta:.2f} ms ({args.tables[0]}), {tb:.2f} ms ({args.tables[1]})")
    print("| unit kind | units | A ms | A share | B ms | B share | A/B |")
    print("|---|---|---|---|---|---|---|")
    for k in sorted(a, key=lambda k: -a[k][0]):
        (ma, n), mb = a[k], b.get(k, (0.0, 0))[0]
        print(f"| {k} | {n} | {ma:.2f} | {100 * ma / ta:.0f}% | {mb:.2f} | {100 * mb / tb:.0f}% | "
              f"{ma / mb if mb else float('nan'):.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
