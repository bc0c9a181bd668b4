"""The speedup report: ``report.md`` + ``report.json`` + PNGs from a prune result and a bench.

What a user needs to trust a pruned model: measured latency and throughput of baseline vs pruned
at each batch size (side by side, same run), the table's *predicted* latency next to the
measured one, FLOPs/params, accuracy before/after, the per-group width profile (kept fraction
per channel group, as in the Fisher-pruning paper's figures) and, with a table, where the time
goes per unit before and after.

    write_report("out/run", prune_report, bench_result, breakdown=..., accuracy=...)
    build_report("out/prune", bench_json="bench.json", table="t.json")   # from a prune folder
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Optional

from .jsonio import atomic_write_bytes, write_json

BASE_COLOR, PRUNED_COLOR, PRED_COLOR = "#7f8c9a", "#d9622b", "#3b7dd8"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ------------------------------------------------------------------------------ summary dict

def summarize_bench(bench: Mapping[str, Any]) -> dict:
    """Per batch: baseline/pruned median, p90, throughput and measured speedup (first two labels)."""
    labels = bench["labels"]
    a, b = labels[0], labels[1] if len(labels) > 1 else None
    per = {}
    for r in bench["rows"]:
        d = per.setdefault(str(r["batch"]), {})
        key = "baseline" if r["model"] == a else "pruned" if r["model"] == b else r["model"]
        d[key] = {k: r[k] for k in ("median_ms", "p10_ms", "p90_ms", "iqr_ms", "throughput") if k in r}
        if "predicted_ms" in r:
            d[key]["predicted_ms"] = r["predicted_ms"]
    for k, v in bench.get("speedup", {}).items():
        per[k]["speedup"] = v
    return per


def make_report_dict(prune_report: Mapping[str, Any], bench: Optional[Mapping[str, Any]] = None,
                     breakdown: Optional[Mapping[str, Mapping[str, float]]] = None,
                     accuracy: Optional[Mapping[str, Any]] = None, extra: Optional[Mapping[str, Any]] = None) -> dict:
    pr = dict(prune_report)
    before, after = pr.get("before", {}), pr.get("after", {})
    rep: dict[str, Any] = {
        "format": "hwprune-report", "version": 1,
        "model": pr.get("model"), "input_shape": pr.get("input_shape"),
        "strategy": (pr.get("config") or {}).get("strategy"), "budget": (pr.get("config") or {}).get("budget"),
        "flops": {"before": before.get("flops"), "after": after.get("flops"), "reduction": pr.get("flops_reduction")},
        "params": {"before": before.get("params"), "after": after.get("params"),
                   "reduction": pr.get("params_reduction")},
        "widths": pr.get("widths", {}),
        "accuracy": dict(accuracy) if accuracy else pr.get("accuracy"),
        "prune": {k: v for k, v in pr.items() if k not in ("widths",)},
    }
    more = list((pr.get("config") or {}).get("more_budgets") or ())
    if more:  # one model, several devices (issue #20): every budget as given, the first the run's device's
        rep["budgets"] = [rep["budget"], *more]
    if bench:
        rep["backend"] = {"name": bench.get("backend"), "threads": bench.get("threads"),
                          "precision": bench.get("precision"), "spinning": bool(bench.get("spinning")),
                          "fingerprint": bench.get("fingerprint"),
                          "protocol": bench.get("protocol")}
        rep["latency"] = summarize_bench(bench)
        t = bench.get("table") or {}
        if t:
            labels = bench["labels"]
            pm = t.get("predicted_ms", {})
            tb = str(t.get("batch"))
            meas = rep["latency"].get(tb, {})
            rep["predicted"] = {
                "table": t.get("path"), "batch": t.get("batch"),
                "baseline_ms": pm.get(labels[0]), "pruned_ms": pm.get(labels[1]) if len(labels) > 1 else None,
                "speedup": bench.get("predicted_speedup"),
                "measured_baseline_ms": meas.get("baseline", {}).get("median_ms"),
                "measured_pruned_ms": meas.get("pruned", {}).get("median_ms"),
                "measured_speedup": meas.get("speedup"), "notes": t.get("notes", []),
            }
            p = rep["predicted"]
            cl = pr.get("latency") or {}
            if cl.get("speedup_measured") and cl.get("backend") == bench.get("backend"):
                # the closed loop's reading: the table's own estimator (p10, side by side, >=4 passes),
                # before fine-tuning; the bench's is one interleaved pass, median -- on a busy machine
                # they can differ by 10% for a sub-millisecond model
                p["closed_loop_speedup"] = cl["speedup_measured"]
                p["closed_loop_statistic"] = cl.get("statistic")
            sp = (bench.get("ort_spinning") or {}).get("speedup") or {}
            if tb in sp:  # ORT's default spinning workers: what a default-options deployment gets
                p["spinning_speedup"] = sp[tb]
            if p["pruned_ms"] and p["measured_pruned_ms"]:
                p["pruned_error"] = p["pruned_ms"] / p["measured_pruned_ms"] - 1.0
    if breakdown:
        rep["breakdown_ms"] = {k: dict(v) for k, v in breakdown.items()}
    if extra:
        rep.update(extra)
    return rep


# ------------------------------------------------------------------------------ figures

def _bars(ax, batches, base, pruned, ylabel, title, err=None):
    import numpy as np

    x = np.arange(len(batches))
    w = 0.38
    kw = {}
    if err:
        kw = {"capsize": 3}
    ax.bar(x - w / 2, base, w, label="baseline", color=BASE_COLOR, yerr=err[0] if err else None, **kw)
    ax.bar(x + w / 2, pruned, w, label="pruned", color=PRUNED_COLOR, yerr=err[1] if err else None, **kw)
    ax.set_xticks(x, [f"batch {b}" for b in batches])
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9, frameon=False)


def plot_latency(ax_lat, ax_thr, rep: Mapping[str, Any]) -> None:
    """Latency *per image* (median / batch, so batch sizes share one axis) and throughput."""
    lat = rep["latency"]
    batches = list(lat)
    per = {k: [lat[b][k]["median_ms"] / int(b) for b in batches] for k in ("baseline", "pruned")}
    err = [[[(lat[b][k]["median_ms"] - lat[b][k]["p10_ms"]) / int(b) for b in batches],
            [(lat[b][k]["p90_ms"] - lat[b][k]["median_ms"]) / int(b) for b in batches]] for k in ("baseline", "pruned")]
    _bars(ax_lat, batches, per["baseline"], per["pruned"], "ms per image (median of batch; p10-p90)",
          "Measured latency (interleaved, same run)", err)
    for i, b in enumerate(batches):
        if "speedup" in lat[b]:
            top = max(per["baseline"][i] + err[0][1][i], per["pruned"][i] + err[1][1][i])
            ax_lat.annotate(f"{lat[b]['speedup']:.2f}x", (i, top), ha="center", va="bottom", fontsize=10,
                            fontweight="bold", xytext=(0, 4), textcoords="offset points")
    ax_lat.margins(y=0.18)
    if ax_thr is not None:
        _bars(ax_thr, batches, [lat[b]["baseline"]["throughput"] for b in batches],
              [lat[b]["pruned"]["throughput"] for b in batches], "images / s", "Measured throughput")


def plot_predicted(ax, rep: Mapping[str, Any]) -> bool:
    p = rep.get("predicted") or {}
    if not (p.get("baseline_ms") and p.get("pruned_ms") and p.get("measured_pruned_ms")):
        ax.text(0.5, 0.5, "no latency table: no prediction", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return False
    import numpy as np

    x = np.arange(2)
    w = 0.38
    meas = [p["measured_baseline_ms"], p["measured_pruned_ms"]]
    pred = [p["baseline_ms"], p["pruned_ms"]]
    ax.bar(x - w / 2, pred, w, label="predicted (table)", color=PRED_COLOR)
    ax.bar(x + w / 2, meas, w, label="measured", color=PRUNED_COLOR)
    ax.set_xticks(x, ["baseline", "pruned"])
    ax.set_ylabel(f"latency (ms), batch {p['batch']}")
    sp_m, sp_p = p.get("measured_speedup"), p.get("speedup")
    ax.set_title(f"Predicted vs measured: speedup {sp_p:.2f}x predicted, {sp_m:.2f}x measured"
                 if sp_m and sp_p else "Predicted vs measured", fontsize=11)
    for i in range(2):
        ax.annotate(f"{pred[i]:.2f}", (x[i] - w / 2, pred[i]), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{meas[i]:.2f}", (x[i] + w / 2, meas[i]), ha="center", va="bottom", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    ax.legend(fontsize=9, frameon=False, loc="upper right")
    return True


def plot_widths(ax, rep: Mapping[str, Any]) -> None:
    widths = rep.get("widths") or {}
    names = [k for k, v in widths.items() if v.get("before")]
    frac = [widths[k]["after"] / widths[k]["before"] for k in names]
    ax.bar(range(len(names)), frac, color=PRUNED_COLOR)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("kept fraction of channels")
    ax.set_title("Width profile (per channel group)", fontsize=11)
    ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=60, ha="right", fontsize=7)
    ax.grid(axis="y", alpha=0.3)


def _short(name: str, n: int = 22) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


def plot_breakdown(ax, rep: Mapping[str, Any], top: int = 16) -> bool:
    bd = rep.get("breakdown_ms") or {}
    if not bd.get("before"):
        ax.text(0.5, 0.5, "no latency table: no per-unit breakdown", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return False
    import numpy as np

    before, after = bd["before"], bd.get("after", {})
    layers = sorted(before, key=lambda k: -before[k])[:top][::-1]
    y = np.arange(len(layers))
    h = 0.4
    ax.barh(y + h / 2, [before[k] for k in layers], h, color=BASE_COLOR, label="baseline")
    ax.barh(y - h / 2, [after.get(k, 0.0) for k in layers], h, color=PRUNED_COLOR, label="pruned")
    ax.set_yticks(y, [_short(k, 26) for k in layers], fontsize=7)
    ax.set_xlabel("predicted unit latency (ms, table)")
    tb, ta = sum(before.values()), sum(after.values())
    ax.set_title(f"Where the time goes (top {len(layers)} units): {tb:.2f} -> {ta:.2f} ms", fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=9, frameon=False, loc="lower right")
    return True


def _save(fig, path: str) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def summary_figure(rep: Mapping[str, Any], path: str) -> str:
    """One 2x2 picture (latency, predicted vs measured, width profile, breakdown) -- the README figure."""
    plt = _plt()
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    if rep.get("latency"):
        plot_latency(axes[0, 0], None, rep)
    plot_predicted(axes[0, 1], rep)
    plot_widths(axes[1, 0], rep)
    plot_breakdown(axes[1, 1], rep)
    acc = rep.get("accuracy") or {}
    bits = [f"{(rep.get('model') or {}).get('spec', '?')}", f"strategy {rep.get('strategy')}"]
    if rep.get("budget"):
        bits.append(f"budget {rep['budget']}")
    if rep.get("flops", {}).get("reduction"):
        bits.append(f"FLOPs {rep['flops']['reduction']:.2f}x fewer")
    if acc.get("before") is not None and acc.get("after") is not None:
        final = acc.get("after_finetune")
        bits.append(f"top-1 {100 * acc['before']:.1f}% -> {100 * acc['after']:.1f}%"
                    + (f" -> {100 * final:.1f}% fine-tuned" if final is not None else ""))
    if rep.get("backend"):
        bits.append(f"{rep['backend']['name']}, {rep['backend']['threads']} threads")
    fig.suptitle("hwprune: " + " | ".join(bits), fontsize=12)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def write_figures(rep: Mapping[str, Any], out_dir: str) -> list[str]:
    plt = _plt()
    paths = []
    if rep.get("latency") and all("pruned" in v for v in rep["latency"].values()):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
        plot_latency(a1, a2, rep)
        fig.tight_layout()
        paths.append(os.path.join(out_dir, "latency_throughput.png"))
        _save(fig, paths[-1])
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    if plot_predicted(ax, rep):
        paths.append(os.path.join(out_dir, "predicted_vs_measured.png"))
        _save(fig, paths[-1])
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * len(rep.get("widths") or {}) + 2), 4))
    plot_widths(ax, rep)
    paths.append(os.path.join(out_dir, "width_profile.png"))
    _save(fig, paths[-1])
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(7, 5))
    if plot_breakdown(ax, rep):
        paths.append(os.path.join(out_dir, "latency_breakdown.png"))
        _save(fig, paths[-1])
    plt.close(fig)
    if rep.get("latency"):
        paths.append(summary_figure(rep, os.path.join(out_dir, "summary.png")))
    devices = (rep.get("prune") or {}).get("devices")
    if devices:  # several budgets: each device's share of its budget, measured or predicted
        from .search_plots import plot_devices

        paths.append(plot_devices(devices, os.path.join(out_dir, "devices.png")))
    return paths


# ------------------------------------------------------------------------------ markdown

def _fmt_int(v) -> str:
    if v is None:
        return "n/a"
    return f"{v / 1e9:.3f} G" if v >= 1e8 else f"{v / 1e6:.2f} M" if v >= 1e5 else f"{v:,}"


def to_markdown(rep: Mapping[str, Any], figures: list[str]) -> str:
    spec = (rep.get("model") or {}).get("spec", "?")
    L = [f"# hwprune report: {spec}", ""]
    be = rep.get("backend") or {}
    budget = (f", budgets **{', '.join(rep['budgets'])}**" if rep.get("budgets")
              else f", budget **{rep['budget']}**" if rep.get("budget") else "")
    L.append(f"Strategy **{rep.get('strategy')}**" + budget
             + (f"; measured on **{be.get('name')}** ({be.get('threads')} threads, {be.get('precision')}"
                + (", ORT workers spinning" if be.get("spinning") else "") + ")" if be else "")
             + (f", input {rep['input_shape']}" if rep.get("input_shape") else "") + ".")
    verdict = (rep.get("prune") or {}).get("verdict")
    if verdict:
        L += ["", f"Budget check by measurement (prune's closed loop): {verdict}."]
    for n in rep.get("notes", []) or []:
        L += ["", f"> {n}"]
    for w in (rep.get("prune") or {}).get("warnings") or []:  # the prune step's (table drift, a device not here)
        L += ["", f"> **warning:** {w}"]
    devices = (rep.get("prune") or {}).get("devices")
    if devices:  # several budgets (issue #20): one row per device
        from .devices import devices_markdown

        L += ["", "## Devices", "", *devices_markdown(devices)]
    L += ["", "## Summary", "", "| | baseline | pruned | change |", "|---|---:|---:|---:|"]
    f, p = rep.get("flops", {}), rep.get("params", {})
    L.append(f"| FLOPs | {_fmt_int(f.get('before'))} | {_fmt_int(f.get('after'))} | "
             f"{f.get('reduction') or 0:.2f}x fewer |")
    L.append(f"| params | {_fmt_int(p.get('before'))} | {_fmt_int(p.get('after'))} | "
             f"{p.get('reduction') or 0:.2f}x fewer |")
    acc = rep.get("accuracy") or {}
    if acc.get("before") is not None:
        a_after = acc.get("after_finetune", acc.get("after"))
        L.append(f"| top-1 ({acc.get('split', 'val')}) | {100 * acc['before']:.2f}% | "
                 + (f"{100 * a_after:.2f}% | {100 * (a_after - acc['before']):+.2f} pt |" if a_after is not None
                    else "n/a | |"))
        if acc.get("after_finetune") is not None and acc.get("after") is not None:
            L.append(f"| top-1 before fine-tune | | {100 * acc['after']:.2f}% | |")
    pr = rep.get("predicted") or {}
    if pr.get("pruned_ms"):
        L.append(f"| latency, batch {pr['batch']} (measured) | {pr['measured_baseline_ms']:.3f} ms | "
                 f"{pr['measured_pruned_ms']:.3f} ms | **{pr['measured_speedup']:.2f}x faster** |")
        L.append(f"| latency, batch {pr['batch']} (predicted by table) | {pr['baseline_ms']:.3f} ms | "
                 f"{pr['pruned_ms']:.3f} ms | {pr['speedup']:.2f}x predicted |")
    lat = rep.get("latency") or {}
    if lat:
        L += ["", "## Measured latency and throughput (interleaved, same run)", "",
              "| batch | baseline ms (p90) | pruned ms (p90) | baseline img/s | pruned img/s | speedup |",
              "|---:|---:|---:|---:|---:|---:|"]
        for b, v in lat.items():
            bb, pp = v.get("baseline", {}), v.get("pruned", {})
            if not pp:
                continue
            L.append(f"| {b} | {bb['median_ms']:.3f} ({bb['p90_ms']:.3f}) | {pp['median_ms']:.3f} ({pp['p90_ms']:.3f}) "
                     f"| {bb['throughput']:.1f} | {pp['throughput']:.1f} | **{v.get('speedup', 0):.2f}x** |")
    if pr:
        L += ["", "## Predicted vs measured", ""]
        if pr.get("pruned_ms"):
            L.append(f"Table `{pr.get('table')}` (batch {pr['batch']}): predicted speedup **{pr['speedup']:.2f}x**, "
                     f"measured **{pr['measured_speedup']:.2f}x**; pruned latency predicted {pr['pruned_ms']:.3f} ms vs "
                     f"measured {pr['measured_pruned_ms']:.3f} ms ({100 * pr.get('pruned_error', 0):+.1f}%).")
            if pr.get("closed_loop_speedup"):
                L.append(f"The prune step's closed loop measured **{pr['closed_loop_speedup']:.2f}x** with the table's own "
                         "estimator (p10 of repeats, pruned and unpruned side by side, mean of the fastest half of >= 4 "
                         "passes); the bench above is one interleaved pass (median), so the two differ by the machine's "
                         "noise between them.")
            if pr.get("spinning_speedup"):
                L.append(f"With ORT's default spinning worker threads (one session alive at a time, `hwprune bench "
                         f"--ort-spinning`) the speedup measured **{pr['spinning_speedup']:.2f}x**. The table, like "
                         "every other figure here, describes blocked workers; small models run faster spinning.")
        for n in pr.get("notes", []):
            L.append(f"- {n}")
    widths = rep.get("widths") or {}
    if widths:
        L += ["", "## Width profile", "", "| group | before | after | kept |", "|---|---:|---:|---:|"]
        for k, v in widths.items():
            if v.get("before"):
                L.append(f"| `{k}` | {v['before']} | {v['after']} | {v['after'] / v['before']:.0%} |")
    bd = rep.get("breakdown_ms") or {}
    if bd.get("before"):
        L += ["", "## Where the time goes (table prediction per unit)", "",
              "| unit | baseline ms | pruned ms | share before | share after |", "|---|---:|---:|---:|---:|"]
        tb, ta = sum(bd["before"].values()) or 1.0, sum(bd.get("after", {}).values()) or 1.0
        for k in sorted(bd["before"], key=lambda k: -bd["before"][k]):
            a = bd.get("after", {}).get(k, 0.0)
            L.append(f"| `{k}` | {bd['before'][k]:.3f} | {a:.3f} | {bd['before'][k] / tb:.0%} | {a / ta:.0%} |")
    if figures:
        L += ["", "## Figures", ""] + [f"![{os.path.basename(f)}]({os.path.basename(f)})" for f in figures]
    steps = rep.get("steps")
    if steps:
        L += ["", "## Steps", "", "| step | seconds | detail |", "|---|---:|---|"]
        for s in steps:
            L.append(f"| {s['name']} | {s['seconds']:.1f} | {s.get('detail', '')} |")
    if rep.get("commands"):
        L += ["", "## Reproduce", "", "```"] + list(rep["commands"]) + ["```"]
    return "\n".join(L) + "\n"


# ------------------------------------------------------------------------------ verbs

def write_report(out_dir: str, prune_report: Mapping[str, Any], bench: Optional[Mapping[str, Any]] = None,
                 breakdown: Optional[Mapping[str, Mapping[str, float]]] = None,
                 accuracy: Optional[Mapping[str, Any]] = None, extra: Optional[Mapping[str, Any]] = None) -> dict:
    """Write ``report.json``, PNGs and ``report.md`` into ``out_dir``; returns the report dict
    (with ``files``). The prune step's own report.json, if it lives in ``out_dir``, is kept as
    ``prune_report.json``."""
    os.makedirs(out_dir, exist_ok=True)
    rep = make_report_dict(prune_report, bench, breakdown, accuracy, extra)
    figures = write_figures(rep, out_dir)
    rep["files"] = {"report_md": os.path.join(out_dir, "report.md"), "report_json": os.path.join(out_dir, "report.json"),
                    "figures": figures}
    write_json(os.path.join(out_dir, "report.json"), rep)
    atomic_write_bytes(os.path.join(out_dir, "report.md"), to_markdown(rep, figures).encode())
    return rep


def table_breakdown(table, loaded_base, plan, input_size: int) -> Optional[dict]:
    """Per-unit predicted ms before and after ``plan`` (None when the table does not cover the
    model -- a TableError; any other error is a bug and surfaces)."""
    from .errors import TableError

    try:
        import torch

        from .graph import ChannelGraph

        x = torch.randn(int(getattr(table, "batch", 1)), 3, input_size, input_size)
        graph = ChannelGraph(loaded_base.model, x, ignore=plan.ignore if plan else ())
        cm = table.cost_model(graph)
        return {"before": cm.unit_costs({}), "after": cm.unit_costs(plan.widths if plan else {})}
    except TableError:
        return None


def build_report(prune_dir: str, bench_json: Optional[str] = None, table: Optional[str] = None,
                 out_dir: Optional[str] = None) -> dict:
    """Report from a ``hwprune prune`` folder (plan.json, pruned.pt, report.json) + a bench JSON."""
    from .bench import load_table
    from .models import build_model, LoadedModel

    with open(os.path.join(prune_dir, "report.json")) as f:
        pr = json.load(f)
    bench = None
    if bench_json:
        with open(bench_json) as f:
            bench = json.load(f)
    breakdown = None
    if table:
        from .plan import PruningPlan

        plan = PruningPlan.load(os.path.join(prune_dir, "plan.json"))
        base, size = build_model(plan.model_id["spec"], plan.model_id.get("kwargs"))
        breakdown = table_breakdown(load_table(table), LoadedModel(base.eval(), plan.model_id, size), plan,
                                    int(plan.input_shape[-1]))
    return write_report(out_dir or prune_dir, pr, bench, breakdown=breakdown, accuracy=pr.get("accuracy"))
