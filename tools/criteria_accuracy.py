"""Accuracy after a 50% uniform prune of the shipped tiny_resnet, per criterion, with no fine-tuning:
plain evaluation vs adaptive-BN recalibration (EagleEye) vs least-squares reconstruction.

    python tools/criteria_accuracy.py            # about 1-2 minutes on 2 quiet cores

Reproduces the "Accuracy after pruning" figures in README.md (synthetic validation split, seed 0).
"""
from __future__ import annotations

import time

from hwprune.data import make_data
from hwprune.evaluate import make_evaluator
from hwprune.models import load_model
from hwprune.prune import PruneConfig, prune
from hwprune.train import load_default_model

CRITERIA = ["l1", "fpgm", "bn-gamma", "taylor", "fisher", "hrank"]


def main() -> None:
    data = make_data("synthetic")
    loaded = load_model("tiny_resnet")
    loaded.model.load_state_dict(load_default_model().state_dict())
    acc, abn = make_evaluator("accuracy", data), make_evaluator("adaptive-bn", data)
    print(f"unpruned: plain {acc(loaded.model):.3f}  adaptive-bn {abn(loaded.model):.3f}")
    print("| criterion | plain | adaptive-BN | reconstruct |\n|---|---|---|---|")
    for crit in CRITERIA:
        t = time.time()
        pruned = prune(loaded, PruneConfig(strategy="uniform", ratio=0.5, criterion=crit, progress=False),
                       calib=data.calib).model
        rec = make_evaluator("reconstruct", data, original=loaded.model)
        print(f"| {crit} | {acc(pruned):.3f} | {abn(pruned):.3f} | {rec(pruned):.3f} |  ({time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
