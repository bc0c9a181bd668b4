"""Figures for a pruning search: per-group width profile and the evolution Pareto front (Agg PNGs)."""
from __future__ import annotations

import os
from typing import Any


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str) -> str:
    """Lay out, write (making the folder) and close a figure; returns ``path``."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_width_profile(report: dict[str, Any], path: str) -> str:
    """Kept fraction per channel group in graph order (as in the Fisher-pruning paper's figure)."""
    plt = _plt()
    items = [(k, v["after"] / v["before"]) for k, v in report["widths"].items() if v["before"] > 1]
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(items) + 2), 3.6))
    ax.bar(range(len(items)), [f for _, f in items], color="#3b75af")
    ax.set_xticks(range(len(items)))
    ax.set_xticklabels([k for k, _ in items], rotation=70, ha="right", fontsize=7)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("kept fraction of channels")
    b = report.get("budget") or {}
    ax.set_title(f"{report.get('strategy')} @ {b.get('text', report['config'].get('ratio'))}: width profile")
    return save_figure(fig, path)


def plot_pareto(pareto: dict[str, Any], path: str) -> str:
    """Error vs predicted cost for the Pareto front; the budget line and the chosen member marked."""
    plt = _plt()
    front = pareto["front"]
    unit = pareto["objectives"][1]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot([m["cost"] for m in front], [1 - m["error"] for m in front], "o-", color="#3b75af", label="Pareto front")
    ch = [m for m in front if m.get("chosen")]
    if ch:
        ax.plot([ch[0]["cost"]], [1 - ch[0]["error"]], "*", ms=14, color="#d62728", label="chosen for budget")
    ax.axvline(pareto["target"], ls="--", color="gray", label="budget")
    ax.set_xlabel(f"predicted {unit}")
    ax.set_ylabel("accuracy (after reconstruction)" if pareto.get("reconstruct") else "accuracy")
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_devices(rows: list[dict[str, Any]], path: str) -> str:
    """One model, several budgets (hwprune.devices): per device, how much of its budget the pruned
    model uses -- measured (solid: green met, red missed) where this machine measured it, and
    what its table predicted or the exact count (hatched) -- against the budget line at 1."""
    from matplotlib.patches import Patch

    from .devices import budget_text

    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 0.9 + 0.8 * len(rows)))
    labels, right = [], 1.25
    for k, r in enumerate(rows):
        y = len(rows) - 1 - k
        measured = r.get("measured_ms") is not None and bool(r.get("budget_ms"))
        pred = r["predicted"] / r["target"] if r.get("target") else None
        if pred is not None:
            yp, h = (y + 0.18, 0.34) if measured else (y, 0.5)
            ax.barh(yp, pred, height=h, color="white", edgecolor="#7f7f7f", hatch="//")
            note = "" if measured else f" ({r['checked']})"
            ax.text(pred, yp, f" {pred:.2f}{note}", va="center", fontsize=8, color="#555555")
            right = max(right, 1.35 * pred)
        if measured:
            got = r["measured_ms"] / r["budget_ms"]
            ax.barh(y - 0.18, got, height=0.34, color="#2ca02c" if r["met"] else "#d62728")
            ax.text(got, y - 0.18, f" {got:.2f} ({r['measured_ms']:.3g} of {r['budget_ms']:.3g} ms)", va="center",
                    fontsize=8)
            right = max(right, 1.35 * got)
        labels.append(f"{r['device']}\n{budget_text(r)}")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels(labels[::-1], fontsize=7)
    ax.axvline(1.0, ls="--", color="black", lw=1)
    ax.legend([ax.lines[-1], Patch(facecolor="white", edgecolor="#7f7f7f", hatch="//"), Patch(color="#2ca02c"),
               Patch(color="#d62728")], ["budget", "predicted (table) / exact count", "measured, met",
                                         "measured, missed"], fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_xlim(0, right)
    ax.set_xlabel("share of the device's budget used (1 = the budget)")
    ax.set_title("one model, several devices", fontsize=10)
    return save_figure(fig, path)
