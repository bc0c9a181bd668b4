"""Does a latency table misprice plans by *where* they prune?

    python tools/placement_check.py --model tiny_resnet --table hwprune_run/latency_table.json
    python tools/placement_check.py --model resnet18 --table latency_tables/amd-epyc-2c-ort-cpu-fp32-b1.json

``hwprune validate --shapes`` times the same structured variants (:func:`hwprune.latency.validate.shape_variants`)
in the passes of a validation; this tool adds ``--plan`` (your own plans), ``--reps`` side-by-side
readings and the units' ratio per row, and does not time random variants.

``hwprune validate`` and ``tools/fidelity.py`` draw random variants: every group is cut by about
the same share, so a table whose error depends on which layers are cut (early, high-resolution
ones against late, wide ones) can score well on them while a search that prefers one side -- halp
keeps the layers the table says are cheap -- is mispriced every time. This tool builds structured
variants of the model: the *early* half of its channel groups (by where their layers are defined)
cut to each ``--cuts`` share with the late half kept, the reverse, and all groups cut alike, plus
any plans given with ``--plan`` (a plan.json of `hwprune prune`), and times each side by side
with the unpruned model (the closed loop's estimator, ``--reps`` times). Per variant it prints the
table's predicted latency ratio, the ratio of the raw units' sums (before calibration) and the
measured ratio, and their errors; ``--out`` writes them as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model spec hwprune loads")
    p.add_argument("--model-kwargs", default=None, help='JSON keyword arguments of the model builder, e.g. \'{"width": 16}\'')
    p.add_argument("--table", required=True, help="the latency table to check (ort-cpu)")
    p.add_argument("--input-size", type=int, default=None, help="default: the size the table profiled the model at")
    p.add_argument("--cuts", type=float, nargs="+", default=[0.5, 0.25], help="keep shares of the cut half")
    p.add_argument("--plan", action="append", default=[], help="a plan.json to add (repeatable)")
    p.add_argument("--reps", type=int, default=3, help="side-by-side measurements (median taken)")
    p.add_argument("--threads", type=int, default=None, help="default: the table's")
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    a = p.parse_args(argv)
    from hwprune.errors import HwpruneError

    try:
        return _run(a)
    except HwpruneError as e:  # a bad table, model or cut: say so, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(a) -> int:

    from hwprune.graph import ChannelGraph
    from hwprune.jsonio import write_json
    from hwprune.latency import LatencyTable
    from hwprune.latency.calibration import profiled_input_size
    from hwprune.latency.measure import build_variant, measure_against_baseline, table_spinning
    from hwprune.latency.validate import shape_variants
    from hwprune.models import load_model
    from hwprune.plan import PruningPlan
    from hwprune_deploy.runner import MODEL_PROTOCOL, timing_ms

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    table = LatencyTable.load(a.table)
    loaded = load_model(a.model, kwargs=json.loads(a.model_kwargs) if a.model_kwargs else None)
    size = a.input_size or profiled_input_size(table, loaded)
    x = torch.randn(1, 3, size, size)
    graph = ChannelGraph(loaded.model, x)
    cm = table.cost_model(graph)
    align = int(table.protocol.get("align", 8))
    threads = a.threads or int(table.device.get("threads", 2))
    min_width = int(table.protocol.get("min_width") or 8)
    plans: dict[str, dict[str, int]] = dict(shape_variants(loaded.model, graph, align, min_width, cuts=a.cuts))
    early = plans[f"early x{a.cuts[0]:g}"]
    late = plans[f"late x{a.cuts[0]:g}"]
    for path in a.plan:
        plans[path] = PruningPlan.load(path).widths
    models = {"baseline": loaded.model, **{k: build_variant(loaded.model, x, w) for k, w in plans.items()}}
    ratios: dict[str, list[float]] = {k: [] for k in plans}
    for r in range(a.reps):
        print(f"measuring {len(models)} models side by side, {r + 1}/{a.reps} ...", file=sys.stderr, flush=True)
        m = measure_against_baseline(table.backend, models, x, threads, spinning=table_spinning(table))
        base = timing_ms(m["baseline"])
        for k in plans:
            ratios[k].append(timing_ms(m[k]) / base)
    base_pred, base_units = cm.predict({}), cm.units_sum({})
    rows = []
    print(f"{a.model} @ {size}, table {a.table}; early groups: {len(early)}, late: {len(late)}")
    print("| variant | predicted ratio | units ratio | measured ratio | spread | error (table) | error (units) |")
    print("|---|---|---|---|---|---|---|")
    for k, w in plans.items():
        pr, ur = cm.predict(w) / base_pred, cm.units_sum(w) / base_units
        me = float(np.median(ratios[k]))
        row = {"variant": k, "widths": w, "predicted_ratio": pr, "units_ratio": ur, "measured_ratio": me,
               "measured": ratios[k], "error": pr / me - 1, "error_units": ur / me - 1}
        rows.append(row)
        print(f"| {k} | {pr:.3f} | {ur:.3f} | {me:.3f} | {np.ptp(ratios[k]):.3f} | {100 * row['error']:+.1f}% "
              f"| {100 * row['error_units']:+.1f}% |")
    if a.out:
        write_json(a.out, {"model": a.model, "table": a.table, "input_size": size, "threads": threads,
                           "protocol": {"model": MODEL_PROTOCOL.to_dict(), "reps": a.reps,
                                        "estimator": "measure_against_baseline: side by side with the unpruned "
                                                     "model, p10 of repeats, mean of the fastest half of >= 4 "
                                                     "passes (8 under 4 ms); median over reps"},
                           "early": list(early), "late": list(late), "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
