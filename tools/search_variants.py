"""Why do the latency-aware searches recover worse than uniform on the accuracy benchmark?

One seed of ``tools/bench_accuracy.py``'s default task (tiny_resnet width 16 on ``mosaic``, the
unpruned model trained 12 epochs), cut to 0.5x of its measured latency by uniform and by search
variants, each recovered by ``ft`` and ``kd`` (3 epochs, the benchmark's recipes). Variants:

- ``halp``: as shipped (Taylor ``|sum w*dL/dw|`` per channel, EMA over 32 minibatches);
- ``halp-squared``: the same scores squared, HALP's / Molchanov et al. 2019's ``(sum w*dL/dw)^2``;
- ``halp-layernorm``: each group's scores divided by their mean (Molchanov et al. 2017 normalise
  per layer), so the knapsack compares channels within a layer rather than across layers;
- ``netadapt``: as shipped (proposals scored by adaptive-BN accuracy right after the cut);
- ``netadapt-ft30``: NetAdapt's short-term fine-tune, 30 SGD steps before each proposal is scored;
- ``halp-mp0.75`` (any ``STRATEGY-mpF``): the search may remove at most a fraction F of any group
  (``--max-prune F``, Torch-Pruning's ``max_pruning_ratio``), so no layer collapses to 8 channels.

The searches score candidates on a split apart from the reported one (``make_task(n_search=...)``).

    nice -n 5 python tools/search_variants.py --seed 0 --table bench_out/accuracy/table.json
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_accuracy as B  # noqa: E402
import hwprune.strategies.halp as H  # noqa: E402
from hwprune.evaluate import make_evaluator, top1  # noqa: E402
from hwprune.models import load_model  # noqa: E402

VARIANTS = ("uniform", "halp", "halp-squared", "halp-layernorm", "netadapt", "netadapt-ft30", "halp-mp0.75")


def scored(transform):
    """halp's Taylor EMA with ``transform`` applied to each group's scores."""
    def taylor(ctx, groups, batches, momentum):
        s = ORIGINAL(ctx, groups, batches, momentum)
        return s if s is None else {k: transform(v) for k, v in s.items()}
    return taylor


ORIGINAL = H.taylor_ema
TRANSFORMS = {"halp": None, "halp-squared": lambda v: v ** 2, "halp-layernorm": lambda v: v / (v.mean() + 1e-12)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--table", required=True, help="the benchmark's tiny_resnet table (bench_accuracy writes OUT/table.json)")
    ap.add_argument("--torch-threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    P = copy.deepcopy(B.PRESETS["default"])
    data = B.make_task("mosaic", P.n_train, P.n_val, n_search=P.n_search)
    torch.manual_seed(args.seed)
    loaded = load_model("hwprune.zoo:tiny_resnet", kwargs={"width": P.width})
    loaded.input_size = 32
    B.train_(loaded.model, data, P.base_epochs, 0.1, args.seed)
    base = loaded.model
    print(f"unpruned top-1 {100 * top1(base, data.val):.1f}%", flush=True)
    ev = make_evaluator("adaptive-bn", data.meta["search"])
    for name in args.variants.split(","):
        t0 = time.perf_counter()
        P2 = copy.deepcopy(P)
        H.taylor_ema = scored(TRANSFORMS[name]) if TRANSFORMS.get(name) else ORIGINAL
        if name == "netadapt-ft30":
            P2.options["netadapt_ft_steps"] = 30
        strategy = name if "-mp" in name else name.split("-")[0]  # B.cut reads a NAME-mpF cap itself
        res, _ = B.cut(loaded, strategy, 0.5, args.seed, args.table, data, ev, P2, 2)
        search_s = time.perf_counter() - t0
        lat = B.measure(base, res.model, 2)
        accs = {}
        for recipe in ("ft", "kd"):
            m = copy.deepcopy(res.model)
            B.train_(m, data, P.recover_epochs, 0.01, args.seed, teacher=base if recipe == "kd" else None)
            accs[recipe] = round(100 * top1(m, data.val), 1)
        print(f"{name}: ft {accs['ft']}% kd {accs['kd']}%  latency {lat['latency_ratio']:.3f}x  FLOPs "
              f"{B.flops_of(res.model) / B.flops_of(base):.3f}x  search {search_s:.0f} s  widths {dict(res.plan.widths)}",
              flush=True)
    H.taylor_ema = ORIGINAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
