"""Several budgets, several devices (issue #20): the closed loop over every device this machine can
reach, and the one-row-per-device summary report.json and report.md show.

Each latency budget is bound to a table, and a table names how it was measured: backend,
precision, batch, ORT threads and worker mode (blocked or spinning), and the device fingerprint. A
device is *reachable* when that backend runs here and this machine's fingerprint is the table's
(two ORT CPU tables of this machine with 1 and 2 threads are two reachable devices; a table from a
Jetson is not). Reachable devices are measured side by side with the unpruned model exactly as the
single-budget loop does (:func:`hwprune.latency.measure.measure_against_baseline`, the table's own
settings). A share of the unpruned model (``0.6x@B``) on a table of another device whose backend
runs here is measured here as a proxy for that device's ratio, as one such budget is, and says so
(:func:`hwprune.service.how_measured`); the others are reported as predicted only. FLOPs and
params budgets are exact counts.

While a measured device misses its budget (beyond ``tolerance``), its target is tightened by
measured/goal -- from what the table said of the missed result, as the single loop does -- and the
strategy searches again against every budget, at most ``closed_loop_rounds`` times. A device that
misses a budget in ms while its unpruned model reads slow is measured again after a pause first
(:func:`hwprune.closed_loop.settle`).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional

from hwprune_deploy.runner import timing_ms

from .closed_loop import (CONFIRM_BAND, FP32_REF, LoopOutcome, drift_of, measure_int8_beside_fp32, provenance,
                          settle)
from .latency.measure import mean_timing, measure_against_baseline, table_spinning
from .plan import apply
from .search import Constraint, SearchContext, run_search
from .service import how_measured


def _settings(table) -> dict[str, Any]:
    return {"backend": table.backend, "threads": int(table.device.get("threads", 2)), "precision": table.precision,
            "batch": table.batch, "spinning": table_spinning(table)}


def _measure(c: Constraint, pair, x) -> dict:
    """``pair`` measured as ``c``'s table was; an int8 device whose budget is a share of its fp32
    unpruned model times that model too, beside them (under ``FP32_REF``)."""
    s = _settings(c.table)
    if c.fp32_fraction is not None:
        return measure_int8_beside_fp32(s["backend"], s["threads"], pair, x, pair["baseline"], s["spinning"])
    return measure_against_baseline(s["backend"], pair, x, s["threads"], s["precision"], spinning=s["spinning"])


def budget_text(row: dict[str, Any]) -> str:
    """A device row's budget as written, with what a share is of where that is not the obvious
    model (``0.6x of int8 unpruned``)."""
    return row["budget"] + (f" of {row['budget_of']}" if row.get("budget_of") else "")


def device_line(row: dict[str, Any]) -> str:
    """One device on the terminal: budget, predicted, measured (or how it was checked), met."""
    return (f"{row['device']}: budget {budget_text(row)}, predicted {row['predicted']:.4g} {row['unit']}, "
            + (f"measured {row['measured_ms']:.3f} ms (budget {row['budget_ms']:.3f} ms){_proxy(row)}"
               if row.get("measured_ms") is not None else row["checked"]) + f": {'met' if row['met'] else 'MISSED'}")


def _proxy(row: dict[str, Any]) -> str:
    return " on this machine, a proxy for that device" if row.get("proxy") else ""


def device_row(ctx: SearchContext, i: int, c: Constraint, widths: dict[str, int], tolerance: float,
               reading: Optional[dict] = None, why_not: Optional[str] = None,
               original_target: Optional[float] = None) -> dict[str, Any]:
    """One device of the report: budget, predicted, measured (None when not reachable), met. A
    reading with ``why_not`` was taken here as a proxy for the table's device (``row["proxy"]``)."""
    predicted = ctx.predict_on(i, widths)
    row: dict[str, Any] = {"device": c.label, "budget": c.budget.text, "unit": c.cost.unit,
                           "table": getattr(c.table, "path", None) if c.budget.is_latency else None,
                           "target": original_target if original_target is not None else c.target,
                           "final_target": ctx.target_of(i), "baseline_predicted": c.baseline,
                           "predicted": predicted, "predicted_fraction": predicted / c.baseline}
    if c.budget.is_latency and hasattr(c.table, "backend"):
        row.update(_settings(c.table))
        if row["precision"] == "int8" and c.budget.fraction() is not None:
            # --budget-ref int8: a share of the quantized model there; else of the fp32 one (measured beside it)
            row["budget_of"] = "fp32 unpruned" if c.fp32_fraction is not None else "int8 unpruned"
        if c.int8_ratio:
            row["int8_ratio"] = c.int8_ratio
    if reading is not None:
        b, p = timing_ms(reading["baseline"]), timing_ms(reading["pruned"])
        frac = c.budget.fraction()
        goal = frac * b if frac is not None else c.budget.value
        if FP32_REF in reading:  # judged against the fp32 unpruned model as timed beside the result
            row["fp32_baseline_ms"] = timing_ms(reading[FP32_REF])
            goal = c.fp32_fraction * row["fp32_baseline_ms"]
        row.update(baseline_ms=b, measured_ms=p, measured_median_ms=reading["pruned"].median_ms,
                   speedup_measured=b / max(p, 1e-12), budget_ms=goal, met=p <= goal * (1 + tolerance),
                   checked="measured")
        if why_not:
            row["proxy"] = why_not
    else:
        row.update(met=predicted <= c.target * (1 + 1e-9), measured_ms=None,
                   checked="exact count" if not c.budget.is_latency else "predicted only")
        if why_not:
            row["not_measured"] = why_not
    return row


