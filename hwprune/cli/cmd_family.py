"""``hwprune family``: copycat families of a pruned plan at several budgets (issue #18 item 2).

Parses arguments and calls :func:`hwprune.family.build_family`; the method and the file layout
are described there (Crowley et al., "Pruning neural networks: is it time to nip it in the bud?")."""
from __future__ import annotations

from .main import SUMMARIES


def register(sub) -> None:
    p = sub.add_parser(
        "family", help=SUMMARIES["family"],
        description="Copycat family (Crowley et al. 2018): take the fraction of channels each group of a pruned plan "
                    "keeps, scale all of them by one multiplier and snap to the device grid, choosing per budget the "
                    "largest multiplier the latency table (or FLOPs / params) predicts within it. Writes one plan and "
                    "one random-init checkpoint per member (DIR/<family>-<budget>.json/.pt, to be trained from "
                    "scratch), DIR/family.json and DIR/family.png. --baseline uniform adds the linearly rescaled "
                    "unpruned network at the same budgets, the paper's comparison.")
    p.add_argument("--plan", required=True, help="plan.json of a pruned network (written by `hwprune prune`)")
    p.add_argument("--budgets", required=True,
                   help="comma-separated budgets, e.g. 0.3x,0.5x,0.7x (also 12ms, 2.0speedup, 50%%flops, 30%%params)")
    p.add_argument("--table", help="latency table JSON the plan's model was profiled in (default: the table the "
                                    "plan was searched on, from its provenance; needed for latency budgets)")
    p.add_argument("--baseline", choices=["none", "uniform"], default="none",
                   help="also build the uniform family: every width scaled alike (default none)")
    p.add_argument("--name", default="copycat", help="name of the copycat family in file names (default copycat)")
    p.add_argument("--align", type=int, default=None,
                   help="width grid (default: the plan's, else the table's, else 8)")
    p.add_argument("--min-width", type=int, default=None,
                   help="smallest width per group (default: the plan's, else the table's, else 8)")
    p.add_argument("--no-checkpoints", action="store_true", help="write plans only, no random-init .pt files")
    p.add_argument("--no-plot", action="store_true", help="do not draw family.png")
    p.add_argument("--seed", type=int, default=0, help="seed of the random-init weights (default 0)")
    p.add_argument("--out", required=True, help="folder to write (replaced as a whole when the run succeeds)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..family import FamilyConfig, build_family

    result = build_family(FamilyConfig(
        plan=args.plan, budgets=args.budgets, table=args.table, baseline=args.baseline, name=args.name,
        align=args.align, min_width=args.min_width, out=args.out, checkpoints=not args.no_checkpoints,
        plot=not args.no_plot, seed=args.seed))
    print(f"{'member':<24} {'multiplier':>10} {'target':>12} {'pred ms':>9} {'ms x':>6} {'MFLOPs':>9} {'params':>9}")
    for m in result.summary["members"]:
        ms = "-" if m["predicted_ms"] is None else f"{m['predicted_ms']:.4f}"
        mx = "-" if m["predicted_x"] is None else f"{m['predicted_x']:.3f}"
        print(f"{m['name']:<24} {m['multiplier']:>10.3f} {m['target']:>12.4g} {ms:>9} {mx:>6} "
              f"{m['flops'] / 1e6:>9.2f} {m['params']:>9.0f}"
              + (f"  (same widths as {m['same_as']})" if m["same_as"] else ""))
    print(f"wrote {len(result.members)} members to {args.out} (plans, checkpoints to train from scratch, family.json)")
    return 0
