"""What the per-conv-group grid gives up (docs/latency.md, "The cause: grouped convs cut off the
layout"): regnet_y_400mf with its grouped convs cut to half their channels per conv group (the
widths the old grid allowed), timed side by side with the unpruned model on ONNX Runtime CPU.

    python tools/grouped_grid.py                       # fp32 and int8, 2 threads
    python tools/grouped_grid.py --precision fp32

Rows: the grouped convs' outputs cut; their inputs and outputs cut (with the 1x1 convs around
them); the narrowest plan on the current grid; the narrowest on the old grid (each conv group only
needing lcm(align, conv groups)). Each is :func:`hwprune.latency.measure.measure_against_baseline`
(the estimator every budget check uses: warm-up, repeats, p10, fastest half of >= 4 passes, each
chunk scaled to the unpruned model timed beside it), printed as a ratio to the unpruned model.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="regnet_y_400mf")
    ap.add_argument("--align", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", nargs="+", default=["fp32", "int8"], choices=["fp32", "int8"])
    args = ap.parse_args(argv)

    import torch

    from hwprune.graph import ChannelGraph
    from hwprune.latency.measure import build_variant, measure_against_baseline
    from hwprune.models import load_model
    from hwprune_deploy.runner import timing_ms

    loaded = load_model(args.model)
    x = torch.randn(1, 3, loaded.input_size, loaded.input_size)
    graph = ChannelGraph(loaded.model, x)
    from hwprune.tp_compat import is_grouped_conv

    convs = {n for n, m in loaded.model.named_modules() if is_grouped_conv(m)}
    # groups whose conv groups must now stay on the grid, and whose half width the old grid allowed
    # (a multiple of lcm(align, conv groups)): regnet_y_400mf's block1 and block3 on an 8 grid
    grouped = [g for g in graph.prunable if g._conv_groups_on_grid(args.align)
               and (g.width // 2) % math.lcm(args.align, g.conv_groups) == 0]
    if not grouped:
        print(f"{args.model}: no grouped conv lost a width to the per-conv-group grid at align {args.align}")
        return 0

    def half(groups):  # each conv group cut to half its channels
        return {g.name: g.width // 2 for g in groups}

    outs = [g for g in grouped if g.name in convs]  # the grouped convs' own outputs (the group is named by its conv)

    narrowest = {g.name: g.candidate_widths(args.align)[0] for g in graph.prunable}
    for g in graph.groups:  # the old rule: lcm(align, conv groups) only
        g.conv_groups = 1
    narrowest_old = {g.name: g.candidate_widths(args.align)[0] for g in graph.prunable}
    plans = {"outputs cut": half(outs), "inputs + outputs cut": half(grouped),
             "narrowest, this grid": narrowest, "narrowest, old grid": narrowest_old}
    models = {"baseline": loaded.model, **{k: build_variant(loaded.model, x, w) for k, w in plans.items()}}
    print(f"{args.model}: {len(grouped)} channel groups of grouped convs lost their half width "
          f"({len(outs)} of them the convs' outputs)")
    for prec in args.precision:
        t = measure_against_baseline("ort-cpu", models, x, threads=args.threads, precision=prec)
        base = timing_ms(t["baseline"])
        print(f"{prec}: unpruned {base:.3f} ms; " + "; ".join(f"{k} {timing_ms(t[k]) / base:.3f}x" for k in plans),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
