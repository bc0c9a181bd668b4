"""``hwprune baseline``: unstructured accuracy baselines (one-shot magnitude, lottery ticket) that
keep dense shapes, with their latency measured next to the unpruned model's.

A verb of its own rather than flags of ``prune``: ``prune`` searches widths to meet a budget and
checks the budget by measurement; these meet no latency budget at all (the zeros are stored, not
skipped), so a ``prune --unstructured`` that prints "budget" lines would mislead."""
from __future__ import annotations

import argparse
import os
import sys

from .common import load_from_args
from .main import SUMMARIES

EPILOG = """\
examples:
  hwprune baseline --method unstructured --sparsity 0.5 --data synthetic --n-train 512 --epochs 1 --out out/unstructured
  hwprune baseline --method lottery --sparsity 0.75 --rounds 2 --epochs 1 --rewind-steps 20 --data synthetic --n-train 512 --out out/lottery
Both write OUT/pruned.pt (dense weights with zeros; export and bench take it) and OUT/report.json
(sparsity achieved, accuracy, and the latency measured side by side with the unpruned model).
"""


def register(sub) -> None:
    p = sub.add_parser("baseline", help=SUMMARIES["baseline"],
                       description="Zero single weights by magnitude and train with the masks fixed: "
                                   "'unstructured' prunes the trained model once (Han et al. 2015) and fine-tunes; "
                                   "'lottery' retrains the architecture from a fresh initialisation, pruning "
                                   "1-(1-S)^(1/R) of the surviving weights per round and rewinding them to their "
                                   "values after --rewind-steps steps (Frankle & Carbin 2019; Frankle et al. 2019). "
                                   "Every tensor keeps its shape, so the measured latency is the unpruned model's: "
                                   "these are accuracy references for `hwprune prune`, not a way to a budget.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", default="tiny_resnet_synthetic",
                   help="model spec or hwprune checkpoint (default tiny_resnet_synthetic)")
    g.add_argument("--weights", help="local state_dict file to load into the model (no downloads)")
    g.add_argument("--num-classes", type=int, help="classifier outputs, passed to the model factory")
    g.add_argument("--input-size", type=int, help="square input resolution (default: the model's own)")
    g = p.add_argument_group("method")
    g.add_argument("--method", required=True, choices=("unstructured", "lottery"))
    g.add_argument("--sparsity", type=float, required=True, help="fraction of Conv/Linear weights to zero, e.g. 0.5")
    g.add_argument("--rounds", type=int, default=3, help="lottery: pruning rounds (default 3)")
    g.add_argument("--rewind-steps", type=int, default=100,
                   help="lottery: rewind survivors to their values after this many training steps (default 100; "
                        "0 rewinds to the initialisation, the original LTH)")
    g.add_argument("--epochs", type=int, default=None,
                   help="unstructured: fine-tune epochs (default 0); lottery: epochs per round (default 3)")
    g.add_argument("--lr", type=float, default=None, help="peak lr (default 0.01 unstructured, 0.1 lottery)")
    g.add_argument("--distill", action="store_true", help="unstructured: distil from the unpruned model")
    g.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("data and measurement")
    g.add_argument("--data", help="synthetic | imagefolder:PATH | cifar10:PATH | module:function")
    g.add_argument("--data-batch", type=int, default=64)
    g.add_argument("--n-train", type=int, default=5000)
    g.add_argument("--n-val", type=int, default=1000)
    g.add_argument("--backend", default="ort-cpu", help="measure latency on this backend ('none' to skip)")
    g.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="out/baseline", help="output folder (default out/baseline)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import copy

    from ..errors import ConfigError
    from ..lottery import _check_sparsity, lottery_ticket, magnitude_prune, measure_dense_latency
    from ..outdir import check_output_dir, staged_output_dir

    _check_sparsity(args.sparsity)
    if args.method == "lottery" and not args.data:
        raise ConfigError("--method lottery trains the network every round: pass --data synthetic (or "
                          "imagefolder:PATH ...)")
    epochs = args.epochs if args.epochs is not None else (3 if args.method == "lottery" else 0)
    if epochs and not args.data:
        raise ConfigError(f"--epochs {epochs} trains the masked model: pass --data synthetic (or imagefolder:PATH ...)")
    if args.method == "lottery" and (args.rounds < 1 or epochs < 1):
        raise ConfigError(f"--rounds {args.rounds} and --epochs {epochs} must be >= 1 for the lottery ticket")
    check_output_dir(args.out)
    loaded = load_from_args(args)
    if loaded.plan is not None:
        raise ConfigError(f"{args.model} is a channel-pruned checkpoint; baselines start from the unpruned model")
    size = args.input_size or loaded.input_size
    data = evaluator = None
    if args.data:
        from ..data import make_data
        from ..evaluate import make_evaluator

        data = make_data(args.data, input_size=size, batch_size=args.data_batch, seed=args.seed,
                         n_train=args.n_train, n_val=args.n_val)
        evaluator = make_evaluator("accuracy", data)
    progress = not args.quiet
    if args.method == "unstructured":
        model, hist = magnitude_prune(loaded.model, args.sparsity, data, epochs=epochs, lr=args.lr or 0.01,
                                      seed=args.seed, teacher=loaded.model if args.distill else None,
                                      progress=progress, evaluator=evaluator)
    else:
        model, hist = lottery_ticket(loaded.model, data, args.sparsity, args.rounds, epochs, args.rewind_steps,
                                     lr=args.lr or 0.1, seed=args.seed, progress=progress, evaluator=evaluator)
    report = {"model": loaded.model_id.get("spec"), **hist}
    if evaluator is not None:
        report["accuracy"] = {"unpruned": float(evaluator(copy.deepcopy(loaded.model))), "after": float(evaluator(model))}
    if args.backend not in ("none", ""):
        report["latency"] = measure_dense_latency(loaded.model, model, size, args.backend, args.threads)
    from ..checkpoint import save_checkpoint
    from ..jsonio import write_json
    from ..plan import PruningPlan

    plan = PruningPlan(model_id=loaded.model_id, input_shape=[1, 3, size, size], kept={},
                       provenance={"note": f"{args.method} baseline: every channel kept, {100 * args.sparsity:.0f}% "
                                           "of the Conv/Linear weights zero", "written_by": "hwprune baseline"})
    with staged_output_dir(args.out) as work:
        save_checkpoint(os.path.join(work, "pruned.pt"), model, plan, meta={"baseline": args.method})
        write_json(os.path.join(work, "report.json"), report)
    a = report["achieved"]
    print(f"{args.method}: {a['zeros']} of {a['weights']} Conv/Linear weights zero ({100 * a['sparsity']:.1f}%)")
    if "accuracy" in report:
        print(f"accuracy {report['accuracy']['unpruned']:.4f} (unpruned) -> {report['accuracy']['after']:.4f}")
    if "latency" in report:
        print(f"latency: {report['latency']['note']}")
    print(f"wrote {os.path.join(args.out, 'pruned.pt')}, {os.path.join(args.out, 'report.json')}", file=sys.stderr)
    return 0
