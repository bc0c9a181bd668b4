"""Replay a table's residual-curve fit on recorded fidelity runs: the fixed running median of 3
beside the window leave-one-out chooses (hwprune.latency.calibration.fit_calibration). Nothing
is timed: every number comes from the runs' JSON reports and their tables.

    python tools/calibration_cv.py                     # every run under docs/fidelity_runs/ and latency_tables/
    python tools/calibration_cv.py --json cv.json      # also the rows as JSON
    python tools/calibration_cv.py --runs 'docs/fidelity_runs/2026-12-05-*/*.json'

Two kinds of fit per model row of a fidelity report:

- ``profile``: the table's own calibration variants (timed when it was profiled), where the table
  is at hand -- the path the report names, or a ``table.json`` beside the report;
- ``recalibrated``: the calibration variants `hwprune validate` re-timed in the same passes as the
  validation variants (stored in the report).

Each fit predicts the report's validation variants from their units sums (the report's
``units_ratio``, or the table's units where the report predates it) as ratios to the unpruned
model, and is scored as `hwprune validate` scores it: share within +-5%, median and max |error|.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

DEFAULT_RUNS = ("docs/fidelity_runs/*/*.json", "latency_tables/fidelity*.json")


def score(fit: dict, units_full: float, val: list[tuple[float, float]]) -> dict:
    """Within +-5%, median and max |error| of ``fit``'s predicted ratios against measured ones."""
    from hwprune.latency.table import TableCostModel

    cm = TableCostModel([], {"calibration": fit, "units_full_ms": units_full})
    full = cm.from_units(units_full)
    errs = [abs(cm.from_units(s) / full / mr - 1) for s, mr in val]
    return {"within_5pct": sum(e <= 0.05 for e in errs) / len(errs), "median_abs_error": statistics.median(errs),
            "max_abs_error": max(errs)}


def compare(sums: dict, measured: dict, val: list[tuple[float, float]]) -> dict:
    from hwprune.latency.calibration import fit_calibration

    fixed, chosen = fit_calibration(sums, measured, window=3), fit_calibration(sums, measured)
    return {"window": chosen.get("window"), "loo_error": chosen.get("loo_error"),
            "fixed3": score(fixed, sums["full"], val), "chosen": score(chosen, sums["full"], val)}


def _table_for(report_path: str, report: dict):
    for p in (report.get("table") or "", os.path.join(os.path.dirname(report_path), "table.json")):
        for q in (p, os.path.join(ROOT, p)):
            if p and os.path.isfile(q):
                return q
    return None


def _units_sums(table, result: dict, batch: int) -> list[float]:
    """Each validation variant's units sum: from the report where it records ``units_ratio``,
    else from the table's units (a model graph is built; nothing is timed)."""
    import torch

    from hwprune.graph import ChannelGraph
    from hwprune.models import load_model

    size = result["input_size"]
    graph = ChannelGraph(load_model(result["model"]).model, torch.randn(batch, 3, size, size))
    cm = table.cost_model(graph)
    return [cm.units_sum(v["widths"]) for v in result["variants"]]


def replay(report_path: str) -> list[dict]:
    from hwprune.latency import LatencyTable

    report = json.load(open(report_path))
    if not isinstance(report, dict) or "results" not in report:
        return []
    rel = os.path.relpath(report_path, ROOT)
    table_path = _table_for(report_path, report)
    table = LatencyTable.load(table_path, check_device=False) if table_path else None
    rows = []
    for r in report["results"]:
        mr = [v["measured_ratio"] for v in r["variants"]]
        rec = None
        if table is not None:
            rec = next((m for m in table.models.values() if m.get("spec") == r["model"]
                        and m["input_shape"][-1] == r["input_size"]), None)
        if rec is not None and "variants" in (rec.get("calibration") or {}):
            u_full = rec["units_full_ms"]
            if "units_ratio" in r["variants"][0]:
                sums_v = [v["units_ratio"] * u_full for v in r["variants"]]
            else:
                sums_v = _units_sums(table, r, int(report.get("batch", 1)))
            cal = rec["calibration"]["variants"]
            sums = {"full": u_full, **{k: v["units_ms"] for k, v in cal.items()}}
            meas = {"full": rec["full_ms"], **{k: v["measured_ms"] for k, v in cal.items()}}
            rows.append({"report": rel, "model": r["model"], "fit": "profile",
                         **compare(sums, meas, list(zip(sums_v, mr)))})
        cal = ((r.get("recalibrated") or {}).get("calibration") or {})
        if "variants" in cal and "units_ratio" in r["variants"][0]:
            u_full = cal["correction"]["units_ms"][-1]  # the unpruned model has the largest units sum
            sums = {"full": u_full, **{k: v["units_ms"] for k, v in cal["variants"].items()}}
            meas = {"full": r["reference_ms"], **{k: v["measured_ms"] for k, v in cal["variants"].items()}}
            rows.append({"report": rel, "model": r["model"], "fit": "recalibrated",
                         **compare(sums, meas, [(v["units_ratio"] * u_full, m) for v, m in zip(r["variants"], mr)])})
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| run | model | fit | window | within 5%: 3 -> chosen | median abs err | max abs err |",
           "|---|---|---|---|---|---|---|"]
    for w in rows:
        a, b = w["fixed3"], w["chosen"]
        run = os.path.dirname(w["report"]).split("/")[-1] + "/" + os.path.basename(w["report"])[:-5]
        out.append(f"| {run} | {w['model']} | {w['fit']} | {w['window']} | {a['within_5pct']:.0%} -> "
                   f"{b['within_5pct']:.0%} | {a['median_abs_error']:.1%} -> {b['median_abs_error']:.1%} | "
                   f"{a['max_abs_error']:.1%} -> {b['max_abs_error']:.1%} |")
    gained = sum(w["chosen"]["within_5pct"] > w["fixed3"]["within_5pct"] + 1e-9 for w in rows)
    lost = sum(w["chosen"]["within_5pct"] < w["fixed3"]["within_5pct"] - 1e-9 for w in rows)
    mean = lambda k, key: statistics.mean(w[k][key] for w in rows)  # noqa: E731
    out.append("")
    out.append(f"{len(rows)} fits: within +-5% rose in {gained}, fell in {lost}, equal in {len(rows) - gained - lost}; "
               f"mean within +-5% {mean('fixed3', 'within_5pct'):.1%} -> {mean('chosen', 'within_5pct'):.1%}, "
               f"mean max |error| {mean('fixed3', 'max_abs_error'):.1%} -> {mean('chosen', 'max_abs_error'):.1%}.")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", action="append", help="glob of fidelity report JSONs, relative to the repository "
                    f"(repeatable; default: {', '.join(DEFAULT_RUNS)})")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args(argv)
    paths = sorted({p for g in (args.runs or DEFAULT_RUNS) for p in glob.glob(os.path.join(ROOT, g))})
    if not paths:
        ap.error(f"no report matches {args.runs}: give --runs a glob of fidelity JSONs (tools/fidelity.py --json)")
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p in paths:
            rows += replay(p)
    if not rows:
        ap.error("none of the reports holds calibration variants to replay (reports before 2026-12-03 do not)")
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