def close_loop_devices(ctx: SearchContext, loaded, config, strategy: Callable, widths: dict[str, int],
                       table) -> LoopOutcome:
    """The closed loop of several budgets (module doc). ``out.steps`` has one entry per round with
    the per-device readings; ``out.devices`` the final rows."""
    x = ctx.example_input
    out = LoopOutcome(widths=widths, plan=None, pruned=None)  # type: ignore[arg-type]
    originals = [ctx.target_of(i) for i in range(len(ctx.constraints))]
    reach, drift, slow = {}, {}, set()
    for i, c in enumerate(ctx.constraints):
        if not c.budget.is_latency:
            continue
        if not config.backend:
            reach[i] = (False, "closed loop off (--backend none)")
        else:  # a share on another device whose backend runs here: measured here as a proxy (row["proxy"])
            how, why = how_measured(c.table, share=c.budget.fraction() is not None and c.fp32_fraction is None)
            reach[i] = (how is not None, why)
    while True:
        first = ctx.constraints[0].table  # the plan's table: the first budget's (bound or --table)
        out.plan = ctx.plan_for(out.widths, provenance={**provenance(ctx, config, getattr(first, "path", table)),
                                                        **_more(ctx)})
        out.pruned = apply(loaded.model, out.plan)
        pair = {"baseline": loaded.model, "pruned": out.pruned}
        rows, step = [], {"round": len(out.steps), "devices": []}
        for i, c in enumerate(ctx.constraints):
            ok, why = reach.get(i, (False, None))
            reading = None
            settled = None
            if ok:
                reading = _measure(c, pair, x)
                row = device_row(ctx, i, c, out.widths, config.tolerance, reading)
                if c.budget.fraction() is None and not row["met"] and i not in slow:  # a miss of ms, machine slow?
                    reading, settled = settle(lambda: _measure(c, pair, x), reading, c.baseline)
                    if settled and not settled["settled"]:
                        slow.add(i)  # stayed slow after the pauses: judged at that speed from then on
                    row = device_row(ctx, i, c, out.widths, config.tolerance, reading)
                if abs(row["measured_ms"] / row["budget_ms"] - (1 + config.tolerance)) <= CONFIRM_BAND:
                    again = _measure(c, pair, x)  # near the line: measure again and pool, as one device
                    reading = {k: mean_timing(reading[k], again[k]) for k in reading}
            row = device_row(ctx, i, c, out.widths, config.tolerance, reading, why, originals[i])
            if reading is not None and i not in drift and not why:  # the first reading of each device's unpruned
                # model, where it is that device (a proxy reading is this machine's, not meant to match the table)
                drift[i] = drift_of(c.baseline, row["baseline_ms"], ctx.model_id.get("spec", "M"), c.table, c.label)
            if drift.get(i):
                row["table_drift"] = drift[i]
            if settled:
                row["settle"] = settled
            rows.append(row)
            step["devices"].append({k: row.get(k) for k in ("device", "final_target", "predicted", "baseline_ms",
                                                            "measured_ms", "budget_ms", "met")})
            if settled:
                step["devices"][-1]["settle"] = settled
        out.steps.append(step)
        out.devices = rows
        missed = [(i, r) for i, r in enumerate(rows) if r["checked"] == "measured" and not r["met"]]
        if not missed or len(out.steps) > config.closed_loop_rounds:
            return out
        tightened = []
        for i, r in missed:
            new = min(ctx.target_of(i), r["predicted"]) * r["budget_ms"] / r["measured_ms"]
            if new < ctx.constraints[i].smallest:
                step["note"] = f"{r['device']}: tightened target below the smallest reachable cost; stopped"
                return out
            tightened.append(f"{r['device']}: {ctx.target_of(i):.3f} -> {new:.3f} ms")
            if i == 0:
                ctx.target = new
            else:
                ctx.constraints[i].target = new
        print("closed loop: measured over budget on " + ", ".join(r["device"] for _, r in missed)
              + "; re-searching with table targets tightened (" + "; ".join(tightened) + ")", file=sys.stderr)
        t1 = time.perf_counter()
        out.widths = run_search(strategy, ctx)
        out.search_seconds += time.perf_counter() - t1


