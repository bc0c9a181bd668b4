"""``hwprune family``: copycat families of a pruned plan at several budgets (issue #18 item 2).

Parses arguments and calls :func:`hwprune.family.build_family`; the method and the file layout
are described there (Crowley et al., "Pruning neural networks: is it time to nip it in the bud?")."""
from __future__ import annotations

from .common import add_executor_args
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
    g = p.add_argument_group(
        "training the members from scratch (optional; each member is one work item of --executor)",
        "With --data and --epochs (or --scratch-b), every member is re-initialised and trained with the same "
        "recipe, as `hwprune train --init scratch` would: OUT/trained/<member>/trained.pt + report.json, and each "
        "member's top-1 in OUT/family.json. --executor ray trains one member per Ray task (the data spec is "
        "resolved on the worker). Example: hwprune family --plan out/netadapt/plan.json --budgets 0.6x,0.9x "
        "--data synthetic --epochs 1 --out out/family_trained")
    g.add_argument("--data", help="training data: synthetic | imagefolder:PATH | cifar10:PATH | module:function")
    e = g.add_mutually_exclusive_group()
    e.add_argument("--epochs", type=int, help="train each member for E epochs")
    e.add_argument("--scratch-b", action="store_true",
                   help="Scratch-B: each member gets the unpruned model's computation budget in epochs")
    g.add_argument("--base-epochs", type=int, help="with --scratch-b: epochs the unpruned model was trained for")
    g.add_argument("--lr", type=float, help="peak learning rate (default: hwprune train's for --init scratch)")
    g.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    g.add_argument("--n-train", type=int, default=5000, help="synthetic data: training images (default 5000)")
    g.add_argument("--n-val", type=int, default=1000, help="synthetic data: validation images (default 1000)")
    add_executor_args(g, "the members train (local: one after another; ray: one member a task)")
    p.set_defaults(func=run)


def _training(args):
    """The members' recipe from the flags (None: build only); a half-given one is refused before
    anything is built."""
    from ..errors import ConfigError
    from ..family_train import FamilyTraining
    from ..recover import RecoverConfig

    asked = args.data or args.epochs is not None or args.scratch_b
    if not asked:
        if args.executor != "local" or args.ray_address:
            raise ConfigError("--executor/--ray-address choose where the members train: add --data and --epochs "
                              "(or --scratch-b)")
        return None
    if not args.data:
        raise ConfigError("training the members needs --data (synthetic, imagefolder:PATH, ...)")
    if args.no_checkpoints:
        raise ConfigError("--no-checkpoints writes no members to train: drop it, or drop --data/--epochs")
    recipe = RecoverConfig(epochs=args.epochs, init="scratch", scratch_b=args.scratch_b, base_epochs=args.base_epochs,
                           lr=args.lr, seed=args.seed)  # says what is missing (--epochs or --scratch-b) or out of range
    return FamilyTraining(data=args.data, recipe=recipe, batch_size=args.batch_size, n_train=args.n_train,
                          n_val=args.n_val)


def run(args) -> int:
    from ..executor import LocalExecutor, make_executor

    training = _training(args)
    if training is not None:
        training.make_data(32)  # an unreadable data spec fails before the family is built
    executor = (make_executor(args.executor, address=args.ray_address, worker_threads=args.worker_threads)
                if training is not None else LocalExecutor())  # a Ray address that does not answer: refused here
    try:
        return _build_and_train(args, training, executor)
    finally:
        executor.close()


def _build_and_train(args, training, executor) -> int:
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
    if training is None:
        return 0
    from ..family_train import train_family

    rows = train_family(args.out, training, executor)
    print(f"{'member':<24} {'top-1':>7} {'epochs':>6} {'s':>6}  trained from scratch ({args.executor})")
    for r in rows:
        top1 = "-" if r["top1"] is None else f"{100 * r['top1']:.1f}%"
        print(f"{r['member']:<24} {top1:>7} {r['epochs']:>6} {r['seconds']:>6.0f}  {r['trained']}")
    return 0
