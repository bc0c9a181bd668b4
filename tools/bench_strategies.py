"""Benchmark: strategies pruned to the same *measured* latency, accuracy vs measured latency.

tiny mode (default): tiny_resnet trained on the synthetic data (the shipped default model,
hwprune.train.load_default_model), a latency table of this machine (ORT CPU, 2 threads;
profiled unless --table), then for each seed: prune to --budget (0.5x) with uniform, a
FLOPs-targeted run (global magnitude pruning, the FLOPs budget bisected until the *measured*
latency matches the latency-targeted runs' budget), netadapt, halp, amc and evolution; every result
is measured side by side with the unpruned model (closed loop), evaluated (adaptive-BN top-1 on the
held-out split), briefly fine-tuned (--finetune-steps SGD steps, the same for all) and evaluated again.

resnet18 mode: torchvision resnet18 at 224 (random weights: accuracy is not meaningful, the point is
that every strategy meets 0.5x by measurement on the ORT table; the evaluator is the logit-fidelity
stand-in).

    nice -n 5 python tools/bench_strategies.py --out bench_out/strategies            # ~20 min
    nice -n 5 python tools/bench_strategies.py --quick --seeds 0                      # smoke, ~5 min
    nice -n 5 python tools/bench_strategies.py --mode resnet18 --seeds 0

Writes OUT/results.json and OUT/results.md (mean +- std over seeds per strategy).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from hwprune.jsonio import write_json  # noqa: E402
from hwprune.latency import LatencyTable  # noqa: E402
from hwprune.models import load_model  # noqa: E402
from hwprune.prune import PruneConfig, prune  # noqa: E402

LATENCY_STRATEGIES = ("uniform", "netadapt", "halp", "amc", "evolution")


def log(msg: str) -> None:
    print(f"[bench_strategies {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ model, data, evaluator
def make_evaluator(data):
    from hwprune.evaluate import make_evaluator as mk

    return mk("adaptive-bn", data), "adaptive-BN top-1 (EagleEye)"


def search_subset(data, batches: int):
    """The same data with validation cut to its first ``batches`` batches: candidates are ranked
    on this subset during the search (cheap), results are reported on the full held-out split."""
    import dataclasses
    import itertools

    return dataclasses.replace(data, val=list(itertools.islice(iter(data.val), batches)))


def default_model():
    """The shipped tiny_resnet trained on the synthetic data (hwprune/assets, tools/train_default.py)."""
    from hwprune.train import load_default_model

    loaded = load_model("tiny_resnet")
    loaded.model.load_state_dict(load_default_model().state_dict())
    loaded.model.eval()
    return loaded, "tiny_resnet trained on the synthetic data (shipped weights, tools/train_default.py)"


def get_table(loaded, args, size: int) -> str:
    if args.table:
        return args.table
    from hwprune.latency import ProfileConfig, profile

    path = os.path.join(args.out, f"table_{args.mode}.json")
    if os.path.exists(path):
        log(f"reusing table {path}")
        return path
    log(f"profiling {args.mode} into {path} (ort-cpu, {args.threads} threads)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # align 8: the grid the strategies search on (PruneConfig default), so the table holds their widths
        return profile(loaded, ProfileConfig(backend="ort-cpu", threads=args.threads, input_size=size, out=path, align=8))


# ------------------------------------------------------------------ runs
def options(args) -> dict:
    if args.mode == "resnet18" or args.quick:
        return {"amc_episodes": 10, "amc_warmup": 4, "evo_pop": 8, "evo_gens": 2, "netadapt_initial": 0.12,
                "halp_steps": 3, "sens_points": 3}
    return {"amc_episodes": 24, "amc_warmup": 8, "evo_pop": 10, "evo_gens": 4, "netadapt_initial": 0.08,
            "netadapt_decay": 0.96, "halp_steps": 4}


_ACC0: dict = {}


def _acc_before(final_eval, model):
    if final_eval is None:
        return None
    if id(model) not in _ACC0:
        _ACC0[id(model)] = final_eval(model)
    return _ACC0[id(model)]


def summarize_run(name: str, seed: int, res, final_eval, data, args, extra=None) -> dict:
    r = res.report
    lat = r.get("latency", {})
    row = {"strategy": name, "seed": seed, "baseline_ms": lat.get("baseline_ms"), "measured_ms": lat.get("measured_ms"),
           "measured_median_ms": lat.get("measured_median_ms"), "measured_p90_ms": lat.get("measured_p90_ms"),
           "measured_ratio": lat["measured_ms"] / lat["baseline_ms"] if lat.get("baseline_ms") else None,
           "predicted_ms": lat.get("predicted_ms"), "met_budget": lat.get("met_budget"),
           "flops_ratio": r["after"]["flops"] / r["before"]["flops"],
           "params_ratio": r["after"]["params"] / r["before"]["params"],
           "acc_before": _acc_before(final_eval, res.original),
           "acc_after": final_eval(res.model) if final_eval else r.get("accuracy", {}).get("after"),
           "acc_search_subset": r.get("accuracy", {}).get("after"),
           "search_s": r["search_seconds"], "evaluations": r["evaluations"],
           "re_searches": max(0, len(r.get("closed_loop", [])) - 1),
           "widths": {k: v["after"] for k, v in r["widths"].items()}, **(extra or {})}
    if args.finetune_steps and data is not None:
        from hwprune.strategies._common import short_finetune

        short_finetune(res.model, data.train, args.finetune_steps, lr=0.02, seed=seed)
        row["acc_finetuned"] = final_eval(res.model)
    return row


def flops_matched(loaded, args, seed, evaluator, table, ctx_kwargs) -> tuple:
    """Global magnitude pruning to a FLOPs budget, the FLOPs fraction bisected until the
    measured latency ratio matches the latency budget (what a FLOPs-only tool would do, tuned)."""
    from hwprune.budget import parse_budget
    from hwprune.latency.measure import measure_against_baseline
    from hwprune_deploy.runner import timing_ms

    goal = parse_budget(args.budget).fraction()
    lo, hi, best = 1.0, 100.0, None
    for _ in range(args.flops_steps):
        mid = (lo + hi) / 2
        res = prune(loaded, PruneConfig(strategy="global", budget=f"{mid:.2f}%flops", seed=seed, progress=False,
                                        min_width=args.min_width, align=args.align), **ctx_kwargs)
        # the estimator the closed loop checks the other strategies with
        t = measure_against_baseline("ort-cpu", {"baseline": loaded.model, "pruned": res.model},
                                     torch.randn(1, 3, args.size, args.size), args.threads)
        ratio = timing_ms(t["pruned"]) / timing_ms(t["baseline"])
        if ratio <= goal * 1.03:
            best, lo = (res, t, mid), mid
        else:
            hi = mid
    if best is None:
        best = (res, t, mid)
    res, t, pct = best
    from hwprune.prune_report import LatencyReport

    lat = res.report.latency = res.report.latency or LatencyReport()
    lat.baseline_ms, lat.measured_ms = timing_ms(t["baseline"]), timing_ms(t["pruned"])
    lat.measured_median_ms, lat.measured_p90_ms = t["pruned"].median_ms, t["pruned"].p90_ms
    lat.met_budget = timing_ms(t["pruned"]) <= goal * timing_ms(t["baseline"]) * 1.03
    if table is not None:
        from hwprune.prune import make_context

        ctx = make_context(loaded, PruneConfig(strategy="global", budget=args.budget, progress=False, align=args.align),
                           table=table)
        lat.predicted_ms = ctx.predict({k: v["after"] for k, v in res.report.widths.items()})
    return res, pct


def markdown(rows: list[dict], meta: dict) -> str:
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["strategy"], []).append(r)

    def ms(vals):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "-"
        return f"{statistics.mean(vals):.4f}" + (f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else "")

    lines = [f"Budget {meta['budget']} on {meta['mode']} ({meta['model_note']}); evaluator: {meta['evaluator']}; "
             f"seeds {meta['seeds']}; backend ort-cpu, {meta['threads']} threads; table {meta['table']}.", "",
             "| strategy | measured latency / unpruned | met budget (+3%) | FLOPs kept | params kept | "
             + ("top-1 after prune" if meta["mode"] == "tiny" else "logit fidelity after prune (cosine)")
             + (f" | top-1 after {meta.get('finetune_steps')}-step fine-tune" if meta.get("finetune_steps") else "") + " | search s |",
             "|---|---|---|---|---|---|" + ("---|" if meta.get("finetune_steps") else "") + "---|"]
    for name, rs in by.items():
        met = sum(bool(r["met_budget"]) for r in rs)
        lines.append(f"| {name} | {ms([r['measured_ratio'] for r in rs])} | {met}/{len(rs)} | "
                     f"{ms([r['flops_ratio'] for r in rs])} | {ms([r['params_ratio'] for r in rs])} | "
                     f"{ms([r['acc_after'] for r in rs])}"
                     + (f" | {ms([r.get('acc_finetuned') for r in rs])}" if meta.get("finetune_steps") else "")
                     + f" | {ms([r['search_s'] for r in rs])} |")
    acc0 = [r["acc_before"] for r in rows if r.get("acc_before") is not None]
    if acc0:
        lines += ["", f"Unpruned top-1: {acc0[0]:.4f}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("tiny", "resnet18"), default="tiny")
    ap.add_argument("--budget", default="0.5x")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", default="uniform,flops,netadapt,halp,amc,evolution")
    ap.add_argument("--table", help="latency table to use (default: profile into OUT)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--finetune-steps", type=int, default=40, help="SGD steps of fine-tune per result (0: off)")
    ap.add_argument("--search-val-batches", type=int, default=4, help="validation batches used to rank candidates")
    ap.add_argument("--flops-steps", type=int, default=6, help="bisection steps for the FLOPs-matched run")
    ap.add_argument("--min-width", type=int, default=8)
    ap.add_argument("--quick", action="store_true", help="fewer episodes/generations (smoke run)")
    ap.add_argument("--out", default="bench_out/strategies")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    if args.mode == "tiny":
        from hwprune.data import make_data

        args.size = 32
        data = make_data("synthetic", input_size=32, batch_size=64, seed=0)
        loaded, model_note = default_model()
        final_eval, ev_note = make_evaluator(data)
        evaluator, _ = make_evaluator(search_subset(data, args.search_val_batches))
        ev_note += f" (search on {args.search_val_batches} val batches, reported on the full val split)"
    else:
        from hwprune.strategies._common import fidelity_evaluator

        args.size = 224
        args.finetune_steps = 0
        data = None
        final_eval = None
        loaded = load_model("resnet18")
        model_note = "torchvision resnet18, random weights (accuracy not meaningful)"
        evaluator = fidelity_evaluator(loaded.model, torch.randn(1, 3, 224, 224), n=8)
        ev_note = "logit fidelity to the unpruned model (stand-in)"
    table = get_table(loaded, args, args.size)
    # search on the table's grid: widths it has measured (16 on an AVX-512 CPU's committed table)
    args.align = int(LatencyTable.load(table, check_device=False).protocol.get("align") or 8)
    calib = data.calib if data is not None else None
    rows = []
    names = [s.strip() for s in args.strategies.split(",") if s.strip()]
    for seed in args.seeds:
        for name in names:
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if name == "flops":
                    res, pct = flops_matched(loaded, args, seed, evaluator, table,
                                             {"calib": calib, "evaluator": evaluator})
                    extra = {"flops_budget_pct": pct}
                else:
                    res = prune(loaded, PruneConfig(strategy=name, budget=args.budget, seed=seed, options=options(args),
                                                    backend="ort-cpu", threads=args.threads, progress=True,
                                                    min_width=args.min_width, align=args.align),
                                calib=calib, table=table, evaluator=evaluator)
                    extra = {}
            res.original = loaded.model
            row = summarize_run(name, seed, res, final_eval, data, args, extra)
            rows.append(row)
            log(f"seed {seed} {name}: measured {row['measured_ratio']:.3f}x of unpruned (met {row['met_budget']}), "
                f"{'top-1' if args.mode == 'tiny' else 'logit fidelity'} {row['acc_after']:.4f}" + (f" -> {row['acc_finetuned']:.4f} fine-tuned" if 'acc_finetuned' in row else "")
                + f", {time.perf_counter() - t0:.0f} s")
            meta = {"mode": args.mode, "budget": args.budget, "seeds": args.seeds, "threads": args.threads, "align": args.align,
                    "table": table, "model_note": model_note, "evaluator": ev_note,
                    "finetune_steps": args.finetune_steps, "seconds": time.perf_counter() - t_start}
            write_json(os.path.join(args.out, "results.json"), {"meta": meta, "rows": rows})
            with open(os.path.join(args.out, "results.md"), "w") as f:
                f.write(markdown(rows, meta))
    print(open(os.path.join(args.out, "results.md")).read())
    log(f"done in {time.perf_counter() - t_start:.0f} s; wrote {args.out}/results.json and results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
