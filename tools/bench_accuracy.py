"""Benchmark: the most accurate model at a *measured* latency budget (issue #18 item 7).

What it runs, per seed (model initialisation, training order and search seed; the data are fixed):

1. **The task** (``mosaic``): a harder generated task where capacity matters. Each 32x32 image is
   a 2x2 mosaic of four 16x16 images of hwprune's synthetic shapes (hwprune.data.SyntheticImages:
   ten shapes, random colour, pose, background and distractor blobs); the label is the shape in the
   *top-left* tile, the other three tiles are shapes of the same kind as distractors. At 16 px the
   shapes are small, and the network has to tell one tile from three similar ones. (``shapes``: the
   plain 32 px synthetic task, for comparison.)
2. **The unpruned model** (``--model``): tiny_resnet, or tiny_mobilenet (MobileNetV2-style: depthwise
   convs whose latency does not follow FLOPs, where a latency-aware search has room to win), trained from scratch for ``base_epochs`` (one-cycle SGD,
   lr 0.1). Convergence is checked, not assumed: a copy gets the same extra training as the pruned
   models (``recover_epochs`` of fine-tune, and of fine-tune + self-KD) and its gain is reported.
3. **Strategies at equal measured latency** (``--budgets``, default 0.5x and 0.3x of the unpruned
   model, measured side by side on ONNX Runtime by the closed loop): uniform, FLOPs-matched (global
   magnitude pruning whose FLOPs budget is bisected until its *measured* latency matches), halp,
   netadapt, evolution. Each cut is recovered four ways with the same training budget:
   ``ft`` (fine-tune ``recover_epochs``, lr 0.01), ``kd`` (the same with Hinton KD from the
   unpruned model), ``scratch-e`` (re-initialised, ``base_epochs``: Liu et al. 2019 Scratch-E) and
   ``scratch-b`` (re-initialised, ``round(base_epochs * FLOPs ratio)`` epochs: Scratch-B, capped at
   twice ``base_epochs`` to fit the preset's time).
4. **Families** (Crowley et al. 2018): the copycat family of the plan with the best ``ft`` accuracy
   at the first budget and the uniformly rescaled family, both trained from scratch (Scratch-E).
5. **Regularise, then cut** (hwprune.regularize) on the halp plan at the first budget: slimming and
   TPP for ``reg_epochs``, cut, then ``ft``.

Every row has measured latency (ms, and ratio to the unpruned model measured beside it) and FLOPs.
Writes OUT/results.json (all rows, settings, timings), OUT/results.md (mean +- std over seeds per
budget/strategy/recipe) and OUT/accuracy_latency.png.

    nice -n 5 python tools/bench_accuracy.py --quick --out bench_out/accuracy_quick   # a few minutes
    nice -n 5 python tools/bench_accuracy.py --out bench_out/accuracy                 # ~90 min (estimate), 2 quiet cores
    python tools/bench_accuracy.py --executor ray --ray-address auto --cpus-per-run 16   # one Ray task a seed

With ``--executor ray`` each seed is a Ray task holding ``--cpus-per-run`` CPUs (default
``--threads``, so no two runs time their models on the same cores); see docs/devices.md.
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
from dataclasses import dataclass, field

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hwprune.data import (SYNTHETIC_MEAN, SYNTHETIC_STD, ArrayImageDataset, DataBundle,  # noqa: E402
                          SyntheticImages, _batch_loader)
from hwprune.evaluate import top1  # noqa: E402
from hwprune.jsonio import write_json  # noqa: E402
from hwprune.models import load_model  # noqa: E402
from hwprune.prune import PruneConfig, prune  # noqa: E402
from hwprune.recover import LoopSettings, fit  # noqa: E402
from hwprune.scratch import reinitialize_  # noqa: E402


@dataclass
class Preset:
    width: int  # the model's base width (tiny_resnet: channels 1x, 2x, 4x over its three stages)
    n_train: int
    n_val: int
    base_epochs: int
    recover_epochs: int
    reg_epochs: int
    seeds: list[int]
    budgets: list[float]
    strategies: list[str]
    recipes: list[str]
    flops_steps: int
    options: dict = field(default_factory=dict)
    #: images the searches score candidates on, apart from train and the reported val split
    n_search: int = 1000
    #: None: each seed trains its own unpruned model (the seeds then carry that model's spread too);
    #: an int: one unpruned model, trained with this seed, is what every seed prunes and recovers --
    #: a user's situation (one trained model), and the seeds vary only the search and the recovery
    base_seed: int | None = None


PRESETS = {
    # a few minutes on a quiet machine: one seed, one budget, the cheap strategies and recipes
    "quick": Preset(width=16, n_train=1024, n_val=512, base_epochs=6, recover_epochs=2, reg_epochs=1, seeds=[0],
                    budgets=[0.5],
                    strategies=["uniform", "flops", "halp", "netadapt"], recipes=["ft", "kd", "scratch-e"],
                    flops_steps=3, options={"netadapt_initial": 0.15, "halp_steps": 3, "halp_batches": 16},
                    n_search=512),
    # 30-50 minutes on 2 cores: what the "done" line asks, at 0.5x -- one unpruned model
    # that the same extra training no longer improves (mosaic, 4096 images, 12 epochs: 61.9% ->
    # 61.9 +- 0.5% after 3 more, 2026-12-01), uniform against the latency-aware searches, each
    # recovered by fine-tune, KD and Scratch-E with the same budget, 3 seeds of search and recovery
    "default": Preset(width=16, n_train=4096, n_val=1000, base_epochs=12, recover_epochs=3, reg_epochs=1,
                      seeds=[0, 1, 2], budgets=[0.5], strategies=["uniform", "halp", "netadapt"],
                      recipes=["ft", "kd", "scratch-e"], flops_steps=4,
                      options={"netadapt_initial": 0.1, "halp_steps": 4}, base_seed=0),
    # everything the issue lists (0.3x too, FLOPs-matched, evolution, Scratch-B): a GPU session's run
    "full": Preset(width=16, n_train=4096, n_val=1000, base_epochs=12, recover_epochs=3, reg_epochs=1,
                   seeds=[0, 1, 2], budgets=[0.5, 0.3], strategies=["uniform", "flops", "halp", "netadapt", "evolution"],
                   recipes=["ft", "kd", "scratch-e", "scratch-b"], flops_steps=4,
                   options={"netadapt_initial": 0.1, "halp_steps": 4, "evo_pop": 8, "evo_gens": 3}),
}


def log(msg: str) -> None:
    print(f"[bench_accuracy {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ the task
def mosaic_arrays(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 32x32 mosaics of four 16x16 synthetic images; label = the top-left tile's shape."""
    src = SyntheticImages(4 * n, size=16, seed=seed)
    x = np.zeros((n, 3, 32, 32), dtype=np.uint8)
    for i in range(n):
        for t, (r, c) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            x[i, :, 16 * r:16 * r + 16, 16 * c:16 * c + 16] = src.render(4 * i + t)
    return torch.from_numpy(x), torch.from_numpy(src.labels[0::4].copy())