def _more(ctx: SearchContext) -> dict[str, Any]:
    """Plan provenance of the other budgets (the first is the plan's ``budget``/``table``)."""
    return {"budgets": [c.to_dict() for c in ctx.constraints]}


def verdict(rows: list[dict[str, Any]], tolerance: float) -> str:
    """One line over every device: which were measured and met, which are predicted only."""
    parts = []
    for r in rows:
        if r["checked"] == "measured":
            parts.append(f"{r['device']}: measured {r['measured_ms']:.3f} ms "
                         f"{'meets' if r['met'] else 'MISSES'} {budget_text(r)} = {r['budget_ms']:.3f} ms{_proxy(r)}")
        else:
            parts.append(f"{r['device']}: {r['checked']} {r['predicted']:.4g} {r['unit']} "
                         f"{'meets' if r['met'] else 'MISSES'} {r['budget']}")
    return f"{verdict_head(rows, tolerance)}: " + "; ".join(parts)


def verdict_head(rows: list[dict[str, Any]], tolerance: float) -> str:
    """The verdict without its per-device parts (where the rows follow, one line each)."""
    head = "all budgets met" if all(r["met"] for r in rows) else "MISSED on " + ", ".join(
        r["device"] for r in rows if not r["met"])
    return f"{head} (+{100 * tolerance:.0f}% tolerance on measurements)"


def devices_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The per-device table of report.md."""
    L = ["| device | budget | predicted | measured | met |", "|---|---|---:|---:|---|"]
    for r in rows:
        unit = r["unit"]
        pred = (f"{r['predicted']:.3f} ms" if unit == "ms" else f"{r['predicted'] / 1e9:.4f} G{unit}"
                if unit == "flops" else f"{r['predicted'] / 1e6:.4f} M {unit}")
        meas = (f"{r['measured_ms']:.3f} ms (of {r['baseline_ms']:.3f}" + (", here: proxy" if r.get("proxy") else "")
                + ")" if r.get("measured_ms") is not None else r["checked"])
        budget = budget_text(r) + (f" = {r['budget_ms']:.3f} ms" if r.get("budget_ms") else "")
        L.append(f"| {r['device']} | {budget} | {pred} | {meas} | {'yes' if r['met'] else '**no**'} |")
    return L


def write_devices_markdown(path: str, report) -> None:
    """report.md of a prune with several budgets: the verdict and one row per device."""
    from .jsonio import atomic_write_bytes

    spec = (report.model or {}).get("spec", "?")
    L = [f"# hwprune prune: {spec}", "", f"Strategy **{report.strategy}**, seed {report.seed}, "
         f"{len(report.devices)} budgets, input {report.input_shape}.", "", f"Verdict: {report.verdict}.", "",
         "## Devices", "", *devices_markdown(report.devices), "",
         *([f"Warning: {w}" for w in report.warnings] + [""] if report.warnings else []),
         f"FLOPs {report.before['flops'] / 1e9:.4f} -> {report.after['flops'] / 1e9:.4f} G "
         f"({report.flops_reduction:.2f}x fewer); params {report.before['params'] / 1e6:.3f} -> "
         f"{report.after['params'] / 1e6:.3f} M ({report.params_reduction:.2f}x fewer).", ""]
    atomic_write_bytes(path, "\n".join(L).encode())
