"""``hwprune prune``: search widths, cut channels, write plan + checkpoint + report.json."""
from __future__ import annotations

import os

from ..checkpoint import save_checkpoint
from ..importance import list_criteria
from ..jsonio import write_json
from ..prune import PruneConfig, prune
from ..strategies import list_strategies
from .common import add_grid_args, add_model_args, load_from_args


def register(sub) -> None:
    p = sub.add_parser("prune", help="prune a model (uniform ratio now; latency budgets with --table)",
                       description="Prune channels and write OUT/plan.json, OUT/pruned.pt (plan + weights) "
                                   "and OUT/report.json (FLOPs, params, widths).")
    add_model_args(p, default="tiny_resnet")
    add_grid_args(p)
    p.add_argument("--strategy", default="uniform", help=f"width search ({', '.join(list_strategies())})")
    p.add_argument("--ratio", type=float, help="fraction of channels to remove per group (uniform), e.g. 0.5")
    p.add_argument("--criterion", default="l1", help=f"which channels to keep ({', '.join(list_criteria())})")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same plan)")
    p.add_argument("--out", default="out/prune", help="output folder (default out/prune)")
    p.set_defaults(func=run)


def run(args) -> int:
    config = PruneConfig(strategy=args.strategy, ratio=args.ratio, criterion=args.criterion, align=args.align,
                         min_width=args.min_width, batch=args.batch, input_size=args.input_size,
                         ignore=tuple(args.ignore), seed=args.seed)
    loaded = load_from_args(args)
    result = prune(loaded, config)
    os.makedirs(args.out, exist_ok=True)
    result.plan.save(os.path.join(args.out, "plan.json"))
    save_checkpoint(os.path.join(args.out, "pruned.pt"), result.model, result.plan)
    write_json(os.path.join(args.out, "report.json"), result.report)
    r = result.report
    print(f"pruned {loaded.model_id['spec']} with {args.strategy}: "
          f"FLOPs {r['before']['flops'] / 1e9:.3f} -> {r['after']['flops'] / 1e9:.3f} G ({r['flops_reduction']:.2f}x), "
          f"params {r['before']['params'] / 1e6:.2f} -> {r['after']['params'] / 1e6:.2f} M")
    print(f"wrote {args.out}/plan.json, {args.out}/pruned.pt, {args.out}/report.json")
    return 0
