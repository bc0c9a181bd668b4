"""PNG views of a table (latency vs width per unit: the staircase) and of a validation run."""
from __future__ import annotations

import os


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_table(table_path: str, out_dir: str, max_units: int = 40) -> list[str]:
    """One PNG per unit family: measured latency vs cout (one line per sampled cin)."""
    from .table import LatencyTable

    plt = _plt()
    t = LatencyTable.load(table_path, check_device=False)
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for i, (key, fam) in enumerate(list(t.families.items())[:max_units]):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        if fam.spec.tied:
            ax.plot(fam.cins, [fam.value(c, c) for c in fam.cins], "o-", drawstyle="default", label="cin = cout")
            ax.set_xlabel("channels")
        elif len(fam.couts) > 1:
            for cin in fam.cins:
                ax.plot(fam.couts, [fam.value(cin, c) for c in fam.couts], "o-", label=f"cin {cin}")
            ax.set_xlabel("cout")
        else:
            ax.plot(fam.cins, [fam.value(c, fam.couts[0]) for c in fam.cins], "o-", label=f"cout {fam.couts[0]}")
            ax.set_xlabel("cin")
        ax.set_ylabel(f"latency (ms, {t.protocol.get('statistic', 'p10')})")
        ax.set_title(key, fontsize=7)
        ax.legend(fontsize=6)
        fig.tight_layout()
        f = os.path.join(out_dir, f"unit_{i:02d}.png")
        fig.savefig(f, dpi=110)
        plt.close(fig)
        files.append(f)
    return files


def plot_validation(result: dict, out_dir: str) -> str:
    """Predicted vs measured scatter (latency ratio to the unpruned model) with +-5% / +-10% bands."""
    plt = _plt()
    os.makedirs(out_dir, exist_ok=True)
    pred = [v["predicted_ratio"] for v in result["variants"]]
    meas = [v["measured_ratio"] for v in result["variants"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    lo, hi = min(pred + meas) * 0.9, max(pred + meas) * 1.1
    ax.plot([lo, hi], [lo, hi], "k-", lw=1)
    for tol, style in ((0.05, "--"), (0.10, ":")):
        ax.plot([lo, hi], [lo * (1 + tol), hi * (1 + tol)], "k" + style, lw=0.8, label=f"+-{int(tol * 100)}%")
        ax.plot([lo, hi], [lo * (1 - tol), hi * (1 - tol)], "k" + style, lw=0.8)
    ax.scatter(meas, pred, s=14)
    ax.set_xlabel("measured latency / unpruned (side by side)")
    ax.set_ylabel("predicted latency / unpruned (table)")
    ax.set_title(f"{result['model']}: median |err| {100 * result['median_abs_error']:.1f}%, "
                 f"{100 * result['within_5pct']:.0f}% within 5%", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    f = os.path.join(out_dir, f"validate_{result['model'].replace('/', '_')}.png")
    fig.savefig(f, dpi=110)
    plt.close(fig)
    return f
