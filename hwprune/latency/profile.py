"""The ``profile`` verb: measure a model's units on a device into a latency table.

    path = profile(load_model("resnet50"), ProfileConfig(backend="ort-cpu", threads=2))

Per unit family (shape signature) the (cin, cout) plane is sampled on the align grid: a few
points per axis, refined where a probe midpoint disagrees with interpolation (the staircase),
then the full product of the axis points is measured interleaved. Then the whole model is timed
end to end at full width (the remainder = full - sum of units), and ``calib_variants`` extra
random pruned variants fit ``measured ~ a * sum(units) + b``. The table is checkpointed
atomically after every family, so a killed run resumes (``resume=True``) without re-measuring.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError, TableError
from ..graph import ChannelGraph
from ..models import LoadedModel
from hwprune_deploy.runner import MODEL_PROTOCOL, UNIT_PROTOCOL, timing_ms, unit_time
from hwprune_deploy.timing import Protocol

from .measure import Measurer, build_variant, random_widths
from .sampling import edge_spikes, midpoints, monotone_envelope, needs_refinement, spread_points
from .table import Family, LatencyTable, default_table_name, now
from .units import UnitUse, extract_units, model_key

BACKEND_CHOICES = ("ort-cpu", "torch-cpu", "torch-cuda", "torch-cuda-sparse", "tensorrt", "tensorrt-sparse")
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
TABLE_DIR = "latency_tables"


@dataclass
class ProfileConfig:
    """How to profile. Validated on construction so a typo fails before minutes of measuring."""

    backend: str = "ort-cpu"
    threads: int = 2
    batch: int = 1
    input_size: Optional[int] = None
    precision: str = "fp32"
    align: int = 8
    min_width: int = 8
    out: Optional[str] = None
    resume: bool = False
    points_per_axis: int = 4  # initial samples per axis (ends included)
    max_points_per_axis: int = 6  # refinement stops here
    refine_tol: float = 0.05  # refine an axis where a probe is off the interpolation by more than this
    passes: int = 2  # interleaved passes over a unit's points; the fastest counts
    calib_variants: int = 10  # extra random variants (seed stream disjoint from validation) for (a, b)
    calib_seed: int = 10_000
    ignore: tuple[str, ...] = ()
    checkpoint_every: int = 1  # families between atomic checkpoints
    unit_protocol: Optional[Protocol] = None  # default hwprune_deploy.runner.UNIT_PROTOCOL
    model_protocol: Optional[Protocol] = None  # default hwprune_deploy.runner.MODEL_PROTOCOL
    options: dict = field(default_factory=dict)

    @classmethod
    def quick(cls, **kw) -> "ProfileConfig":
        """A coarse, fast profile (tests, smoke runs): 2-3 points per axis, short protocol."""
        base = dict(points_per_axis=2, max_points_per_axis=3, calib_variants=0, passes=1,
                    unit_protocol=Protocol(warmup=1, repeats=3, min_repeat_ms=0.2, statistic="p10"),
                    model_protocol=Protocol(warmup=1, repeats=3, min_repeat_ms=0.5, statistic="p10"))
        base.update(kw)
        return cls(**base)

    def __post_init__(self):
        if self.backend not in BACKEND_CHOICES:
            import difflib

            close = difflib.get_close_matches(self.backend, BACKEND_CHOICES, n=1)
            raise ConfigError(f"unknown backend {self.backend!r}{'; did you mean ' + repr(close[0]) + '?' if close else ''} "
                              f"Available: {', '.join(BACKEND_CHOICES)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision {self.precision!r} is not one of {', '.join(PRECISIONS)}")
        if self.threads < 1:
            raise ConfigError(f"threads {self.threads} must be >= 1")
        if self.batch < 1:
            raise ConfigError(f"batch {self.batch} must be >= 1")
        if self.input_size is not None and self.input_size < 8:
            raise ConfigError(f"input size {self.input_size} is too small; use the model's resolution, e.g. 224")
        if self.align < 1 or self.min_width < 1:
            raise ConfigError(f"align {self.align} and min-width {self.min_width} must be >= 1")
        if not (2 <= self.points_per_axis <= self.max_points_per_axis):
            raise ConfigError(f"points_per_axis {self.points_per_axis} must be in [2, max_points_per_axis="
                              f"{self.max_points_per_axis}]")
        if not (0 < self.refine_tol < 1):
            raise ConfigError(f"refine_tol {self.refine_tol} must be a fraction in (0, 1), e.g. 0.03")
        if self.passes < 1:
            raise ConfigError(f"passes {self.passes} must be >= 1")
        if self.calib_variants < 0:
            raise ConfigError(f"calib_variants {self.calib_variants} must be >= 0")
        self.ignore = tuple(self.ignore)


def example_input(loaded: LoadedModel, config: ProfileConfig) -> torch.Tensor:
    size = config.input_size or loaded.input_size
    return torch.randn(config.batch, 3, size, size, generator=torch.Generator().manual_seed(0))


def axis_candidates(units: list[UnitUse], graph: ChannelGraph, config: ProfileConfig) -> dict[str, tuple[set, set]]:
    """Per family: the grid widths its cin and cout can take in this model."""
    out: dict[str, tuple[set, set]] = {}
    for u in units:
        cins, couts = out.setdefault(u.family.key, (set(), set()))
        cins.update(graph.group(u.gin).candidate_widths(config.align, config.min_width) if u.gin else [u.cin])
        couts.update(graph.group(u.gout).candidate_widths(config.align, config.min_width) if u.gout else [u.cout])
        if u.family.groups > 1:  # grouped convs: widths must stay divisible by the group count
            g = u.family.groups
            for s in (cins, couts):
                keep = {v for v in s if v % g == 0}
                s.clear()
                s.update(keep)
    return out


class _Progress:
    def __init__(self, total: int, enabled: bool, desc: str):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="unit", dynamic_ncols=True)

    def step(self, n: int = 1, note: str = ""):
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(note[:40])
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _measure_family(table: LatencyTable, fam_spec, cands: tuple[set, set], meas: Measurer,
                    config: ProfileConfig, stats: dict) -> None:
    """Sample, refine, and fill the grid of one family into the table (reusing what is there)."""
    cin_c, cout_c = sorted(cands[0]), sorted(cands[1])
    fam = table.families.get(fam_spec.key)
    if fam is None:
        fam = Family(fam_spec, [], [], {}, {}, {})
        table.families[fam_spec.key] = fam
    tied = fam_spec.tied
    if tied:
        cout_c = cin_c = sorted(set(cin_c) | set(cout_c))

    def run(points, again: bool = False):
        points = [p for p in dict.fromkeys(points) if again or not fam.has(*p)]
        if not points:
            return
        best: dict = {}
        for _ in range(config.passes):  # noise only adds time: keep the fastest pass
            for p, t in meas.units(fam_spec, points).items():
                if p not in best or timing_ms(t) < timing_ms(best[p]):
                    best[p] = t
        for p, t in best.items():
            k = f"{p[0]},{p[1]}"
            v = max(timing_ms(t) - stats["overhead_ms"], 1e-4)
            if again and k in fam.points:
                v = min(v, fam.points[k])
            fam.points[k], fam.iqr[k], fam.measured_at[k] = v, float(t.iqr_ms), now()
            fresh.add(p)
        stats["measured"] += len(points)

    fresh: set = set()

    def axis_init(existing: list[int], cand: list[int]) -> list[int]:
        pts = set(existing) | set(spread_points(cand, config.points_per_axis))
        return sorted(v for v in pts if v <= max(cand) or v in existing)

    cins = axis_init(fam.cins, cin_c)
    couts = cins if tied else axis_init(fam.couts, cout_c)
    # refinement along probe lines through the far edge of the other axis (strongest signal)
    for axis_name in (("cin",) if tied else ("cin", "cout")):
        for _ in range(config.max_points_per_axis):
            axis, cand = (cins, cin_c) if axis_name == "cin" else (couts, cout_c)
            if len(axis) >= config.max_points_per_axis:
                break
            mids = midpoints(axis, cand)
            if not mids:
                break
            other = max(couts) if axis_name == "cin" else max(cins)

            def pt(v):
                return (v, v) if tied else ((v, other) if axis_name == "cin" else (other, v))

            run([pt(v) for v in axis + mids])
            vals = {v: fam.points[f"{pt(v)[0]},{pt(v)[1]}"] for v in axis}
            probes = {v: fam.points[f"{pt(v)[0]},{pt(v)[1]}"] for v in mids}
            bad = needs_refinement(axis, vals, probes, config.refine_tol)
            if not bad:
                break
            room = config.max_points_per_axis - len(axis)
            bad = sorted(bad, key=lambda v: -abs(v))[:room]
            axis = sorted(set(axis) | set(bad))
            if axis_name == "cin":
                cins = axis
                if tied:
                    couts = cins
            else:
                couts = axis
    fam.cins, fam.couts = cins, (cins if tied else couts)
    run([(c, c) for c in cins] if tied else [(a, b) for a in cins for b in fam.couts])
    # spikes: points well above a point with more channels are re-measured once, then the
    # monotone envelope (suffix minimum over dominating points) removes what noise is left
    env = monotone_envelope(fam.cins, fam.couts, fam.value, tied)
    spikes = [p for p, v in env.items() if fam.value(*p) > 1.15 * v]
    spikes += edge_spikes(fam.cins, fam.couts, fam.value, tied)
    spikes = [p for p in dict.fromkeys(spikes) if p in fresh]  # never re-measure reused entries
    if spikes:
        run(spikes, again=True)
        env = monotone_envelope(fam.cins, fam.couts, fam.value, tied)
    for (a, b), v in env.items():
        fam.points[f"{a},{b}"] = v


def profile(loaded: LoadedModel, config: ProfileConfig, progress: bool = True) -> str:
    """Profile ``loaded`` into a table (extending an existing one); returns the table path."""
    t_start = time.perf_counter()
    meas = Measurer(config.backend, config.threads, config.precision, config.unit_protocol, config.model_protocol)
    fp = meas.fingerprint()
    path = config.out or os.path.join(TABLE_DIR, default_table_name(fp, config.backend, config.precision, config.batch))
    x = example_input(loaded, config)
    graph = ChannelGraph(loaded.model, x, ignore=config.ignore)
    units = extract_units(graph, dtype=config.precision)
    key = model_key(graph)
    spec = loaded.model_id.get("spec", "model")
    if os.path.exists(path):
        table = LatencyTable.load(path)
        if (table.backend, table.precision, table.batch) != (config.backend, config.precision, config.batch):
            raise TableError(f"table {path!r} is for {table.backend}/{table.precision}/b{table.batch}, not "
                             f"{config.backend}/{config.precision}/b{config.batch}; pass a different --out")
        if table.in_progress and not config.resume:
            raise TableError(f"table {path!r} holds an interrupted profile of {table.in_progress.get('spec')!r}; "
                             "continue it with --resume (finished units are kept) or delete the file")
    else:
        table = LatencyTable(fp, config.backend, config.precision, config.batch,
                             {"unit": {**(config.unit_protocol or UNIT_PROTOCOL).to_dict(), "interleaved": "per family",
                                       "unit_time": unit_time(meas.unit_factory) if meas.factory else "wall"},
                              "model": (config.model_protocol or MODEL_PROTOCOL).to_dict(), "statistic": "p10",
                              "spread": "iqr per point", "align": config.align, "min_width": config.min_width})
    prior_seconds = float((table.in_progress or {}).get("seconds", 0.0)) if config.resume else 0.0
    table.in_progress = {"spec": spec, "model_key": key, "seconds": prior_seconds}
    cands = axis_candidates(units, graph, config)
    fam_specs = {u.family.key: u.family for u in units}
    stats = {"measured": 0, "overhead_ms": meas.overhead(), "reused_points": sum(len(f.points) for f in table.families.values())}
    bar = _Progress(len(fam_specs) + 1, progress, f"profiling {spec}")
    for i, (fk, fs) in enumerate(fam_specs.items()):
        _measure_family(table, fs, cands[fk], meas, config, stats)
        bar.step(1, fk)
        if (i + 1) % config.checkpoint_every == 0:
            table.in_progress["seconds"] = prior_seconds + time.perf_counter() - t_start
            table.save(path)
    # remainder (full width) and calibration variants, measured side by side
    rng = np.random.default_rng(config.calib_seed)
    variants = {"full": {}}
    for i in range(config.calib_variants):
        variants[f"calib{i}"] = random_widths(graph.groups, rng, config.align, config.min_width)
    models = {k: meas.prepare(loaded.model if not w else build_variant(loaded.model, x, w), x)
              for k, w in variants.items()}
    timings = meas.models(models, x, passes=config.passes, reference="full")
    bar.step(1, "remainder + calibration")
    bar.close()
    rec = {"spec": spec, "model_id": loaded.model_id, "input_shape": list(x.shape),
           "units": [u.to_dict() for u in units]}
    table.models[key] = rec
    cm = table.cost_model(graph)
    cm.a, cm.b = 1.0, 0.0
    sums = {k: cm.units_sum(w) for k, w in variants.items()}
    full_ms = timing_ms(timings["full"])
    rec.update(full_ms=full_ms, units_full_ms=sums["full"], remainder_ms=full_ms - sums["full"])
    rec["calibration"] = fit_calibration(sums, {k: timing_ms(t) for k, t in timings.items()})
    rec["calibration"]["variants"] = {k: {"widths": w, "units_ms": sums[k], "measured_ms": timing_ms(timings[k])}
                                      for k, w in variants.items() if k != "full"}
    seconds = prior_seconds + time.perf_counter() - t_start
    rec["profile_seconds"] = round(seconds, 1)
    rec["points_measured"] = stats["measured"]
    rec["run_overhead_ms"] = stats["overhead_ms"]
    table.history.append({"spec": spec, "model_key": key, "seconds": round(seconds, 1), "when": now(),
                          "points_measured": stats["measured"], "resumed": bool(config.resume and prior_seconds)})
    table.in_progress = None
    table.save(path)
    return path


def fit_calibration(sums: dict[str, float], measured: dict[str, float]) -> dict:
    """Robust line ``measured = a * units_sum + b`` over full + calibration variants.

    Theil-Sen (median of pairwise slopes, then median intercept; Sen 1968): a variant caught by a
    burst of load on a shared machine must not tilt the line, and least squares lets one such
    point move the intercept by a millisecond. Falls back to a=1, b=remainder (full - units)
    with fewer than three points or a non-physical slope (outside [0.5, 2])."""
    keys = list(sums)
    remainder = measured["full"] - sums["full"]
    if len(keys) < 3:
        return {"a": 1.0, "b": remainder, "method": "remainder"}
    x = np.array([sums[k] for k in keys])
    y = np.array([measured[k] for k in keys])
    span = x.max() - x.min()
    slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x))
              if abs(x[j] - x[i]) > 0.05 * span]
    if not slopes:  # also when every variant has the same units sum
        return {"a": 1.0, "b": remainder, "method": "remainder (variants too alike)"}
    a = float(np.median(slopes))
    if not (0.5 <= a <= 2.0):
        return {"a": 1.0, "b": remainder, "method": "remainder (fit rejected)"}
    b = float(np.median(y - a * x))
    return {"a": a, "b": b, "method": "Theil-Sen over full + calibration variants"}
