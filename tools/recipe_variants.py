"""Which recovery recipe recovers a pruned model best with the same training budget?

``tools/bench_accuracy.py``'s default task (tiny_resnet width 16 on ``mosaic``, one unpruned model
trained 12 epochs with seed 0), cut to 0.5x by uniform and halp against the benchmark's table (the
plan the table predicts; no stopwatch here, so this tool can run beside other work), then each cut
recovered with every recipe below for the same 3 epochs, under several seeds (the seed sets the
recovery's data order and randomness; :func:`hwprune.recover.fit` re-seeds the loader from it):

- ``ft``: fine-tune, one-cycle peak lr 0.01 (the benchmark's and ``prune --finetune``'s);
- ``ft-lr0.1``: the same at the unpruned model's training peak lr 0.1 -- *learning-rate rewinding*
  (Renda, Frankle & Carbin, ICLR 2020: re-train the pruned network with the original schedule's
  large learning rate rather than fine-tuning at a small one);
- ``kd``: Hinton KD from the unpruned model, alpha 0.5, T 4, lr 0.01 (the benchmark's);
- ``kd-a0.9``, ``kd-a1``: the KD term weighted 0.9 / alone (alpha 0.9 at T 4 is the KD baseline of
  Tian et al.'s CRD benchmark, ICLR 2020);
- ``kd-a0.9-lr0.1``: KD alpha 0.9 with learning-rate rewinding.

Every recipe is scored on the search split (1000 images apart from the reported one: pick a
recipe there) and on the reported val split. Prints one line per run and a mean +- std table.

    nice -n 5 python tools/recipe_variants.py --table bench_out/accuracy_v2/table.json --seeds 0,1,2
    python tools/recipe_variants.py --table T --executor ray --ray-address auto   # one Ray task a run

With ``--executor ray`` each (strategy, seed, recipe) run is one Ray task holding ``--torch-threads``
CPUs; the runs are pure functions of the shared grid, so the numbers are the local run's.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tools"))

import bench_accuracy as B  # noqa: E402
from hwprune.evaluate import make_evaluator, top1  # noqa: E402
from hwprune.models import load_model  # noqa: E402
from hwprune.prune import PruneConfig, prune  # noqa: E402
from hwprune.recover import LoopSettings, fit  # noqa: E402

#: name -> (peak lr, KD alpha or None for no teacher)
RECIPES = {"ft": (0.01, None), "ft-lr0.1": (0.1, None), "kd": (0.01, 0.5), "kd-a0.9": (0.01, 0.9),
           "kd-a1": (0.01, 1.0), "kd-a0.9-lr0.1": (0.1, 0.9)}


class Grid:
    """What every run of the grid shares (the executor's payload): the preset, the unpruned model,
    each strategy's cut, and the task, which a Ray worker renders itself once (the executor keeps
    one payload per worker process) rather than receiving every image."""

    def __init__(self, P, base, cuts: dict, torch_threads: int, data=None):
        self.P, self.base, self.cuts, self.torch_threads, self._data = P, base, cuts, torch_threads, data

    def data(self):
        if self._data is None:
            self._data = B.make_task("mosaic", self.P.n_train, self.P.n_val, n_search=self.P.n_search)
        return self._data

    def __getstate__(self):
        return {**self.__dict__, "_data": None}


def recover_one(grid: Grid, item: tuple) -> dict:
    """One run: the cut of ``strategy`` recovered by ``recipe`` under ``seed`` (a pure function of
    the grid and the item, so any executor gives the same numbers at the same torch threads)."""
    strategy, seed, recipe = item
    torch.set_num_threads(grid.torch_threads)
    data = grid.data()
    lr, alpha = RECIPES[recipe]
    m = copy.deepcopy(grid.cuts[strategy])
    t0 = time.perf_counter()
    fit(m, data, LoopSettings(epochs=grid.P.recover_epochs, lr=lr, seed=seed, progress=False,
                              kd_alpha=alpha if alpha is not None else 0.5),
        teacher=grid.base if alpha is not None else None)
    return {"strategy": strategy, "recipe": recipe, "seed": seed, "val": 100 * top1(m, data.val),
            "search": 100 * top1(m, data.meta["search"].val), "seconds": time.perf_counter() - t0,
            "weights": weights_digest(m)}


def weights_digest(model) -> str:
    """A fingerprint of the recovered weights, bit for bit: two executors' runs compare exactly, not
    only by top-1."""
    import hashlib

    h = hashlib.sha256()
    for k, t in model.state_dict().items():
        h.update(k.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True, help="the benchmark's tiny_resnet table (bench_accuracy writes OUT/table.json)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--budget", type=float, default=0.5,
                    help="the latency budget, a fraction of the unpruned model (default 0.5, the benchmark's first)")
    ap.add_argument("--strategies", default="uniform,halp")
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--out", default=None, help="write every run here as JSON")
    ap.add_argument("--torch-threads", type=int, default=1)
    ap.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="where the runs go: local (one after another) or ray (one Ray task a run, holding "
                         "--torch-threads CPUs; the same numbers as local)")
    ap.add_argument("--ray-address", help="with --executor ray: auto or HOST:PORT (default: a Ray runtime here)")
    ap.add_argument("--n-train", type=int, help="training images (default: the benchmark preset's, 4096)")
    ap.add_argument("--base-epochs", type=int, help="the unpruned model's epochs (default: the preset's, 12)")
    ap.add_argument("--recover-epochs", type=int, help="each recipe's epochs (default: the preset's, 3)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.torch_threads)
    recipes = args.recipes.split(",")
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}: choose from {', '.join(RECIPES)}")
    from hwprune.errors import ConfigError
    from hwprune.executor import check_executor, make_executor

    if args.ray_address and args.executor != "ray":
        ap.error("--ray-address needs --executor ray")
    try:
        check_executor(args.executor, args.ray_address)  # before anything is trained
    except ConfigError as e:
        ap.error(str(e))
    P = copy.deepcopy(B.PRESETS["default"])
    for k in ("n_train", "base_epochs", "recover_epochs"):
        if getattr(args, k) is not None:
            setattr(P, k, getattr(args, k))
    data = B.make_task("mosaic", P.n_train, P.n_val, n_search=P.n_search)
    search = data.meta["search"]
    torch.manual_seed(0)
    loaded = load_model("hwprune.zoo:tiny_resnet", kwargs={"width": P.width})
    loaded.input_size = 32
    B.train_(loaded.model, data, P.base_epochs, 0.1, 0)
    base = loaded.model
    print(f"unpruned: val {100 * top1(base, data.val):.1f}%  search {100 * top1(base, search.val):.1f}%", flush=True)
    ev = make_evaluator("adaptive-bn", search)
    runs, cuts = [], {}
    for strategy in args.strategies.split(","):
        cfg = PruneConfig(strategy=strategy, budget=f"{args.budget}x", seed=0, progress=False, options=dict(P.options),
                          closed_loop_rounds=0, align=8)  # the table's grid on every host (bench_accuracy.cut)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cuts[strategy] = prune(loaded, cfg, table=args.table, calib=data.calib, evaluator=ev, data=data).model
    items = [(st, seed, recipe) for st in cuts for seed in (int(s) for s in args.seeds.split(",")) for recipe in recipes]
    ex = make_executor(args.executor, args.ray_address, worker_threads=args.torch_threads) \
        if args.executor == "ray" else make_executor("local")
    try:
        for r in ex.imap(recover_one, items, shared=Grid(P, base, cuts, args.torch_threads, data)):
            runs.append(r)
            print(f"{r['strategy']:>8} {r['recipe']:>14} seed {r['seed']}: val {r['val']:.1f}%  search "
                  f"{r['search']:.1f}%  ({r['seconds']:.0f} s)", flush=True)
    finally:
        ex.close()
    print("\n| strategy | recipe | val top-1 % | search-split top-1 % | n |\n|---|---|---|---|---|")
    for strategy in args.strategies.split(","):
        for recipe in recipes:
            rs = [r for r in runs if r["strategy"] == strategy and r["recipe"] == recipe]
            def ms(k):
                xs = [r[k] for r in rs]
                return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.1f}"
            print(f"| {strategy} | {recipe} | {ms('val')} | {ms('search')} | {len(rs)} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"runs": runs}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
