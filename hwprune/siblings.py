"""Stock siblings at the pruned model's latency: is pruning worth it on this device?

A pruned network is worth shipping only if it beats the stock models that already run at its
latency. Torch-Pruning's own table is the warning (``../shared/ANCHORS.md``): ViT-B/16 pruned
3.8x in MACs runs at 3.99 ms / 80.19% top-1, while the stock ViT-B/32 runs at 3.87 ms / 80.68%;
the pruning lost to the family's smaller sibling. :func:`siblings` measures the reference model,
the pruned one and the stock candidates **side by side on the device** (the budget's estimator,
:data:`hwprune.bench.BUDGET_STATISTIC`), and lists the ImageNet-1K top-1 torchvision publishes for
each candidate (read offline from the weights' metadata; no download): the accuracy a pruned model
at that latency has to beat.

    res = siblings(load_model("resnet50"), SiblingsConfig(budget="0.5x"))
    res["best_within"]  # the most accurate stock sibling that runs within 0.5x of resnet50

Candidates are, by default, the torchvision models of the reference's family (ResNet with ResNeXt
and Wide ResNet, RegNet X and Y, EfficientNet v1 and v2, ...) that publish fewer GFLOPs than it;
``scope="all"`` takes every torchvision classifier under the reference's GFLOPs, and ``names``
any specs at all (timm, zoo, files: timed, without a published top-1).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence


from .errors import ConfigError

#: leading name word -> family, where torchvision splits one design across names
_FAMILY_ALIASES = {"resnext": "resnet", "wide": "resnet"}
#: the budget's tolerance: a sibling within the line + this is "at the line", as a budget is met
TOLERANCE = 0.03


def family_of(name: str) -> str:
    """A torchvision classifier's family: its leading word (``resnet50`` -> ``resnet``,
    ``regnet_y_400mf`` -> ``regnet``, ``mobilenet_v3_small`` -> ``mobilenet``), ResNeXt and
    Wide ResNet counted as ResNet."""
    m = re.match(r"[a-z]+", name)
    word = m.group(0) if m else name
    return _FAMILY_ALIASES.get(word, word)


def _crop(weights) -> Optional[int]:
    try:
        size = weights.transforms().crop_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)
    except Exception:  # noqa: BLE001 -- weights without an image transform: no resolution to report
        return None


def published(name: str, input_size: Optional[int] = None) -> Optional[dict[str, Any]]:
    """What torchvision publishes for ``name``'s ImageNet-1K weights (offline, from their
    metadata): the best top-1 among the weights evaluated at ``input_size`` (else the best at any
    resolution, with that resolution), GFLOPs and parameters, and under ``all`` every set of
    weights (torchvision's V1 and V2 training recipes differ by up to 5 points). None for a name
    torchvision does not know or without ImageNet-1K metrics."""
    try:
        from torchvision.models import get_model_weights

        weights = list(get_model_weights(name))
    except (ValueError, KeyError):
        return None
    rows = []
    for w in weights:
        acc = ((w.meta.get("_metrics") or {}).get("ImageNet-1K") or {}).get("acc@1")
        if acc is not None:
            rows.append({"top1": float(acc), "weights": f"{type(w).__name__}.{w.name}", "crop": _crop(w),
                         "gflops": w.meta.get("_ops"), "params": w.meta.get("num_params")})
    if not rows:
        return None
    same = [r for r in rows if input_size is None or r["crop"] == input_size]
    best = max(same or rows, key=lambda r: r["top1"])
    return {**best, "at_input_size": bool(same),
            "all": [{k: r[k] for k in ("weights", "top1", "crop")} for r in rows]}  # every recipe, e.g. V1 and V2


def candidates(reference: str, scope: str = "family") -> list[str]:
    """The torchvision classifiers that publish fewer GFLOPs than ``reference`` (a torchvision
    name): of its family (``scope="family"``) or all of them (``"all"``), cheapest first."""
    from .models import torchvision_classifiers

    if scope not in ("family", "all"):
        raise ConfigError(f"siblings scope {scope!r}: use 'family' or 'all', or name the candidates")
    ref = published(reference)
    if ref is None or ref.get("gflops") is None:
        raise ConfigError(f"{reference!r} is not a torchvision classifier with published ImageNet-1K figures: "
                          "name the stock models to compare with (--candidates resnet18,mobilenet_v3_large)")
    out = []
    for name in torchvision_classifiers():
        if name == reference or (scope == "family" and family_of(name) != family_of(reference)):
            continue
        p = published(name)
        if p is not None and p.get("gflops") is not None and p["gflops"] < ref["gflops"]:
            out.append((p["gflops"], name))
    return [n for _, n in sorted(out)]


@dataclass
class SiblingsConfig:
    """What :func:`siblings` compares and how it measures.

    budget: the line, relative to the reference's measured latency (``0.5x``, ``2speedup``) or
        absolute (``12ms``); without it (and without a pruned model) every candidate is listed and
        none is judged.
    scope: ``family`` or ``all`` torchvision classifiers under the reference's GFLOPs.
    names: the candidates, given explicitly (any ``--model`` spec); replaces ``scope``.
    """

    budget: Optional[str] = None
    scope: str = "family"
    names: Sequence[str] = ()
    backend: str = "ort-cpu"
    threads: int = 2
    batch: int = 1
    input_size: Optional[int] = None
    warmup: int = 5
    repeats: int = 20
    spinning: bool = False
    bench_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.budget is not None:
            from .budget import parse_budget

            b = parse_budget(self.budget)
            if not b.is_latency:
                raise ConfigError(f"siblings compares latency: budget {self.budget!r} is a {b.unit} budget; give a "
                                  "latency one (0.5x, 2speedup, 12ms)")


def _check_forward(models: dict, size: int) -> None:
    """One forward pass of each model at ``size`` px, so a model that cannot take that input
    (torchvision's ViTs take 224 px only) is named with the fix before minutes of timing."""
    import torch

    x = torch.zeros(1, 3, size, size)
    for label, m in models.items():
        try:
            with torch.no_grad():
                m.model.eval()(x)
        except Exception as e:  # noqa: BLE001 -- the model's own complaint, shown whole
            raise ConfigError(f"{label} cannot run at {size}x{size} px ({type(e).__name__}: "
                              f"{str(e).strip().splitlines()[0][:200] if str(e).strip() else 'no message'}): pass an "
                              f"--input-size it takes, or leave it out of --candidates") from None


def _base_name(loaded) -> str:
    """The spec the reference was built from (a pruned checkpoint's base model)."""
    return str(loaded.plan.model_id["spec"] if loaded.plan is not None else loaded.model_id["spec"])


def siblings(reference, config: SiblingsConfig, pruned=None, progress: bool = True) -> dict[str, Any]:
    """Time ``reference`` (a :class:`~hwprune.models.LoadedModel`, unpruned), the ``pruned`` model
    if given and the stock candidates side by side, and judge the candidates against the line:
    the pruned model's measured latency, else ``config.budget``. Returns a JSON-able dict: one
    row per model (measured ms by the budget's estimator, ratio to the reference, published
    top-1), the line, the candidates within it and the most accurate of them."""
    from .bench import BenchConfig, bench
    from .budget import parse_budget
    from .models import load_model

    base = _base_name(reference)
    kwargs = dict(reference.model_id.get("kwargs") or {})
    names = list(config.names) or candidates(base, config.scope)
    if not names:
        raise ConfigError(f"{base} has no smaller torchvision sibling in its family ({family_of(base)}); compare "
                          "across families with --scope all, or name the candidates (--candidates A,B)")
    size = config.input_size or reference.input_size
    models = {f"{base} (reference)": reference}
    if pruned is not None:
        models["pruned"] = pruned
    for n in names:
        if n in (base,) or n in models:
            continue
        try:
            models[n] = load_model(n, kwargs=kwargs if published(n) is not None else None)
        except TypeError as e:  # a builder without the reference's kwargs (num_classes)
            raise ConfigError(f"cannot build candidate {n!r} with the reference's arguments {kwargs}: {e}") from None
    if len(models) == 1 + (pruned is not None):
        raise ConfigError(f"no candidate besides the reference {base} itself ({', '.join(names)}): name other models "
                          "with --candidates, or leave it out for the family's")
    _check_forward(models, size)
    if progress:
        print(f"timing {len(models)} models side by side on {config.backend} at {size} px, batch {config.batch} "
              f"(>=4 passes each{', about 8 s a model at 224 px on 2 cores' if len(models) > 6 else ''})",
              file=sys.stderr, flush=True)
    bc = BenchConfig(backend=config.backend, threads=config.threads, batches=(config.batch,), input_size=size,
                     warmup=config.warmup, repeats=config.repeats, spinning=config.spinning, **config.bench_kwargs)
    res = bench(models, bc, progress=progress)
    by_model = {r["model"]: r for r in res["rows"]}
    ref_label = next(iter(models))
    ref_ms = by_model[ref_label]["p10_ms"]
    rows = []
    for label, m in models.items():
        r = by_model[label]
        info = res["models"][label]
        pub = published(label, size) if label not in (ref_label, "pruned") else (
            published(base, size) if label == ref_label else None)
        rows.append({"model": label, "role": "reference" if label == ref_label else
                     ("pruned" if label == "pruned" else "candidate"),
                     "ms": r["p10_ms"], "median_ms": r["median_ms"], "ratio": r["p10_ms"] / ref_ms,
                     "flops": info["flops"], "params": info["params"], "published": pub})
    line_ms, line_from = None, None
    if pruned is not None:
        line_ms, line_from = by_model["pruned"]["p10_ms"], "the pruned model's measured latency"
    elif config.budget is not None:
        b = parse_budget(config.budget)
        line_ms = b.target(ref_ms)
        line_from = f"budget {config.budget} of the reference's measured latency" if b.is_relative else \
            f"budget {config.budget}"
    within, best = judge(rows, line_ms)
    return {"format": "hwprune-siblings", "version": 1, "reference": base, "family": family_of(base),
            "model_kwargs": kwargs, "input_size": size, "batch": config.batch,
            "backend": res["backend"], "threads": res["threads"], "spinning": res["spinning"],
            "statistic": res["statistic"], "protocol": res["protocol"], "fingerprint": res["fingerprint"],
            "rows": rows, "line_ms": line_ms, "line_from": line_from, "tolerance": TOLERANCE,
            "within": [r["model"] for r in within], "best_within": best["model"] if best else None,
            "best_within_top1": best["published"]["top1"] if best else None}


def judge(rows: Sequence[dict[str, Any]], line_ms: Optional[float]) -> tuple[list[dict], Optional[dict]]:
    """(the candidates within the line, +:data:`TOLERANCE` as a budget is met; the most accurate of
    them by published top-1). The figure to beat is one published at the resolution timed here
    (EfficientNet-B3's 82.0% is at 300 px, not what it scores at 224); where no candidate within the
    line has one (a 64-px model), the best published at any resolution, which the verdict says."""
    if line_ms is None:
        return [], None
    within = [r for r in rows if r["role"] == "candidate" and r["ms"] <= line_ms * (1 + TOLERANCE)]
    scored = [r for r in within if r["published"] and r["published"]["at_input_size"]] or \
        [r for r in within if r["published"]]
    return within, (max(scored, key=lambda r: r["published"]["top1"]) if scored else None)


def _top1(pub: Optional[dict]) -> str:
    if not pub:
        return "-"
    return f"{pub['top1']:.2f}" + ("" if pub.get("at_input_size") else f" @{pub['crop']}px")


def format_siblings(res: dict[str, Any]) -> str:
    """A plain-text table of a :func:`siblings` result, cheapest last, and the verdict."""
    lines = [f"{res['reference']} and its stock siblings on {res['backend']} ({res['threads']} threads), batch "
             f"{res['batch']}, input {res['input_size']}x{res['input_size']}; latency: {res['statistic']}"]
    w = max(len(r["model"]) for r in res["rows"])
    lines.append(f"{'model':<{w}}  {'ms':>8}  {'x ref':>6}  {'GFLOPs':>7}  {'params M':>8}  {'ImageNet top-1 (published)':>26}")
    for r in sorted(res["rows"], key=lambda r: -r["ms"]):
        mark = " *" if r["model"] in res["within"] else ""
        lines.append(f"{r['model']:<{w}}  {r['ms']:>8.3f}  {r['ratio']:>6.3f}  {r['flops'] / 1e9:>7.2f}  "
                     f"{r['params'] / 1e6:>8.2f}  {_top1(r['published']):>26}{mark}")
    if res["line_ms"] is None:
        lines.append("no line given: add --budget (e.g. 0.5x) or a pruned checkpoint to judge the siblings")
        return "\n".join(lines)
    lines.append(f"line: {res['line_ms']:.3f} ms ({res['line_from']}; * = within it, +{res['tolerance']:.0%})")
    if res["best_within"]:
        pub = next(r["published"] for r in res["rows"] if r["model"] == res["best_within"])
        lines.append(f"the stock {res['best_within']} runs within the line at {_top1(pub)}% ImageNet-1K top-1 "
                     f"({pub['weights']}): a pruned {res['reference']} at this latency is worth shipping only if it "
                     f"beats that on ImageNet-1K")
        if not pub.get("at_input_size"):
            lines.append(f"(that top-1 is published at {pub['crop']} px; at {res['input_size']} px expect it lower)")
        if res.get("model_kwargs"):
            lines.append(f"(your model was built with {res['num_classes_kwargs']}: fine-tune "
                         f"{res['best_within']} on your data to compare like with like)")
    elif res["within"]:
        lines.append(f"within the line: {', '.join(res['within'])} (no top-1 published at "
                     f"{res['input_size']} px to beat)")
    else:
        lines.append("no stock sibling runs within the line: pruning is the way to this latency in this family")
    return "\n".join(lines)


def pareto_front(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The models no other one beats on both measured latency and published top-1 (rows with a
    published figure at the timed resolution), fastest first."""
    pts = sorted((r["ms"], -r["published"]["top1"], r["model"]) for r in rows
                 if r["published"] and r["published"].get("at_input_size"))
    front, best = [], float("-inf")
    for _, neg_top1, name in pts:
        if -neg_top1 > best:
            front.append(name)
            best = -neg_top1
    return front


def plot_siblings(res: dict[str, Any], path: str) -> str:
    """Published top-1 against measured latency (x the reference): the stock models as points
    (hollow where the figure is published at another resolution), the front of the best ones
    named, the line and the top-1 to beat drawn."""
    from .search_plots import _plt, save_figure

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    named = set(pareto_front(res["rows"])) | {r["model"] for r in res["rows"] if r["role"] == "reference"}
    if res.get("best_within"):
        named.add(res["best_within"])
    labelled: set[str] = set()
    for r in sorted(res["rows"], key=lambda r: r["ms"]):
        if r["role"] == "pruned" or not r["published"]:
            continue
        color = "#2a9d55" if r["model"] in res["within"] else "#3b75af"
        same_size = r["published"].get("at_input_size")
        ax.scatter([r["ratio"]], [r["published"]["top1"]], marker="s" if r["role"] == "reference" else "o",
                   facecolors=color if same_size else "none", edgecolors=color, zorder=3, s=28)
        if r["model"] in named:  # neighbours on the front alternate above and below their point
            up = len(named) > 6 and sum(1 for n in named if n in labelled) % 2
            labelled.add(r["model"])
            ax.annotate(r["model"].replace(" (reference)", ""), (r["ratio"], r["published"]["top1"]), fontsize=7,
                        xytext=(4, -9 if up else 3), textcoords="offset points")
    if res["line_ms"] is not None:
        ref_ms = next(r["ms"] for r in res["rows"] if r["role"] == "reference")
        ax.axvline(res["line_ms"] / ref_ms, color="#c0392b", ls="--", label=f"line ({res['line_from']})")
    if res["best_within_top1"] is not None:
        ax.axhline(res["best_within_top1"], color="#2a9d55", ls=":", label=f"top-1 to beat ({res['best_within']})")
    ax.scatter([], [], facecolors="none", edgecolors="gray", label="top-1 published at another resolution")
    ax.set_xlabel(f"measured latency, x {res['reference']} ({res['backend']}, {res['threads']} threads, batch "
                  f"{res['batch']}, {res['input_size']} px)")
    ax.set_ylabel("ImageNet-1K top-1 % (torchvision, published)")
    ax.set_title(f"{res['reference']}: stock models at its pruned latency (named: the fastest for their top-1)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
