"""Local vs Ray executor, same searches side by side (issue #20): evolution with ``--evo-pop``
candidates a generation and netadapt (one proposal per channel group an iteration), each run once
with ``--executor local`` and once on a local Ray cluster of ``--num-cpus`` CPUs started here; the
plans must be identical, and the wall-clock ratio is the speedup.

    .venv/bin/python tools/bench_executor.py                       # tiny_resnet at 32 px, 2 CPUs
    .venv/bin/python tools/bench_executor.py --model resnet18 --input-size 64 --out bench_executor.json

The local run uses torch's default threads (all cores for each candidate, one after another); Ray
runs one candidate per CPU with one torch thread each (``--worker-threads``). With short fine-tunes
(``--option netadapt_ft_steps=10 --data synthetic``) scores depend on the thread count, so the
plans match only with ``--worker-threads`` equal to the local threads (see hwprune.executor).
Candidates are scored by the data-free fidelity evaluator on ``--n-inputs`` random images
(``--data synthetic`` scores adaptive-BN top-1 instead). Ray's workers are started (and import hwprune) before the clock starts: a one-off cost per
cluster, recorded as ``ray_worker_startup_s``. Before the searches, one candidate's score is timed on 2
torch threads and on 1 (``thread_scaling``: warm-up, median of 5): on a machine whose cores the
local run already uses, two 1-thread workers win at most 2 / that gain. Timings are only
meaningful on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _warm(shared, x):
    """A Ray task that imports what evaluations import, so workers start before the clock does."""
    import hwprune.prune  # noqa: F401

    return x


def thread_scaling(loaded, size: int, calib, evaluator, seed: int, reconstruct: bool, repeats: int = 5) -> dict:
    """What bounds Ray's ratio on a machine whose cores the local run already uses: one candidate's
    score (the uniform 60%-FLOPs plan, as the searches score it) timed on 2 torch threads and on 1,
    after a warm-up, median of ``repeats``. Two one-thread workers win at most 2 / gain."""
    import statistics

    import torch

    from hwprune.executor import EvalShared, evaluate_candidate
    from hwprune.prune import PruneConfig, make_context
    from hwprune.strategies.uniform import uniform

    ctx = make_context(loaded, PruneConfig(strategy="uniform", budget="60%flops", input_size=size, align=8,
                                           seed=seed, progress=False))
    item, shared = (ctx.plan_for(uniform(ctx)), reconstruct, 0), EvalShared(loaded.model, calib, evaluator, seed)
    before, out = torch.get_num_threads(), {"reconstruct": reconstruct, "repeats": repeats}
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            evaluate_candidate(shared, item)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                evaluate_candidate(shared, item)
                times.append(time.perf_counter() - t0)
            out[f"threads_{threads}_s"] = statistics.median(times)
    finally:
        torch.set_num_threads(before)
    out["gain"] = out["threads_1_s"] / out["threads_2_s"]
    out["ray_ceiling"] = 2 / out["gain"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny_resnet")
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--budget", default="60%flops", help="FLOPs budgets need no table (default 60%%flops)")
    p.add_argument("--strategies", default="evolution,netadapt")
    p.add_argument("--evo-pop", type=int, default=8)
    p.add_argument("--evo-gens", type=int, default=3)
    p.add_argument("--netadapt-initial", type=float, default=0.1)
    p.add_argument("--n-inputs", type=int, default=64, help="images each candidate is scored on (fidelity)")
    p.add_argument("--data", help="synthetic: score adaptive-BN top-1 on synthetic data instead")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a strategy option for both runs, e.g. netadapt_ft_steps=10 (short fine-tunes; needs --data)")
    p.add_argument("--num-cpus", type=int, default=2)
    p.add_argument("--worker-threads", type=int, default=1,
                   help="torch threads (and Ray CPUs) per Ray task; scores that fine-tune match the local run's only "
                        "when this equals the local torch threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write the results as JSON here")
    args = p.parse_args(argv)

    from hwprune.cli.cmd_prune import option_pairs
    from hwprune.errors import ConfigError

    try:
        extra = option_pairs(args.option)
    except ConfigError as e:
        p.error(str(e))
    import ray
    import torch

    from hwprune.models import load_model
    from hwprune.prune import PruneConfig, make_context, prune
    from hwprune.strategies._common import fidelity_evaluator

    loaded = load_model(args.model)
    size = args.input_size
    calib, evaluator = None, fidelity_evaluator(loaded.model, torch.randn(1, 3, size, size), n=args.n_inputs,
                                                seed=args.seed)
    if args.data:
        from hwprune.data import make_data
        from hwprune.evaluate import make_evaluator

        data = make_data(args.data, input_size=size, batch_size=64, seed=args.seed, n_train=512, n_val=256)
        calib, evaluator = data.calib, make_evaluator("adaptive-bn", data, original=loaded.model)
    scaling = [thread_scaling(loaded, size, calib, evaluator, args.seed, r) for r in ((False, True) if calib is not None
                                                                                    else (False,))]
    for sc in scaling:
        print(f"one candidate{' (with reconstruction)' if sc['reconstruct'] else ''}: {sc['threads_2_s']:.3f} s on 2 "
              f"torch threads, {sc['threads_1_s']:.3f} s on 1 ({sc['gain']:.2f}x): two 1-thread workers win at most "
              f"{sc['ray_ceiling']:.2f}x", flush=True)
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
    from hwprune.executor import make_executor

    t0 = time.perf_counter()
    make_executor("ray").map(_warm, list(range(4 * args.num_cpus)))  # worker start-up: once per cluster, not timed
    warm_s = time.perf_counter() - t0
    rows = []
    try:
        for name in args.strategies.split(","):
            opts = {"evo_pop": args.evo_pop, "evo_gens": args.evo_gens, "netadapt_initial": args.netadapt_initial,
                    **extra}
            res, secs = {}, {}
            for ex in ("local", "ray"):
                cfg = PruneConfig(strategy=name, budget=args.budget, options=opts, input_size=size, align=8,
                                  seed=args.seed, progress=False, executor=ex, worker_threads=args.worker_threads)
                t0 = time.perf_counter()
                res[ex] = prune(loaded, cfg, calib=calib, evaluator=evaluator)
                secs[ex] = time.perf_counter() - t0
            same = res["local"].plan.kept == res["ray"].plan.kept
            row = {"strategy": name, "evaluations": res["local"].report.evaluations, "local_s": secs["local"],
                   "ray_s": secs["ray"], "speedup": secs["local"] / secs["ray"], "same_plan": same}
            if name == "netadapt":  # every prunable group proposes once an iteration (fewer once at its minimum)
                row["proposals_per_iteration"] = len(make_context(loaded, cfg).graph.prunable)
            rows.append(row)
            print(f"{name}: {row['evaluations']} evaluations, local {secs['local']:.1f} s, ray {secs['ray']:.1f} s "
                  f"({row['speedup']:.2f}x), same plan: {same}", flush=True)
    finally:
        ray.shutdown()
    meta = {"model": args.model, "input_size": size, "budget": args.budget, "num_cpus": args.num_cpus,
            "evo_pop": args.evo_pop, "evo_gens": args.evo_gens, "options": extra,
            "worker_threads": args.worker_threads, "evaluator": "adaptive-bn" if args.data else
            f"fidelity on {args.n_inputs} random inputs", "torch_threads_local": torch.get_num_threads(),
            "ray_worker_startup_s": warm_s, "thread_scaling": scaling}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0 if all(r["same_plan"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
