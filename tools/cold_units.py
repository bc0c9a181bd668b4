"""Would units timed with cold weights price a search's plan right? An offline check of the idea in
docs/latency.md ("Why late, wide layers cost more in the network").

For a model, its latency table and a plan (``plan.json`` of ``hwprune prune``/``run``), every unit
is re-timed at the unpruned and at the plan's widths *warm* (one session run over and over, as
tables time units), and every unit whose micro-model holds at least ``--min-mb`` of weights also
*cold* (R sessions of the same micro-model called round-robin, R so that their weights add up to
the model's own -- the reuse distance a layer sees in the network). Kernel time per run
from ORT's profiler (the unit's own nodes, as tables count them), median of the runs, ``--rounds``
rounds alternating warm and cold. Then the unpruned model and the plan are measured side by side
as the closed loop does, and the plan's ratio is printed as

* the table predicts it (units + residual curve),
* the raw units' sums give it, and
* the raw sums give it with each big unit's table price moved by its cold - warm difference, and
* the units re-timed now give it, all warm and with the big ones cold (no table involved: the
  table's prices were taken in another state of the machine).

    python tools/cold_units.py --model resnet18 --table T.json --plan out/plan.json --input-size 64

Nothing here changes a table.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tools/unit_check.py: the table and model set-up


def kernel_us(runs: list, calls: int, warmup: int = 3) -> float:
    """Median per-run kernel time (us) of ``calls`` calls sent round-robin to ``runs``
    (``_ProfiledRun`` s; each warmed ``warmup`` times first, those runs dropped)."""
    for r in runs:
        for _ in range(warmup):
            r()
    for i in range(calls):
        runs[i % len(runs)]()
    per = [t for r in runs for t in r.kernel_ms()[warmup:]]
    return 1000 * float(np.median(per))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--table", required=True)
    ap.add_argument("--plan", required=True, help="plan.json whose widths to price")
    ap.add_argument("--input-size", type=int, help="default: the resolution the table profiled the model at")
    ap.add_argument("--min-mb", type=float, default=1.0, help="units with fewer weights are left as the table has them")
    ap.add_argument("--max-replicas", type=int, default=24)
    ap.add_argument("--calls", type=int, default=240, help="timed calls per unit and mode, per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args(argv)

    from hwprune.latency.measure import build_variant, measure_against_baseline
    from hwprune.latency.micro import unit_contexts, unit_onnx
    from hwprune_deploy.runner import _ProfiledRun, timing_ms
    from unit_check import table_setup

    table, loaded, x, cm, threads, spin = table_setup(args.model, args.table, args.input_size)
    size = x.shape[-1]
    with open(args.plan) as f:
        plan_widths = {g: len(k) for g, k in json.load(f)["kept"].items()}
    model_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
    print(f"{args.model} @ {size}: weights {model_bytes / 1e6:.1f} MB; units with >= {args.min_mb} MB timed warm "
          f"and cold", file=sys.stderr)

    rows, sums = [], {}
    now_warm, now_cold = {"full": 0.0, "plan": 0.0}, {"full": 0.0, "plan": 0.0}  # every unit re-timed now
    for name, widths in (("full", {}), ("plan", plan_widths)):
        price = cm.unit_costs(widths)
        delta = 0.0
        for u, fam in cm.units:
            cin, cout = u.widths(widths)
            data = unit_onnx(fam.spec, cin, cout, **unit_contexts(fam.spec, True))
            big = len(data) >= args.min_mb * 1e6
            reps = max(1, min(args.max_replicas, math.ceil(model_bytes / len(data)))) if big else 1
            warm, cold = [], []
            for _ in range(args.rounds):
                warm.append(kernel_us([_ProfiledRun(data, threads, "all", spin)], args.calls))
                if big:
                    cold.append(kernel_us([_ProfiledRun(data, threads, "all", spin) for _ in range(reps)], args.calls))
            w = float(np.median(warm))
            c = float(np.median(cold)) if big else w
            delta += (c - w) / 1000
            now_warm[name] += w / 1000
            now_cold[name] += c / 1000
            rows.append({"variant": name, "layer": u.layer, "cin_cout": [cin, cout], "mb": len(data) / 1e6,
                         "replicas": reps, "table_us": 1000 * price[u.layer], "warm_us": w, "cold_us": c})
            print(f"  {name:4s} {u.layer:28s} ({cin:4d}, {cout:4d}) {len(data) / 1e6:5.1f} MB x{reps:<2d} table "
                  f"{1000 * price[u.layer]:7.1f} us  warm {w:7.1f}  cold {c:7.1f}", file=sys.stderr, flush=True)
        sums[name] = {"units_ms": cm.units_sum(widths), "cold_delta_ms": delta, "predicted_ms": cm.predict(widths),
                      "now_warm_ms": now_warm[name], "now_cold_ms": now_cold[name]}

    pruned = build_variant(loaded.model, x, plan_widths)
    t = measure_against_baseline("ort-cpu", {"baseline": loaded.model, "pruned": pruned}, x, threads,
                                 getattr(table, "precision", "fp32"), spinning=spin)
    measured = timing_ms(t["pruned"]) / timing_ms(t["baseline"])
    f, p = sums["full"], sums["plan"]
    res = {"table_predicted": p["predicted_ms"] / f["predicted_ms"], "raw_units": p["units_ms"] / f["units_ms"],
           "raw_units_cold": (p["units_ms"] + p["cold_delta_ms"]) / (f["units_ms"] + f["cold_delta_ms"]),
           "units_now_warm": p["now_warm_ms"] / f["now_warm_ms"], "units_now_cold": p["now_cold_ms"] / f["now_cold_ms"],
           "measured": measured}
    print("plan / unpruned: " + ", ".join(f"{k} {v:.3f}x" for k, v in res.items()))
    print(f"units' sum, unpruned: table {f['units_ms']:.3f} ms, with cold big units "
          f"{f['units_ms'] + f['cold_delta_ms']:.3f} ms; every unit re-timed now: warm {f['now_warm_ms']:.3f} ms, "
          f"cold big units {f['now_cold_ms']:.3f} ms; measured unpruned {timing_ms(t['baseline']):.3f} ms")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"ratios": res, "sums": sums, "rows": rows, "model_mb": model_bytes / 1e6, "input_size": size,
                       "threads": threads, "spinning": spin, "calls": args.calls, "rounds": args.rounds}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
