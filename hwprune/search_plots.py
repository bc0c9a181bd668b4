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
