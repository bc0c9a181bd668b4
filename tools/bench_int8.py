"""Prune for int8 vs prune for fp32, to one latency budget (issue #19 item 5).

Per model (default resnet18, resnet50, mobilenet_v2 at 224, batch 1, ORT CPU, 2 threads):
profile an fp32 and an int8 table, search widths with the same strategy for the same budget on
each (the int8 search's budget is the same share of the *fp32* unpruned model, turned into a share
of the int8 one by a side-by-side measurement: hwprune.int8_budget), then time fp32 unpruned, int8
unpruned, int8 pruned (int8 search) and fp32 pruned (fp32 search), all side by side, and list the
widths each search chose.

    python tools/bench_int8.py --models resnet18 --budget 0.5x --quick --out latency_tables/bench_int8

writes OUT.json and OUT.md. ``--quick``: quick tables (2 points per axis, no calibration variants):
minutes instead of tens of minutes, coarser predictions; the measured speedups are measured either way.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hwprune.bench import BenchConfig, measure_fp32_int8  # noqa: E402
from hwprune.latency import ProfileConfig, profile  # noqa: E402
from hwprune.models import load_model  # noqa: E402
from hwprune.prune import PruneConfig, prune  # noqa: E402
from hwprune_deploy.quant import has_vnni, scheme  # noqa: E402
from hwprune_deploy.runner import timing_ms  # noqa: E402


def one_model(name: str, args) -> dict:
    loaded = load_model(name)
    # --align None: each precision on its own grid, as hwprune profile and prune decide it (int8 on x86 wants 16
    # channels where fp32 on AVX2 wants 8: docs/latency.md, "The width grid is the device's")
    tables, t0 = {}, time.perf_counter()
    for prec in ("fp32", "int8"):
        path = os.path.join(args.tables, f"{name}-{args.size}-{prec}.json")
        if not os.path.exists(path):
            mk = ProfileConfig.quick if args.quick else ProfileConfig
            profile(loaded, mk(precision=prec, input_size=args.size, threads=args.threads, align=args.align, out=path),
                    progress=False)
        tables[prec] = path
    profile_s = time.perf_counter() - t0
    res = {}
    for prec in ("fp32", "int8"):
        cfg = PruneConfig(strategy=args.strategy, budget=args.budget, precision=prec, backend=None, align=args.align,
                          input_size=args.size, threads=args.threads, progress=False)
        res[prec] = prune(loaded, cfg, table=tables[prec])
    x = torch.randn(1, 3, args.size, args.size)
    models = {"unpruned": loaded.model, "int8-search": res["int8"].model, "fp32-search": res["fp32"].model}
    t, _ = measure_fp32_int8(BenchConfig(threads=args.threads, repeats=args.repeats, warmup=3, min_repeat_ms=20.0),
                             models, x, reference="unpruned")
    ref = timing_ms(t["unpruned (fp32)"])
    ms = {k: timing_ms(v) for k, v in t.items()}
    groups = res["fp32"].report.widths
    align = {prec: r.report.config["align"] for prec, r in res.items()}
    return {"model": name, "profile_s": profile_s, "tables": tables, "align": align, "ms": ms,
            "speedup": {k: ref / v for k, v in ms.items()},
            "int8": res["int8"].report.config.get("int8"),
            "widths": {g: {"full": w["before"], "fp32_search": w["after"],
                           "int8_search": res["int8"].report.widths[g]["after"]} for g, w in groups.items()}}


def markdown(rows: list[dict], args, meta: dict) -> str:
    from hwprune_deploy.ort import cpu_detail

    detail = cpu_detail(meta)  # meta records the fingerprint's cpu_id and isa
    L = [f"# int8 vs fp32 pruning to {args.budget} of the fp32 unpruned latency", "",
         f"{meta['cpu']}" + (f" ({detail})" if detail else "")
         + f", {args.threads} threads, batch 1, {args.size} px, strategy {args.strategy}, "
         f"{'quick tables' if args.quick else 'full tables'}; channel grid "
         f"{', '.join(sorted({f'{p} {a}' for r in rows for p, a in r['align'].items()}))}; int8: {meta['scheme']}. "
         f"VNNI: {meta['vnni']}. {args.note}", "",
         "| model | fp32 unpruned ms | int8 unpruned | int8 pruned (int8 search) | fp32 pruned (fp32 search) | "
         "int8, fp32-searched widths |", "|---|---|---|---|---|---|"]
    for r in rows:
        s, m = r["speedup"], r["ms"]
        L.append(f"| {r['model']} | {m['unpruned (fp32)']:.2f} | {s['unpruned (int8)']:.2f}x | "
                 f"{s['int8-search (int8)']:.2f}x | {s['fp32-search (fp32)']:.2f}x | {s['fp32-search (int8)']:.2f}x |")
    for r in rows:
        diff = {g: w for g, w in r["widths"].items() if w["fp32_search"] != w["int8_search"]}
        L += ["", f"## {r['model']}: widths where the two searches differ ({len(diff)} of {len(r['widths'])} groups)",
              "", "| group | full | fp32 search | int8 search |", "|---|---|---|---|"]
        L += [f"| {g} | {w['full']} | {w['fp32_search']} | {w['int8_search']} |" for g, w in diff.items()]
        if r.get("int8") and r["int8"].get("note"):
            L += ["", f"int8 budget: {r['int8']['note']}"]
    return "\n".join(L) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,resnet50,mobilenet_v2")
    p.add_argument("--budget", default="0.5x")
    p.add_argument("--strategy", default="halp")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--align", type=int, default=None,
                   help="channel grid of both searches (default: each precision's grid on this CPU, as hwprune prune)")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--quick", action="store_true", help="quick tables (2 points per axis, no calibration variants)")
    p.add_argument("--tables", default="latency_tables/bench_int8", help="folder for the tables (reused when there)")
    p.add_argument("--out", default="latency_tables/bench_int8", help="OUT.json and OUT.md")
    p.add_argument("--note", default="", help="a sentence for the report (e.g. the machine was busy)")
    args = p.parse_args()
    os.makedirs(args.tables, exist_ok=True)
    from hwprune_deploy.ort import cpu_fingerprint

    fp = cpu_fingerprint()
    meta = {"cpu": fp.get("cpu") or platform.processor(), "cpu_id": fp.get("cpu_id", ""), "isa": fp.get("isa", []),
            "vnni": has_vnni(), "scheme": scheme()}
    rows = []
    from hwprune.errors import BudgetError

    for name in args.models.split(","):
        try:
            rows.append(one_model(name.strip(), args))
        except BudgetError as e:  # a table whose floor is above the budget: say so, go on with the next model
            print(f"{name}: {e}", file=sys.stderr, flush=True)
            continue
        print(json.dumps({k: rows[-1][k] for k in ("model", "speedup")}), flush=True)
    with open(args.out + ".json", "w") as f:
        json.dump({"args": vars(args), "meta": meta, "rows": rows}, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(markdown(rows, args, meta))
    print(f"wrote {args.out}.json, {args.out}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
