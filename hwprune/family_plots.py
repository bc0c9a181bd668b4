"""Figures for copycat families (:mod:`hwprune.family`): the width profile of each member, and
top-1 against measured latency for several families -- the two figures of Crowley et al., "Pruning
neural networks: is it time to nip it in the bud?" (NeurIPS 2018 CDNNRIA workshop), Figure 2(c)
and Figure 1, with the device's latency in place of the parameter count. matplotlib is imported
only when a figure is drawn."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .errors import ConfigError


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_width_profiles(summary: Mapping[str, Any], path: str) -> str:
    """One panel per family: kept width per group (graph order) for each member, with the full
    widths and the source plan's widths for reference -- the paper's Figure 2(c), per budget."""
    plt = _plt()
    groups = list(summary["groups"])
    fams = list(summary["families"])
    xs = list(range(len(groups)))
    fig, axes = plt.subplots(len(fams), 1, figsize=(max(6.0, 0.35 * len(groups) + 3), 3.2 * len(fams)),
                             squeeze=False, sharex=True)
    for ax, fam in zip(axes[:, 0], fams):
        ax.plot(xs, [summary["full_widths"][g] for g in groups], "k--", lw=1, label="unpruned")
        if fam != "uniform":
            ax.plot(xs, [summary["source_widths"][g] for g in groups], "k:", lw=1.5, label="source plan")
        for mb in (m for m in summary["members"] if m["family"] == fam):
            x_ms = f", {mb['predicted_x']:.2f}x ms" if mb.get("predicted_x") is not None else ""
            ax.plot(xs, [mb["widths"].get(g, summary["full_widths"][g]) for g in groups], marker="o", ms=3,
                    label=f"{mb['budget']} (m={mb['multiplier']:.2f}{x_ms})")
        ax.set_ylabel("kept channels")
        ax.set_title(f"{fam} family" + (" (copycat of the source plan)" if fam != "uniform" else " (linear rescale)"))
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    ax = axes[-1, 0]
    ax.set_xticks(xs)
    ax.set_xticklabels(groups if len(groups) <= 30 else [str(i) for i in xs], rotation=70, fontsize=6)
    ax.set_xlabel("channel group")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@dataclass(frozen=True)
class AccuracyPoint:
    """One trained network: its family (copycat, uniform, pruned-and-fine-tuned, ...), measured
    latency (ms) and top-1 (%)."""

    family: str
    latency_ms: float
    top1: float
    label: str = ""


def _as_point(p: Any) -> AccuracyPoint:
    if isinstance(p, AccuracyPoint):
        pt = p
    elif isinstance(p, Mapping):
        try:
            pt = AccuracyPoint(str(p["family"]), float(p["latency_ms"]), float(p["top1"]), str(p.get("label", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"accuracy point {dict(p)!r} needs family, latency_ms and top1 numbers ({e})") from None
    else:
        raise ConfigError(f"accuracy point {p!r} is not an AccuracyPoint or a dict with family, latency_ms, top1")
    if not (math.isfinite(pt.latency_ms) and pt.latency_ms > 0 and math.isfinite(pt.top1)):
        raise ConfigError(f"accuracy point {pt!r} needs a positive latency and a finite top-1")
    return pt


def plot_accuracy_vs_latency(points: Sequence[Any], path: str, title: str = "top-1 vs measured latency",
                             xlabel: str = "measured latency (ms)") -> str:
    """Top-1 against measured latency, one line per family (sorted by latency) -- the paper's
    Figure 1 with latency on the device for its x axis. ``points``: :class:`AccuracyPoint` or
    dicts ``{"family", "latency_ms", "top1", "label"?}``; ``xlabel`` names what ``latency_ms``
    holds when it is not a measurement (a table's prediction, MFLOPs). Returns ``path``."""
    pts = [_as_point(p) for p in points]
    if not pts:
        raise ConfigError("no accuracy points to plot; pass at least one {family, latency_ms, top1}")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for fam in dict.fromkeys(p.family for p in pts):
        mine = sorted((p for p in pts if p.family == fam), key=lambda p: p.latency_ms)
        ax.plot([p.latency_ms for p in mine], [p.top1 for p in mine], marker="o", label=fam)
        for p in mine:
            if p.label:
                ax.annotate(p.label, (p.latency_ms, p.top1), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("top-1 (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
