"""``hwprune train``: recover a pruned model's accuracy (fine-tune, distil, or retrain from scratch)."""
from __future__ import annotations

import argparse
import os
import sys

from ..defaults import DEFAULT_LR, INITS, SCHEDULES
from .common import load_from_args
from .main import SUMMARIES

EPILOG = """\
examples:
  hwprune train --model out/prune/pruned.pt --data synthetic --epochs 5 --out out/train
  hwprune train --model out/prune/pruned.pt --data synthetic --epochs 5 --distill-from tiny_resnet_synthetic
  hwprune train --model out/prune/pruned.pt --data synthetic --scratch-b --out out/scratch
  hwprune train ... --resume        # after a kill: continue from the last finished epoch
"""


def register(sub) -> None:
    p = sub.add_parser("train", help=SUMMARIES["train"],
                       description="Train a (pruned) model: fine-tune its weights (--init inherit) or re-initialise "
                                   "them and train the architecture from scratch (--init scratch; Liu et al., "
                                   "Rethinking the Value of Network Pruning, ICLR 2019), optionally distilling from "
                                   "a teacher (Hinton KD). A state file after every epoch (in OUT.partial/) lets "
                                   "--resume continue a killed run to the same result; OUT/trained.pt (the "
                                   "pruned.pt format, plan kept: export and bench take it) and OUT/report.json "
                                   "appear when it finishes. A checkpoint with 2:4 masks (hwprune prune "
                                   "--sparsity 2:4) trains with them fixed (NVIDIA ASP: masked gradients and "
                                   "weights zeroed at every step).",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--model", required=True,
                   help="an hwprune checkpoint (.pt, e.g. OUT/pruned.pt of hwprune prune) or a model spec "
                        "(tiny_resnet_synthetic, a torchvision name, 'pkg.module:factory', 'file.py:factory')")
    g.add_argument("--weights", help="local state_dict file to load into the model (no downloads)")
    g.add_argument("--num-classes", type=int, help="classifier outputs, passed to the model factory")
    g.add_argument("--input-size", type=int, help="square input resolution (default: the model's own)")
    g = p.add_argument_group("data")
    g.add_argument("--data", help="training data (required): synthetic | imagefolder:PATH | cifar10:PATH | "
                                  "module:function")
    g.add_argument("--batch-size", type=int, default=64, help="batch size (default 64)")
    g.add_argument("--n-train", type=int, default=5000, help="synthetic data: training images (default 5000)")
    g.add_argument("--n-val", type=int, default=1000, help="synthetic data: validation images (default 1000)")
    g = p.add_argument_group("recipe")
    g.add_argument("--init", choices=INITS, default=None,
                   help="inherit: fine-tune the weights as they are (default); scratch: re-initialise every "
                        "parameter and BN statistic first (default with --scratch-b)")
    e = g.add_mutually_exclusive_group()
    e.add_argument("--epochs", type=int, help="train for E epochs")
    e.add_argument("--scratch-b", action="store_true",
                   help="Scratch-B budget: round(base epochs x FLOPs(unpruned) / FLOPs(pruned)) epochs")
    g.add_argument("--base-epochs", type=int,
                   help="with --scratch-b: epochs the unpruned model was trained for (default: what the checkpoint "
                        "records, or the shipped model's recipe)")
    g.add_argument("--lr", type=float, help=f"peak learning rate (default {DEFAULT_LR['inherit']} for inherit, "
                                            f"{DEFAULT_LR['scratch']} for scratch)")
    g.add_argument("--schedule", choices=SCHEDULES, default="one-cycle",
                   help="one-cycle (warm-up then cosine; default) or cosine (per-step cosine decay from --lr)")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay (default 5e-4)")
    g.add_argument("--seed", type=int, default=0, help="random seed (same seed, same result; also after --resume)")
    g = p.add_argument_group("distillation")
    g.add_argument("--distill-from", metavar="MODEL|CKPT",
                   help="teacher: a model spec or checkpoint with the same classes (e.g. the unpruned model)")
    g.add_argument("--kd-alpha", type=float, default=0.5, help="weight of the KD term (default 0.5)")
    g.add_argument("--kd-temperature", type=float, default=4.0, help="softmax temperature of KD (default 4)")
    g = p.add_argument_group("output")
    g.add_argument("--out", default="out/train", help="output folder (default out/train)")
    g.add_argument("--resume", action="store_true",
                   help="continue the interrupted run of this --out from its last finished epoch")
    g.add_argument("--quiet", action="store_true", help="no progress bar or epoch lines")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..recover import RecoverConfig, recover

    from ..data import make_data
    from ..models import load_model
    from ..train_state import partial_dir

    init = args.init or ("scratch" if args.scratch_b else "inherit")
    config = RecoverConfig(epochs=args.epochs, init=init, scratch_b=args.scratch_b, base_epochs=args.base_epochs,
                           lr=args.lr, schedule=args.schedule, weight_decay=args.weight_decay,
                           kd_alpha=args.kd_alpha, kd_temperature=args.kd_temperature, input_size=args.input_size,
                           seed=args.seed, out=args.out, resume=args.resume, progress=not args.quiet)
    loaded = load_from_args(args)
    size = args.input_size or loaded.input_size
    data = make_data(args.data, input_size=size, batch_size=args.batch_size, seed=args.seed, n_train=args.n_train,
                     n_val=args.n_val) if args.data else None  # recover() says which flag is missing
    teacher = load_model(args.distill_from) if args.distill_from else None
    try:
        result = recover(loaded, data, config, teacher=teacher,
                         teacher_name=f"--distill-from {args.distill_from}" if args.distill_from else "the teacher")
    except KeyboardInterrupt:
        state = os.path.join(partial_dir(args.out), "state.pt")
        if os.path.isfile(state):
            print(f"hwprune train: the last finished epoch is saved in {state}; run the same command with --resume "
                  "to continue", file=sys.stderr)
        raise
    r = result.report
    rule = r.epochs_rule
    how = (f"Scratch-B: {rule['base_epochs']} x {rule['flops_ratio']:.2f} FLOPs ratio" if rule["rule"] == "scratch-b"
           else "given")
    acc = r.accuracy
    if acc["before"] is not None and acc["after"] is not None:
        print(f"top-1 {100 * acc['before']:.1f}% -> {100 * acc['after']:.1f}% "
              f"({init}, {r.epochs} epochs ({how}){', distilled' if r.kd else ''}, {r.seconds:.0f} s)")
    if r.resumed_from_epoch is not None:
        print(f"resumed after epoch {r.resumed_from_epoch}")
    if r.sparsity:
        sp = r.sparsity
        print(f"{sp['pattern']} sparsity kept fixed: {sp['layers']} layers, "
              f"{100 * sp['fraction_masked_of_all_weights']:.1f}% "
              f"of all weights masked ({'pattern holds' if sp['holds'] else 'PATTERN BROKEN'})")
    print(f"wrote {os.path.join(args.out, 'trained.pt')}, {os.path.join(args.out, 'report.json')}")
    return 0
