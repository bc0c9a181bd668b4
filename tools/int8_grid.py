"""Does a width 8 short of a multiple of 16 save anything in int8? The evidence behind the int8
grid of 16 on ort-cpu (``OrtCpuBackend.default_grid``; docs/latency.md, "The width grid is the
device's").

    python tools/int8_grid.py --model mobilenet_v2
    python tools/int8_grid.py --model resnet18 --groups layer1.0.conv1 layer2.0.conv1 --precision fp32 int8

Per channel group (default: the model's first ``--first`` prunable groups in execution order, where
the feature maps are largest), the unpruned model and variants with only that group cut by 8, 16,
24 and 32 channels are timed side by side (:func:`hwprune.latency.measure.measure_against_baseline`:
the closed loop's estimator, the unpruned model as the reference in every chunk). Printed: each
variant's latency as a ratio of the unpruned model, then over all groups the mean latency a cut to
``16k + 8`` channels saved against ``16k + 16``, next to what a cut to ``16k`` saved against
``16k + 16`` (the whole 16-channel step). Where the first is near zero, widths off the 16 grid buy
nothing; MLAS's AVX2 int8 depthwise kernel runs channels 16 per vector step and the remainder one by
one, and its u8s8 GEMM packs 16 output channels per pass.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--groups", nargs="+", help="channel groups to cut (default: the first --first prunable ones)")
    ap.add_argument("--first", type=int, default=6, help="how many groups by default (default 6)")
    ap.add_argument("--cuts", default="8,16,24,32", help="channels cut from each group's full width (default 8,16,24,32)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", nargs="+", default=["int8"], choices=["fp32", "int8"])
    args = ap.parse_args(argv)

    import torch

    from hwprune.graph import ChannelGraph
    from hwprune.latency.measure import build_variant, measure_against_baseline
    from hwprune.models import load_model
    from hwprune_deploy.runner import timing_ms

    loaded = load_model(args.model)
    x = torch.randn(1, 3, loaded.input_size, loaded.input_size)
    graph = ChannelGraph(loaded.model, x)
    order = {n: i for i, (n, _) in enumerate(loaded.model.named_modules())}
    prunable = {g.name: g for g in graph.prunable}
    unknown = [n for n in args.groups or () if n not in prunable]
    if unknown:
        raise SystemExit(f"not prunable groups of {args.model}: {unknown}; these are: {sorted(prunable, key=order.get)}")
    cuts = [int(c) for c in args.cuts.split(",")]
    names = args.groups or [n for n in sorted(prunable, key=lambda n: order.get(n, 1 << 30))
                            if prunable[n].width % 16 == 0 and prunable[n].width >= 32][:args.first]
    for prec in args.precision:
        half_step, full_step = [], []  # us saved by 16k+8 and by 16k, each against 16k+16
        print(f"{args.model} {prec}, {args.threads} threads, batch 1, {loaded.input_size} px")
        for name in names:
            full = prunable[name].width
            widths = [full - c for c in cuts if full - c >= 8]
            models = {"baseline": loaded.model, **{str(w): build_variant(loaded.model, x, {name: w}) for w in widths}}
            t = measure_against_baseline("ort-cpu", models, x, threads=args.threads, precision=prec)
            ms = {full: timing_ms(t["baseline"]), **{w: timing_ms(t[str(w)]) for w in widths}}
            print(f"  {name} (full {full}, unpruned {ms[full]:.3f} ms): "
                  + ", ".join(f"{w} {ms[w] / ms[full]:.4f}x" for w in widths), flush=True)
            for top in ms:
                if top % 16 == 0 and top - 8 in ms and top - 16 in ms:
                    half_step.append(1000 * (ms[top] - ms[top - 8]))
                    full_step.append(1000 * (ms[top] - ms[top - 16]))
        if full_step:
            h, f = sum(half_step) / len(half_step), sum(full_step) / len(full_step)
            print(f"{prec}: over {len(full_step)} steps of 16 channels, cutting 8 saved {h:+.1f} us on average and "
                  f"cutting 16 saved {f:+.1f} us ({h / f:.0%} of the step)" if f else f"{prec}: no step saved anything")
    return 0


if __name__ == "__main__":
    sys.exit(main())
