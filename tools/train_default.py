"""Train the default model of ``hwprune run`` and write hwprune/assets/tiny_resnet_synthetic.pt.

    python tools/train_default.py [--epochs 3] [--seed 0]

Prints the top-1 accuracy on the synthetic validation split and the training time.
"""
from __future__ import annotations

import argparse
import io
import os
import time

import torch

from hwprune.jsonio import atomic_write_bytes
from hwprune.train import DEFAULT_ASSET, train_default_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_ASSET)
    a = p.parse_args()
    t0 = time.perf_counter()
    model, acc = train_default_model(epochs=a.epochs, seed=a.seed, progress=True)
    secs = time.perf_counter() - t0
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    atomic_write_bytes(a.out, buf.getvalue())
    print(f"tiny_resnet, {a.epochs} epochs on synthetic (seed {a.seed}): top-1 {100 * acc:.1f}% on val, "
          f"{secs:.0f} s; wrote {a.out} ({os.path.getsize(a.out) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
