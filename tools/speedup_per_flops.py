"""What a FLOPs cut buys in measured latency: a latency-aware search against FLOPs-targeted pruning.

    python tools/speedup_per_flops.py --out bench_out/speedup_flops          # resnet50 + mobilenet_v2, ~15 min
    python tools/speedup_per_flops.py --models resnet18 --budgets 0.5 --out bench_out/sf_quick

Peers prune to a FLOPs (MACs) target and their users ask why the model is not faster:
Torch-Pruning's own ResNet-50 table shows 3.85x fewer MACs running only 2.19x faster, ViT-B/16
3.8x fewer MACs only 1.31x faster (ANCHORS). Per model and latency budget this tool prunes
(1) with ``halp`` to ``--budget Bx`` against the latency table, the closed loop checking it on
the device, and (2) with ``global`` magnitude pruning (one threshold across the network, as
Torch-Pruning's global pruning) and ``uniform`` (every group the same share, Torch-Pruning's
default) to the FLOPs share halp's result kept (``P%flops``): the same computation removed,
chosen without the device. All pruned models and the unpruned one are then
timed side by side in one run (the budget's estimator). Per row: FLOPs reduction, measured
speedup, and the speedup per FLOPs reduction; ``results.json``, ``results.md`` and
``speedup_flops.png`` in ``--out``. Channels are kept on the table's grid (``--align``) by both,
so the difference is where each cuts, not alignment. Accuracy is not measured here (random-init
torchvision models; no ImageNet offline): the row says what latency each way of removing the same
FLOPs buys.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

DEFAULT_TABLE = os.path.join(os.path.dirname(__file__), "..", "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet50,mobilenet_v2", help="comma-separated torchvision names in the table")
    p.add_argument("--budgets", default="0.7,0.5,0.35", help="latency budgets, fractions of the unpruned latency")
    p.add_argument("--flops-strategies", default="global,uniform",
                   help="FLOPs-targeted strategies cut to halp's FLOPs share (global: one threshold across the "
                        "network; uniform: every group the same share, Torch-Pruning's default)")
    p.add_argument("--table", default=DEFAULT_TABLE, help="ort-cpu latency table that holds the models")
    p.add_argument("--align", type=int, default=16, help="channel grid for both strategies (the table's: 16)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=20, help="timed repeats a pass in the final side-by-side run")
    p.add_argument("--reps", type=int, default=3,
                   help="side-by-side runs of all the models (mean and spread of each speedup reported)")
    p.add_argument("--out", required=True, help="folder for results.json, results.md, speedup_flops.png")
    a = p.parse_args(argv)
    from hwprune.errors import HwpruneError

    try:
        return _run(a)
    except HwpruneError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _prune(loaded, budget: str, strategy: str, a, table):
    from hwprune.prune import PruneConfig, prune

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        latency = budget.endswith("x")
        cfg = PruneConfig(strategy=strategy, budget=budget, align=a.align, progress=False, threads=a.threads,
                          backend="ort-cpu" if latency else None)
        return prune(loaded, cfg, table=table if latency else None)


def _run(a) -> int:
    import time

    import numpy as np
    import torch

    from hwprune.bench import BenchConfig, bench
    from hwprune.jsonio import write_json
    from hwprune.models import LoadedModel, load_model

    os.makedirs(a.out, exist_ok=True)
    budgets = [float(b) for b in a.budgets.split(",")]
    rows = []
    for name in a.models.split(","):
        t0 = time.time()
        torch.manual_seed(0)
        loaded = load_model(name)
        pruned = {}
        for b in budgets:
            h = _prune(loaded, f"{b}x", "halp", a, a.table)
            kept = h.report["after"]["flops"] / h.report["before"]["flops"]
            pruned[f"halp {b}x"] = (h, "halp", b, h.report["latency"]["met_budget"])
            for s in a.flops_strategies.split(","):
                g = _prune(loaded, f"{100 * kept:.3f}%flops", s, a, None)
                pruned[f"{s} {100 * kept:.1f}%flops (halp {b}x's)"] = (g, s, b, None)
            print(f"{name} {b}x: halp keeps {kept:.3f} of the FLOPs (closed loop "
                  f"{h.report['latency']['speedup_measured']:.2f}x); {a.flops_strategies} cut to the same", file=sys.stderr)
        models = {f"{name} (unpruned)": loaded}
        for label, (res, *_rest) in pruned.items():
            models[label] = LoadedModel(model=res.model, model_id=loaded.model_id, input_size=loaded.input_size,
                                        plan=res.plan)
        runs = [bench(models, BenchConfig(backend="ort-cpu", threads=a.threads, repeats=a.repeats), progress=False)
                for _ in range(a.reps)]
        timed = runs[0]
        ref = f"{name} (unpruned)"
        for label, (res, strategy, b, met) in pruned.items():
            sp = []
            for t in runs:
                by = {r["model"]: r for r in t["rows"]}
                sp.append((by[ref]["p10_ms"] / by[label]["p10_ms"], by[ref]["median_ms"] / by[label]["median_ms"]))
            flops_red = timed["models"][ref]["flops"] / timed["models"][label]["flops"]
            speedup = float(np.mean([x for x, _ in sp]))
            rows.append({"model": name, "budget": b, "strategy": strategy, "label": label,
                         "flops_reduction": flops_red,
                         "params_kept": timed["models"][label]["params"] / timed["models"][ref]["params"],
                         "speedup": speedup, "speedup_std": float(np.std([x for x, _ in sp], ddof=1)) if len(sp) > 1 else 0.0,
                         "speedups": [x for x, _ in sp], "speedup_median": float(np.mean([m for _, m in sp])),
                         "speedup_per_flops_reduction": speedup / flops_red, "closed_loop_met": met,
                         "widths": dict(res.plan.widths)})
        print(f"{name}: {time.time() - t0:.0f} s", file=sys.stderr)
        write_json(os.path.join(a.out, "partial.json"), rows)
    out = {"table": os.path.relpath(a.table), "threads": a.threads, "align": a.align, "reps": a.reps,
           "statistic": timed["statistic"],
           "fingerprint": timed["fingerprint"], "rows": rows}
    write_json(os.path.join(a.out, "results.json"), out)
    md = [f"| model | budget | strategy | FLOPs reduction | measured speedup, p10 (mean ± std of {a.reps} runs) "
          "| (median) | speedup / FLOPs reduction |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        md.append(f"| {r['model']} | {r['budget']}x | {r['label']} | {r['flops_reduction']:.2f}x | {r['speedup']:.2f}x "
                  f"± {r['speedup_std']:.2f} | {r['speedup_median']:.2f}x | {r['speedup_per_flops_reduction']:.2f} |")
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    _plot(out, os.path.join(a.out, "speedup_flops.png"))
    print(f"wrote {a.out}/results.json, results.md, speedup_flops.png")
    return 0


def _plot(out: dict, path: str) -> None:
    from hwprune.search_plots import _plt, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"halp": "#2a9d55", "global": "#c0392b", "uniform": "#3b75af"}
    markers = ["o", "s", "^", "D"]
    models = sorted({r["model"] for r in out["rows"]})
    for i, m in enumerate(models):
        for s in sorted({r["strategy"] for r in out["rows"]}):
            pts = sorted((r["flops_reduction"], r["speedup"], r["speedup_std"]) for r in out["rows"]
                         if r["model"] == m and r["strategy"] == s)
            ax.errorbar([x for x, _, _ in pts], [y for _, y, _ in pts], yerr=[e for _, _, e in pts], marker=markers[i % 4],
                        color=colors.get(s, "gray"), ls="-" if s == "halp" else "--", capsize=2, ms=5,
                        label=f"{m}, {'halp (latency table)' if s == 'halp' else s + ' (same FLOPs)'}")
    ax.plot([3.85], [2.19], marker="*", ms=12, color="gray", ls="none",
            label="Torch-Pruning's ResNet-50 (its README, its GPU)")
    hi = max([r["flops_reduction"] for r in out["rows"]] + [4.0])
    ax.plot([1, hi], [1, hi], color="lightgray", lw=1, label="speedup = FLOPs reduction")
    ax.set_xlabel("FLOPs reduction (x)")
    ax.set_ylabel(f"measured speedup, p10 (ort-cpu, {out['threads']} threads, batch 1)")
    ax.set_title("What a FLOPs cut buys: latency-aware vs FLOPs-targeted", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