def shapes_arrays(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    src = SyntheticImages(n, size=32, seed=seed)
    return torch.from_numpy(np.stack([src.render(i) for i in range(n)])), torch.from_numpy(src.labels.copy())


def make_task(task: str, n_train: int, n_val: int, seed: int = 0, batch: int = 64, n_search: int = 0) -> DataBundle:
    """The task's loaders. Images are laid out ``[train | val | search]``: ``val`` is the held-out
    split every reported top-1 comes from; ``search`` (``n_search`` more images, none of them in
    train or val) is what the searches' evaluator scores candidates on, in
    ``data.meta["search"]`` (a DataBundle whose ``val`` is that split), so a search never selects
    on the images it is reported on (NetAdapt's own protocol: a holdout set carved from training)."""
    make = mosaic_arrays if task == "mosaic" else shapes_arrays
    x, y = make(n_train + n_val + n_search, seed)
    norm = ((SYNTHETIC_MEAN,) * 3, (SYNTHETIC_STD,) * 3)
    train = ArrayImageDataset(x[:n_train], y[:n_train], *norm)  # no flips: the label is positional
    val = ArrayImageDataset(x[n_train:n_train + n_val], y[n_train:n_train + n_val], *norm)
    calib = torch.utils.data.Subset(train, range(min(256, n_train)))
    data = DataBundle(train=_batch_loader(train, batch, True, seed, drop_last=True),
                      val=_batch_loader(val, batch, False, seed), calib=_batch_loader(calib, batch, False, seed),
                      num_classes=10, input_size=32, spec=f"bench:{task}", meta={"task": task, "n_train": n_train})
    if n_search:
        held = ArrayImageDataset(x[n_train + n_val:], y[n_train + n_val:], *norm)
        data.meta["search"] = DataBundle(train=data.train, val=_batch_loader(held, batch, False, seed),
                                         calib=data.calib, num_classes=10, input_size=32, spec=data.spec,
                                         meta={"task": task, "split": "search"})
    return data


# ------------------------------------------------------------------ training and measuring
def train_(model, data, epochs: int, lr: float, seed: int, teacher=None):
    """Train ``model`` on ``data.train``; the data order and augmentation follow ``seed``
    (``fit`` re-seeds the loader's own generators from it). Before 2026-12-02 ``fit`` seeded only
    the global RNGs, so every training call continued the loader's stream where the last one
    stopped, and a result depended on its position in the run rather than on its seed (a run
    over seeds 3-5 reproduced seeds 0-2 of an earlier run digit for digit)."""
    if epochs > 0:
        fit(model, data, LoopSettings(epochs=epochs, lr=lr, seed=seed, progress=False), teacher=teacher)
    return model.eval()


def measure(base, model, threads: int) -> dict:
    from hwprune.latency.measure import measure_against_baseline
    from hwprune_deploy.runner import timing_ms

    t = measure_against_baseline("ort-cpu", {"baseline": base, "pruned": model}, torch.randn(1, 3, 32, 32), threads)
    b, p = timing_ms(t["baseline"]), timing_ms(t["pruned"])
    return {"baseline_ms": b, "measured_ms": p, "latency_ratio": p / b}


def flops_of(model) -> float:
    from hwprune.counting import summarize

    return float(summarize(model, torch.randn(1, 3, 32, 32))["flops"])


def get_table(loaded, out: str, threads: int, quick: bool, model: str = "tiny_resnet") -> str:
    from hwprune.latency import ProfileConfig, profile

    path = os.path.join(out, "table.json")
    if os.path.exists(path):
        return path
    log(f"profiling {model} at 32 px into {path} (ort-cpu, {threads} threads{', quick protocol' if quick else ''})")
    cfg = (ProfileConfig.quick(backend="ort-cpu", threads=threads, input_size=32, out=path, align=8, calib_variants=4)
           if quick else ProfileConfig(backend="ort-cpu", threads=threads, input_size=32, out=path, align=8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return profile(loaded, cfg, progress=False)


def iterative_steps(strategy: str) -> int:
    """K of a strategy named ``NAME-itK`` (1: one-shot)."""
    return int(strategy.rsplit("-it", 1)[1]) if "-it" in strategy else 1


def cut(loaded, strategy: str, budget: float, seed: int, table: str, data, evaluator, P: Preset, threads: int,
        distill: bool = False):
    """(PruneResult, extra) for one strategy at ``budget`` x the unpruned model's measured latency.
    A strategy named ``NAME-mpF`` is NAME with ``PruneConfig.max_prune=F`` (``--max-prune F``: the
    largest share of any group a search may remove; for halp also its own ``halp_max_prune``, so
    ``halp-mp1`` is halp without its default floor); ``NAME-itK`` is NAME reached in K cut +
    fine-tune steps (``--iterative K``, one epoch of fine-tuning between steps, with KD from the
    unpruned model when ``distill``), HALP's progressive pruning in the benchmark's budget: the
    K - 1 epochs between steps count towards the recovery's epochs (:func:`run_seed`)."""
    max_prune, steps = 1.0, iterative_steps(strategy)
    strategy = strategy.rsplit("-it", 1)[0]
    if steps > 1 and strategy == "flops":
        raise SystemExit(f"flops-it{steps}: the FLOPs-matched cut bisects a one-shot prune and has no iterative "
                         "form; use flops, or NAME-itK with a latency strategy (e.g. halp-it3)")
    common = dict(calib=data.calib, evaluator=evaluator, data=data)
    options = dict(P.options)
    if "-mp" in strategy:
        strategy, mp = strategy.rsplit("-mp", 1)
        max_prune = float(mp)
        if strategy == "halp":  # halp's own floor (halp_max_prune, 0.625) set to F too: halp-mp1 is uncapped halp
            options["halp_max_prune"] = max_prune
    if strategy != "flops":
        # align 8: the grid the table is profiled on (get_table), on every host -- the default would be the
        # device's (16 on AVX-512), where this 16-wide net's groups have one width left and 0.5x is unreachable
        cfg = PruneConfig(strategy=strategy, budget=f"{budget}x", seed=seed, backend="ort-cpu", threads=threads,
                          closed_loop_rounds=2, progress=False, options=options, max_prune=max_prune,
                          iterative=steps, iterative_epochs=1, distill=distill, align=8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return prune(loaded, cfg, table=table, **common), {}
    lo, hi, best = 1.0, 100.0, None
    for _ in range(P.flops_steps):  # FLOPs budget bisected until the measured latency matches
        mid = (lo + hi) / 2
        res = prune(loaded, PruneConfig(strategy="global", budget=f"{mid:.2f}%flops", seed=seed, progress=False),
                    **common)
        m = measure(loaded.model, res.model, threads)
        if m["latency_ratio"] <= budget * 1.03:
            best, lo = (res, mid), mid
        else:
            hi = mid
    res, pct = best if best is not None else (res, mid)
    return res, {"flops_budget_pct": pct}


#: the sections ``--skip`` can leave out
SECTIONS = ("families", "regularize", "convergence")


def sections(text: str) -> frozenset:
    """``--skip``'s comma-separated section names, each one of :data:`SECTIONS`."""
    names = frozenset(filter(None, text.split(",")))
    if names - set(SECTIONS):
        raise argparse.ArgumentTypeError(f"{','.join(sorted(names - set(SECTIONS)))}: the sections are "
                                         f"{', '.join(SECTIONS)}")
    return names


#: the built-in networks the benchmark can prune (hwprune.zoo), both with a ``width`` argument
MODELS = ("tiny_resnet", "tiny_mobilenet")

#: unpruned models trained so far, by training seed (Preset.base_seed shares one across seeds)
BASES: dict = {}

#: every row so far, written to OUT/partial.json as it grows (a killed run keeps what it measured)
PARTIAL: dict = {"path": None, "rows": []}


def row(seed, budget, strategy, recipe, model, base, data, threads, lat=None, **extra) -> dict:
    """One result. ``lat``: the latency of this architecture measured already (recipes that only
    retrain a cut share its measurement: same shapes, same work)."""
    r = {"seed": seed, "budget": budget, "strategy": strategy, "recipe": recipe, "top1": top1(model, data.val),
         "flops_ratio": flops_of(model) / flops_of(base), **(lat or measure(base, model, threads)), **extra}
    PARTIAL["rows"].append(r)
    if PARTIAL["path"]:
        write_json(PARTIAL["path"], {"rows": PARTIAL["rows"]})
    log(f"seed {seed} {budget}x {strategy:>10} {recipe:>12}: top-1 {100 * r['top1']:.1f}%  latency "
        f"{r['latency_ratio']:.3f}x  FLOPs {r['flops_ratio']:.3f}x")
    return r


def recover_rows(seed, budget, strategy, pruned, base, data, P: Preset, threads, extra, lat) -> list[dict]:
    rows = []
    fr = flops_of(pruned) / flops_of(base)
    for recipe in P.recipes:
        m = copy.deepcopy(pruned)
        if recipe == "ft":
            train_(m, data, P.recover_epochs, 0.01, seed)
        elif recipe == "kd":
            train_(m, data, P.recover_epochs, 0.01, seed, teacher=base)
        else:
            torch.manual_seed(seed)
            reinitialize_(m)
            # Scratch-B: the unpruned model's computation, round(base * FLOPs ratio), capped here at
            # 2x base epochs so the default preset fits its time (the rule itself is uncapped)
            epochs = P.base_epochs if recipe == "scratch-e" else max(1, min(round(P.base_epochs / fr),
                                                                           2 * P.base_epochs))
            train_(m, data, epochs, 0.1, seed)
        n = {"ft": P.recover_epochs, "kd": P.recover_epochs}.get(recipe, locals().get("epochs"))
        rows.append(row(seed, budget, strategy, recipe, m, base, data, threads, lat=lat, **{**extra, "epochs": n}))
    return rows


def unpruned(seed: int, P: Preset, data, args):
    """The unpruned model seed ``seed`` prunes: trained here with its own seed, or the one model of
    ``P.base_seed`` (trained once, then copied)."""
    bseed = seed if P.base_seed is None else P.base_seed
    if bseed in BASES:  # one unpruned model shared by every seed (Preset.base_seed)
        return copy.deepcopy(BASES[bseed])
    torch.manual_seed(bseed)
    loaded = load_model(f"hwprune.zoo:{args.model}", kwargs={"width": P.width})
    loaded.input_size = 32
    t0 = time.perf_counter()
    train_(loaded.model, data, P.base_epochs, 0.1, bseed)
    log(f"seed {seed}: unpruned model trained {P.base_epochs} epochs (seed {bseed}) in "
        f"{time.perf_counter() - t0:.0f} s")
    if P.base_seed is not None:
        BASES[bseed] = copy.deepcopy(loaded)
    return loaded


@dataclass
class SeedJob:
    """What every seed's run shares, as one executor payload (``--executor ray``): the settings, the
    task's spec (each worker renders the images itself, once: the executor keeps one payload per
    worker process), the latency table's *content* (a worker on another node cannot read the
    driver's path), and the unpruned model when every seed prunes the same one (trained once, by
    the driver)."""

    P: Preset
    args: dict
    table: bytes
    base: object = None

    def data(self):
        if self.__dict__.get("_data") is None:
            self.__dict__["_data"] = make_task(self.args["task"], self.P.n_train, self.P.n_val,
                                               n_search=self.P.n_search)
        return self.__dict__["_data"]

    def __getstate__(self):  # what a worker gets: not this process's rendered data
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}


def seed_rows(job: SeedJob, seed: int) -> list[dict]:
    """One work item of the grid: every row of seed ``seed`` (:func:`run_seed`), wherever it runs."""
    torch.set_num_threads(job.args["torch_threads"])
    PARTIAL.update(path=None, rows=[])  # the driver writes what comes back; workers do not share its partial.json
    P = job.P
    if job.base is not None:
        BASES.setdefault(P.base_seed, job.base)
    import tempfile

    with tempfile.TemporaryDirectory(prefix="hwprune-bench-") as d:  # the table for this run, gone after it
        path = os.path.join(d, "table.json")
        with open(path, "wb") as f:
            f.write(job.table)
        return run_seed(seed, P, job.data(), argparse.Namespace(**job.args), {"path": path})


def run_seed(seed: int, P: Preset, data, args, table_holder: dict) -> list[dict]:
    from hwprune.evaluate import make_evaluator

    rows: list[dict] = []
    loaded = unpruned(seed, P, data, args)
    base = loaded.model
    if "path" not in table_holder:
        table_holder["path"] = get_table(loaded, args.out, args.threads, args.quick, args.model)
    table = table_holder["path"]
    rows.append(row(seed, 1.0, "unpruned", "trained", base, copy.deepcopy(base), data, args.threads,
                    epochs=P.base_epochs))
    lat0 = {k: rows[-1][k] for k in ("baseline_ms", "measured_ms", "latency_ratio")}
    extra_training = () if "convergence" in args.skip else (("+ft", None), ("+kd", base))
    for recipe, teacher in extra_training:  # convergence: the same extra training as the pruned models get
        m = train_(copy.deepcopy(base), data, P.recover_epochs, 0.01, seed, teacher=teacher)
        rows.append(row(seed, 1.0, "unpruned", recipe, m, base, data, args.threads, lat=lat0))
    evaluator = make_evaluator("adaptive-bn", data.meta.get("search", data))  # scores candidates off the report split
    plans: dict = {}
    for budget in P.budgets:
        for strategy in P.strategies:
            if iterative_steps(strategy) > 1:
                rows += iterative_rows(seed, budget, strategy, loaded, base, table, data, evaluator, P, args)
                continue
            t1 = time.perf_counter()
            res, extra = cut(loaded, strategy, budget, seed, table, data, evaluator, P, args.threads)
            extra.update(search_s=time.perf_counter() - t1)
            plans[(budget, strategy)] = res.plan
            rows.append(row(seed, budget, strategy, "cut", res.model, base, data, args.threads, **extra))
            lat = {k: rows[-1][k] for k in ("baseline_ms", "measured_ms", "latency_ratio")}
            rows += recover_rows(seed, budget, strategy, res.model, base, data, P, args.threads, extra, lat)
    b0 = P.budgets[0]
    try:
        if "families" not in args.skip:
            rows += families(seed, b0, plans, rows, base, loaded, data, P, args, table)
    except Exception as e:  # a broken section is reported, and the rest of the run kept
        log(f"families failed: {type(e).__name__}: {e}")
        rows.append({"seed": seed, "budget": b0, "strategy": "family", "recipe": "error", "error": repr(e)})
    if (b0, "halp") in plans and "regularize" not in args.skip:
        from hwprune.regularize import regularize_then_cut

        for name in ("slimming", "tpp"):
            try:
                m, _ = regularize_then_cut(loaded, plans[(b0, "halp")], data, name, epochs=P.reg_epochs, seed=seed,
                                           progress=False)
                train_(m, data, P.recover_epochs, 0.01, seed)
                rows.append(row(seed, b0, f"halp+{name}", "ft", m, base, data, args.threads, reg_epochs=P.reg_epochs))
            except Exception as e:
                log(f"{name} failed: {type(e).__name__}: {e}")
                rows.append({"seed": seed, "budget": b0, "strategy": f"halp+{name}", "recipe": "error", "error": repr(e)})
    return rows


def iterative_rows(seed, budget, strategy, loaded, base, table, data, evaluator, P: Preset, args) -> list[dict]:
    """``NAME-itK`` under ``ft`` and ``kd`` with the one-shot recipes' training budget: K - 1 epochs
    between the K steps (KD from the unpruned model for ``kd``), then the rest of
    ``recover_epochs`` after the last cut."""
    K = iterative_steps(strategy)
    if K - 1 >= P.recover_epochs:
        raise SystemExit(f"{strategy}: {K - 1} epochs between steps leave none of --recover-epochs "
                         f"{P.recover_epochs} for after the last cut; use K <= {P.recover_epochs}")
    rows = []
    for recipe in [r for r in P.recipes if r in ("ft", "kd")]:
        t1 = time.perf_counter()
        res, extra = cut(loaded, strategy, budget, seed, table, data, evaluator, P, args.threads,
                         distill=recipe == "kd")
        m = train_(res.model, data, P.recover_epochs - (K - 1), 0.01, seed, teacher=base if recipe == "kd" else None)
        rows.append(row(seed, budget, strategy, recipe, m, base, data, args.threads,
                        **{**extra, "search_s": time.perf_counter() - t1, "epochs": P.recover_epochs}))
    return rows


def families(seed, budget, plans, rows, base, loaded, data, P, args, table) -> list[dict]:
    """Copycat family of the best ft plan at ``budget`` and the uniform family, from scratch."""
    from hwprune.family import FamilyConfig, build_family
    from hwprune.plan import apply

    ft = [r for r in rows if r["recipe"] == "ft" and r["budget"] == budget and (budget, r["strategy"]) in plans]
    if not ft:
        return []
    best = max(ft, key=lambda r: r["top1"])["strategy"]
    fam = build_family(FamilyConfig(plan=plans[(budget, best)], budgets=f"{budget}x", table=table,
                                    baseline="uniform", plot=False, checkpoints=False))
    out = []
    for mem in fam.members:
        m = apply(base, mem.plan)
        torch.manual_seed(seed)
        reinitialize_(m)
        train_(m, data, P.base_epochs, 0.1, seed)
        out.append(row(seed, budget, f"family:{mem.family}", "scratch-e", m, base, data, args.threads,
                       source_plan=best))
    return out


def run_on_ray(P: Preset, data, args) -> list[dict]:
    """Every seed as one Ray task holding ``--cpus-per-run`` CPUs (issue #20: the benchmark's grid on
    the executor). The driver profiles the table and, with one unpruned model for every seed, trains
    it first; each result is written to OUT/results.json as it arrives, in seed order."""
    from hwprune.errors import ConfigError
    from hwprune.executor import make_executor

    cpus = args.cpus_per_run or args.threads
    try:
        ex = make_executor("ray", address=args.ray_address, worker_threads=cpus)
    except ConfigError as e:
        raise SystemExit(f"bench_accuracy: {e}") from None
    try:
        arch = load_model(f"hwprune.zoo:{args.model}", kwargs={"width": P.width})
        arch.input_size = 32
        with open(get_table(arch, args.out, args.threads, args.quick, args.model), "rb") as f:
            table = f.read()
        base = unpruned(P.seeds[0], P, data, args) if P.base_seed is not None else None
        job = SeedJob(P, dict(vars(args)), table, base)
        log(f"{len(P.seeds)} seed(s) on Ray, {cpus} CPU(s) each")
        rows = []
        for seed, got in zip(P.seeds, ex.imap(seed_rows, P.seeds, shared=job)):
            rows += got
            log(f"seed {seed}: {len(got)} rows back from Ray")
            write_json(os.path.join(args.out, "results.json"), {"rows": rows})  # partial results survive a kill
        return rows
    finally:
        ex.close()


# ------------------------------------------------------------------ report
def _ms(vals) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    return f"{statistics.mean(vals):.3f}" + (f" ± {statistics.stdev(vals):.3f}" if len(vals) > 1 else "")


def markdown(rows: list[dict], meta: dict) -> str:
    keys = []
    errors = [r for r in rows if r["recipe"] == "error"]
    rows = [r for r in rows if r["recipe"] != "error"]
    for r in rows:
        k = (r["budget"], r["strategy"], r["recipe"])
        if k not in keys:
            keys.append(k)
    lines = [f"{meta.get('model', 'tiny_resnet')} (width {meta['width']}) on the `{meta['task']}` task, {meta['preset']} preset, seeds {meta['seeds']}; top-1 on "
             f"{meta['n_val']} held-out images; latency measured on ort-cpu ({meta['threads']} threads) side by side "
             "with the unpruned model", "",
             "| budget | strategy | recipe | top-1 % | measured latency (x unpruned) | FLOPs (x) | n |",
             "|---|---|---|---|---|---|---|"]
    for k in keys:
        rs = [r for r in rows if (r["budget"], r["strategy"], r["recipe"]) == k]
        acc = [100 * r["top1"] for r in rs]
        lines.append(f"| {k[0]}x | {k[1]} | {k[2]} | {_ms(acc)} | {_ms([r['latency_ratio'] for r in rs])} | "
                     f"{_ms([r['flops_ratio'] for r in rs])} | {len(rs)} |")
    lines += [f"\nfailed: {r['strategy']} (seed {r['seed']}): {r['error']}" for r in errors]
    return "\n".join(lines) + "\n"


def _sd(xs: list[float]) -> float:
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _paired(label: str, v: dict, u: dict) -> str:
    """Mean of the per-seed differences ``v - u``, their std, and twice the pooled std of the two
    rows (which carries the seed-to-seed spread of the unpruned model both arms share)."""
    seeds = sorted(set(v) & set(u))
    d = [v[s] - u[s] for s in seeds]
    sd = ((_sd([v[s] for s in seeds]) ** 2 + _sd([u[s] for s in seeds]) ** 2) / 2) ** 0.5
    return (f"{label}: {statistics.mean(d):+.2f} points (paired, {len(seeds)} seeds; per seed "
            f"{', '.join(f'{x:+.1f}' for x in d)}; std of the differences {_sd(d):.2f}; 2x pooled std {2 * sd:.2f})")


def verdict(rows: list[dict]) -> str:
    """The issue's "done" line, computed: per budget, the best (strategy, recipe) against uniform
    with the same recipe (same training budget), as the mean over seeds of the paired difference,
    next to twice the pooled std of the two rows; and each latency-aware search against uniform
    with every recipe."""
    out = []
    cell: dict = {}
    for r in rows:
        if r.get("recipe") not in (None, "cut", "error", "trained", "+ft", "+kd") and r["strategy"] != "unpruned":
            cell.setdefault((r["budget"], r["strategy"], r["recipe"]), {})[r["seed"]] = 100 * r["top1"]
    for b in sorted({k[0] for k in cell}):
        here = {k: v for k, v in cell.items() if k[0] == b}
        uni = {k[2]: v for k, v in here.items() if k[1] == "uniform"}
        if not uni:
            continue
        best = max(here, key=lambda k: statistics.mean(here[k].values()))
        ref = uni.get(best[2])
        out.append(f"**{b}x**: best {best[1]} / {best[2]} "
                   f"{statistics.mean(here[best].values()):.1f}% (n={len(here[best])})")
        for k, v in sorted(here.items()):
            if k[1] in ("uniform",) or k[2] not in uni or k[1].startswith("family") or "+" in k[1]:
                continue
            u = uni[k[2]]
            if not set(v) & set(u):
                continue
            out.append("- " + _paired(f"{k[1]} vs uniform, both `{k[2]}`", v, u))
        if ref is None:
            out.append(f"- (no uniform / {best[2]} row to compare the best with)")
        if "ft" in uni and best != (b, "uniform", "ft"):  # the peers' recipe: uniform cut, plain fine-tune
            out.append("- " + _paired(f"best ({best[1]} / `{best[2]}`) vs uniform / `ft` (the peers' recipe)",
                                      here[best], uni["ft"]))
    return "\n".join(out) + "\n" if out else ""


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups: dict = {}
    for r in rows:
        if r["recipe"] in ("cut", "error"):
            continue
        groups.setdefault(f"{r['strategy']} / {r['recipe']}", []).append(r)
    markers = {"ft": "o", "kd": "s", "scratch-e": "^", "scratch-b": "v"}
    colours = plt.cm.tab20(np.linspace(0, 1, max(len(groups), 2)))
    for (label, rs), colour in zip(sorted(groups.items()), colours):
        ax.scatter([r["latency_ratio"] for r in rs], [100 * r["top1"] for r in rs], label=label, s=22,
                   color=colour, marker=markers.get(rs[0]["recipe"], "D"))
    ax.set_xlabel("measured latency (x unpruned, ort-cpu)")
    ax.set_ylabel("top-1 %")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def write_report(rows: list[dict], meta: dict, out: str) -> None:
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(rows, meta) + "\n" + verdict(rows))
    plot(rows, os.path.join(out, "accuracy_latency.png"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the few-minute preset (one seed, one budget)")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="default: 'default' ('quick' with --quick); 'full' is "
                    "every strategy, both budgets and Scratch-B (hours on a CPU)")
    ap.add_argument("--recipes", help="comma-separated: ft,kd,scratch-e,scratch-b")
    ap.add_argument("--out", default="bench_out/accuracy")
    ap.add_argument("--task", choices=("mosaic", "shapes"), default="mosaic")
    ap.add_argument("--model", choices=MODELS, default="tiny_resnet",
                    help="the network pruned (default tiny_resnet: a plain ResNet, whose latency at 32 px follows its "
                         "FLOPs; tiny_mobilenet: inverted residuals with depthwise convs, whose latency does not)")
    ap.add_argument("--seeds", help="comma-separated seeds (default: the preset's)")
    ap.add_argument("--budgets", help="comma-separated latency fractions (default: the preset's)")
    ap.add_argument("--strategies", help="comma-separated: uniform,flops,halp,netadapt,evolution; NAME-mpF is NAME "
                    "with --max-prune F (e.g. halp-mp0.75; halp-mp1 is halp without its default floor of 3/8 a "
                    "layer); NAME-itK reaches the budget in K steps with an epoch of ft/kd between them "
                    "(--iterative K; e.g. halp-it3), within the same recovery epochs")
    ap.add_argument("--skip", type=sections, default=frozenset(), help="comma-separated sections to leave out: families,regularize,"
                    "convergence (the unpruned model's extra +ft/+kd rows, when an earlier run on the same "
                    "model checked them)")
    ap.add_argument("--n-train", type=int, help="training images (default: the preset's)")
    ap.add_argument("--base-epochs", type=int, help="epochs of the unpruned model and of Scratch-E (default: the preset's)")
    ap.add_argument("--recover-epochs", type=int, help="fine-tune / KD epochs (default: the preset's)")
    ap.add_argument("--base-seed", type=int,
                    help="train ONE unpruned model with this seed and prune it under every seed (the seeds then "
                         "vary search and recovery only); -1: each seed trains its own (default: the preset's)")
    ap.add_argument("--n-search", type=int,
                    help="images the searches score candidates on, apart from train and val (default: the preset's; "
                         "0: they score on the reported val split, as the first default run did)")
    ap.add_argument("--threads", type=int, default=2, help="ORT threads of every latency measurement (default 2)")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="PyTorch threads for training (default 1: on a shared machine OpenMP's spinning workers "
                         "slowed a 2-thread run many times over)")
    ap.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="where the seeds run: local (one after another, here) or ray (one Ray task a seed: "
                         "`pip install 'hwprune[ray]'`)")
    ap.add_argument("--ray-address", help="with --executor ray: auto (a cluster started here with `ray start --head`) "
                    "or HOST:PORT of its head; default: a Ray runtime on this machine only")
    ap.add_argument("--cpus-per-run", type=int,
                    help="with --executor ray: CPUs each seed's task holds (default: --threads, so that no two "
                         "runs time their models on the same cores; give a whole node's CPUs for timings as "
                         "clean as a local run's)")
    ap.add_argument("--render", action="store_true",
                    help="only re-write OUT/results.md and the plot from OUT/results.json (no training)")
    args = ap.parse_args(argv)
    if args.executor == "local" and (args.ray_address or args.cpus_per_run):
        ap.error("--ray-address and --cpus-per-run say where Ray runs the seeds: add --executor ray")
    if args.cpus_per_run is not None and args.cpus_per_run < 1:
        ap.error(f"--cpus-per-run {args.cpus_per_run}: give 1 or more")
    if args.executor == "ray":
        from hwprune.errors import ConfigError
        from hwprune.executor import check_executor

        try:  # before any data is rendered or model trained
            check_executor("ray", args.ray_address)
        except ConfigError as e:
            ap.error(str(e))
    if args.render:
        with open(os.path.join(args.out, "results.json")) as f:
            done = json.load(f)
        write_report(done["rows"], done["meta"], args.out)
        return 0
    torch.set_num_threads(args.torch_threads)
    name = args.preset or ("quick" if args.quick else "default")
    P = copy.deepcopy(PRESETS[name])
    if args.seeds:
        P.seeds = [int(s) for s in args.seeds.split(",")]
    if args.budgets:
        P.budgets = [float(b) for b in args.budgets.split(",")]
    if args.strategies:
        P.strategies = args.strategies.split(",")
    if args.recipes:
        P.recipes = args.recipes.split(",")
    for k in ("n_train", "base_epochs", "recover_epochs", "n_search"):
        if getattr(args, k) is not None:
            setattr(P, k, getattr(args, k))
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    if args.base_seed is not None:
        P.base_seed = None if args.base_seed < 0 else args.base_seed
    data = make_task(args.task, P.n_train, P.n_val, n_search=P.n_search)
    log(f"{args.task} task: {P.n_train} train / {P.n_val} val / {P.n_search} search images ready in "
        f"{time.perf_counter() - t0:.0f} s")
    rows, holder = [], {}
    PARTIAL["path"] = os.path.join(args.out, "partial.json")
    if args.executor == "local":
        for seed in P.seeds:
            rows += run_seed(seed, P, data, args, holder)
            write_json(os.path.join(args.out, "results.json"), {"rows": rows})  # partial results survive a kill
    else:
        rows = run_on_ray(P, data, args)
    meta = {"preset": name, "task": args.task, "model": args.model, "width": P.width, "seeds": P.seeds, "n_train": P.n_train, "n_val": P.n_val,
            "base_epochs": P.base_epochs, "base_seed": P.base_seed, "n_search": P.n_search, "recover_epochs": P.recover_epochs, "reg_epochs": P.reg_epochs,
            "budgets": P.budgets, "strategies": P.strategies, "recipes": P.recipes, "threads": args.threads,
            "seconds": time.perf_counter() - t0, "load_average": os.getloadavg(), "executor": args.executor,
            "cpus_per_run": args.cpus_per_run if args.executor == "ray" else None}
    write_json(os.path.join(args.out, "results.json"), {"meta": meta, "rows": rows})
    write_report(rows, meta, args.out)
    log(f"done in {meta['seconds'] / 60:.1f} min: {args.out}/results.md")
    print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
