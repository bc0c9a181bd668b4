"""The ``validate`` verb: does the table agree with the stopwatch on held-out pruned variants?

Draws ``samples`` random pruned variants (random widths per group on the align grid, seed
stream disjoint from the profiler's calibration variants), predicts each from the table, builds
each for real (channels removed), measures it end to end on the table's backend (several passes
over all variants in different orders, interleaved in small chunks, repeated where passes
disagree: see :meth:`Measurer.models`), and reports per-variant error, median |error| and the share within
+-5% / +-10% -- the fidelity figure nn-Meter (Zhang et al., MobiSys 2021) reports for its predictor.
By default the table's calibration variants are timed in the same passes and the figures are
also given for the table recalibrated to the machine as it is during validation (see
:func:`validate`). With ``shapes`` it also times *structured* variants in the same passes
(:func:`shape_variants`: the early half of the network cut, the late half cut, all cut alike):
random variants cut every group by about the same share, a search does not, and a table can price
the one well and the other badly (docs/latency.md, "Where a plan prunes").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..errors import ConfigError
from ..graph import ChannelGraph
from ..models import LoadedModel
from hwprune_deploy.runner import timing_ms
from hwprune_deploy.timing import FAST_MS, FAST_PASSES, MODEL_PASSES

from .calibration import calibration_set, fit_calibration, profiled_input_size
from .measure import Measurer, build_variant, model_passes, random_widths, split_halves, table_spinning
from .table import LatencyTable


@dataclass
class ValidationResult:
    """Per variant: ``predicted_ms`` / ``measured_ms`` and, the primary figure, the latency
    *ratio* to the unpruned model: ``predicted_ratio = predict(w) / predict(full)`` against
    ``measured_ratio`` = the variant's time over the unpruned model's, timed side by side in
    the same chunk. ``error`` compares the ratios (what a budget like ``0.5x`` spends and the
    closed loop checks); ``error_ms`` compares milliseconds, which also carries how much the
    machine itself drifted between profiling and validation (a few % over minutes on a shared VM)."""

    model: str
    table: str
    backend: str
    input_shape: list[int]
    variants: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    reference_ms: float = float("nan")  # the unpruned model during validation (median over chunks)
    predicted_full_ms: float = float("nan")
    recalibration: Optional[dict] = None  # the calibration re-fitted from this run's measurements
    spinning: bool = False  # ORT workers spun during runs (a table profiled with --ort-spinning)
    shapes: list[dict] = field(default_factory=list)  # structured variants (``shapes``), not in the figures
    passes: Optional[int] = None  # at least this many passes a variant (None: the default, 4; at least 8 for a model under 4 ms)
    align: Optional[int] = None  # the width grid the variants were drawn on

    def _errs(self, key: str) -> np.ndarray:
        return np.array([v[key] for v in self.variants], dtype=float)

    @property
    def errors(self) -> np.ndarray:
        return self._errs("error")

    @property
    def median_abs_error(self) -> float:
        return self.summary()["median_abs_error"]

    def share_within(self, tol: float, key: str = "error") -> float:
        return float(np.mean(np.abs(self._errs(key)) <= tol)) if self.variants else float("nan")

    @property
    def max_abs_error(self) -> float:
        return self.summary()["max_abs_error"]

    def summary(self, key: str = "error") -> dict:
        e = np.abs(self._errs(key)) if self.variants else np.array([np.nan])
        return {"median_abs_error": float(np.median(e)), "within_5pct": self.share_within(0.05, key),
                "within_10pct": self.share_within(0.10, key), "max_abs_error": float(np.max(e))}

    def repeatability(self) -> Optional[dict]:
        """How well this run's own stopwatch pinned the measured ratios down: per variant the
        ratio from its even-numbered passes against the ratio from its odd-numbered ones
        (:func:`~hwprune.latency.measure.split_halves`), relative to the measured ratio. The
        share of variants whose halves agree within 5% says whether a +-5% bar can be judged on
        this machine at all; each half has half the passes, so this overstates the noise of the
        whole run's ratio (by about sqrt 2 if the passes' noise is independent), while drift over
        longer than a run (two runs apart) it does not see. ``None`` when no variant had >= 4 passes."""
        d = np.array([v["split_half"] for v in self.variants if v.get("split_half") is not None], dtype=float)
        if not len(d):
            return None
        return {"rms": float(np.sqrt(np.mean(d ** 2))), "within_5pct": float(np.mean(np.abs(d) <= 0.05)),
                "max_abs": float(np.max(np.abs(d))), "variants": int(len(d))}

    def to_dict(self) -> dict:
        return {"model": self.model, "table": self.table, "backend": self.backend, "spinning": self.spinning,
                "input_shape": self.input_shape, "passes": self.passes, "align": self.align,
                "samples": len(self.variants), "metric": "latency ratio to the unpruned model, timed side by side",
                **self.summary("error"), "absolute_ms": self.summary("error_ms"),
                "split_half": self.repeatability(),
                "recalibrated": ({**self.summary("error_recalibrated"), "calibration": self.recalibration}
                                 if self.recalibration is not None else None),
                "reference_ms": self.reference_ms, "predicted_full_ms": self.predicted_full_ms,
                "seconds": self.seconds, "variants": self.variants, "shapes": self.shapes}


#: keep shares of the structured variants (:func:`shape_variants`)
SHAPE_CUTS = (0.5, 0.25)


def shape_variants(model: torch.nn.Module, graph: ChannelGraph, align: int, min_width: int,
                   cuts=SHAPE_CUTS) -> dict[str, dict[str, int]]:
    """Structured pruned variants, by name: per keep share ``s`` in ``cuts``, ``early xs`` (the
    first half of the prunable groups, ordered by where their first layer is defined, cut to
    ``s``; the rest kept), ``late xs`` (the reverse) and ``all xs`` (every group cut alike)."""
    pos = {name: i for i, (name, _) in enumerate(model.named_modules())}
    groups = sorted((g for g in graph.groups if g.prunable),
                    key=lambda g: min(pos.get(m.module, 1 << 30) for m in g.members))
    halves = {"early": groups[: len(groups) // 2], "late": groups[len(groups) // 2:], "all": groups}
    out = {}
    for s in cuts:
        if not 0 < s < 1:
            raise ConfigError(f"shape cut {s} must be a keep share between 0 and 1 (e.g. 0.5)")
        for name, gs in halves.items():
            out[f"{name} x{s:g}"] = {g.name: int(g.snap(g.width * s, align, min_width)) for g in gs}
    return out


def spread_order(samples: int, calibration: int) -> list[str]:
    """Measurement order: calibration variants ``c<i>`` spread evenly among the validation
    variants ``v<j>`` (then the reference), so both meet the same states of the machine -- grouped
    at the end, the calibration variants of both passes were timed within seconds of each other,
    and one slow stretch bent the whole recalibrated curve (resnet18: 63% within 5%)."""
    order = [f"v{j}" for j in range(samples)]
    for i in reversed(range(calibration)):
        order.insert(int((i + 0.5) * samples / calibration) if calibration else 0, f"c{i}")
    return order + ["reference"]


def check_passes(passes: Optional[int]) -> None:
    """Refuse a ``passes`` below 1 (None: the default) before anything is measured or written."""
    if passes is not None and passes < 1:
        raise ConfigError(f"passes {passes} must be >= 1 (a variant's figure is the mean of the fastest half of its "
                          f"passes); leave it out for the default, {MODEL_PASSES} (at least {FAST_PASSES} for a model "
                          f"under {FAST_MS:g} ms)")


def validate(loaded: LoadedModel, table_path: str, samples: int = 30, seed: int = 0, align: Optional[int] = None,
             min_width: int = 8, progress: bool = True, input_size: Optional[int] = None, threads: Optional[int] = None,
             chunk: int = 5, protocol=None, passes: Optional[int] = None, recalibrate: bool = True,
             shapes: bool = False) -> ValidationResult:
    """Predict vs measure ``samples`` random pruned variants of ``loaded`` (see module doc).

    ``recalibrate``: also time the table's calibration variants (the profiler's, disjoint from
    the validation seeds) in the same passes as the validation variants, re-fit the residual
    curve from them (:func:`~hwprune.latency.calibration.fit_calibration`, units unchanged) and
    report the errors of that *recalibrated* table too (``error_recalibrated``). On a shared VM
    the machine's state drifts between profiling and validation, and the drift is not a common
    factor: a slower thread hand-off adds more to a small variant than to the full model, so
    ratios move by several % at the heavily pruned end. Re-fitting 10 whole-model measurements
    brings the table to the machine as it is now; the figure as profiled is kept as ``error``.

    ``shapes``: also time :func:`shape_variants` in the same passes; they go to
    ``ValidationResult.shapes`` (same fields, ``name`` instead of ``index``), not into the
    random variants' figures."""
    import time

    if samples < 1:
        raise ConfigError(f"samples {samples} must be >= 1")
    check_passes(passes)
    t0 = time.perf_counter()
    table = LatencyTable.load(table_path)
    if align is None:  # the grid a search spends this table on, so what is validated is what is searched
        from .profile import table_align

        align = table_align(table)
    spec = loaded.model_id.get("spec")
    if input_size is None:  # the resolution this model was profiled at, if the table has it
        input_size = profiled_input_size(table, loaded)
    x = torch.randn(table.batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    graph = ChannelGraph(loaded.model, x)
    cm = table.cost_model(graph)
    meas = Measurer(table.backend, threads or int(table.device.get("threads", 2)), table.precision,
                    model_protocol=protocol, spinning=table_spinning(table))
    n_passes = model_passes(passes)
    rng = np.random.default_rng(seed)
    widths = [random_widths(graph.groups, rng, align, min_width) for _ in range(samples)]
    res = ValidationResult(str(spec), table_path, table.backend, list(x.shape), spinning=meas.spinning, passes=passes,
                           align=align)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=samples, desc=f"building {spec} variants", unit="variant", dynamic_ncols=True)
    # ONNX backends: the prepared variants wait on disk, one chunk read per pass, so memory does not
    # grow with the number of variants (30 fp32 resnet50 variants: 5.7 GB peak RSS held as bytes, 4.6 GB spilled)
    with meas.store() as prepared:
        for j in range(samples):  # build + export each variant once; the module is freed
            prepared[f"v{j}"] = meas.prepare(build_variant(loaded.model, x, widths[j]), x)
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
            bar = tqdm(total=samples * n_passes, desc=f"measuring {spec} variants", unit="variant",
                       dynamic_ncols=True)
        prepared["reference"] = meas.prepare(loaded.model, x)  # the unpruned model, timed in every chunk
        cal_widths = calibration_set(table, graph, align, min_width) if recalibrate else []
        for i, w in enumerate(cal_widths):  # timed in the same passes and chunks as the variants
            prepared[f"c{i}"] = meas.prepare(build_variant(loaded.model, x, w), x)
        shaped = shape_variants(loaded.model, graph, align, min_width) if shapes else {}
        shape_key = {f"s{i}": name for i, name in enumerate(shaped)}
        for key, name in shape_key.items():
            prepared[key] = meas.prepare(build_variant(loaded.model, x, shaped[name]), x)
        if bar is not None and (cal_widths or shaped):
            bar.total += (len(cal_widths) + len(shaped)) * n_passes
            bar.refresh()
        # every chunk is scaled to the median reference, so measured / reference is exactly the
        # variant's ratio to the unpruned model timed side by side in its chunk
        order = spread_order(samples, len(cal_widths))
        for i, key in enumerate(shape_key):  # spread among the random variants too
            order.insert(int((i + 0.5) * (len(order) - 1) / len(shape_key)), key)
        prepared = prepared.reordered(order)
        timings = meas.models(prepared, x, passes=passes, chunk=chunk, reference="reference",
                              progress=(lambda n: bar.update(n)) if bar is not None else None)
    ref = timing_ms(timings.pop("reference"))
    halves = {k: split_halves(h) for k, h in meas.last_history.items()}
    pred_full = cm.predict({})
    res.reference_ms, res.predicted_full_ms = ref, pred_full
    cal_ms = {name: timing_ms(timings.pop(name)) for name in [k for k in timings if k.startswith("c")]}
    shape_t = {shape_key[k]: timings.pop(k) for k in list(timings) if k in shape_key}
    cm_r = None
    if cal_widths:
        from .table import TableCostModel

        sums = {"full": cm.units_sum({}), **{f"c{i}": cm.units_sum(w) for i, w in enumerate(cal_widths)}}
        fit = fit_calibration(sums, {"full": ref, **cal_ms})
        cm_r = TableCostModel(cm.units, {**cm.record, "calibration": fit})
        res.recalibration = {**fit, "variants": {k: {"units_ms": sums[k], "measured_ms": v} for k, v in cal_ms.items()}}
        full_r = cm_r.predict({})
    units_full = cm.units_sum({})

    def row(w: dict[str, int], t, key: str) -> dict:
        pred = cm.predict(w)
        m = timing_ms(t)
        pr, mr = pred / pred_full, m / ref
        hv = halves.get(key)  # every pass is scaled to the reference's level: ms / ref is a ratio
        v = {"widths": w, "predicted_ms": pred, "measured_ms": m,
             "iqr_ms": float(t.iqr_ms), "predicted_ratio": pr, "measured_ratio": mr,
             "error": (pr - mr) / mr, "error_ms": (pred - m) / m,
             "split_half": (timing_ms(hv[0]) - timing_ms(hv[1])) / m if hv is not None else None,
             # before calibration: the units' sums alone
             "units_ratio": cm.units_sum(w) / units_full}
        if cm_r is not None:
            v["predicted_ratio_recalibrated"] = cm_r.predict(w) / full_r
            v["error_recalibrated"] = (v["predicted_ratio_recalibrated"] - mr) / mr
        return v

    for name, t in timings.items():
        j = int(name[1:])
        res.variants.append({"index": j, **row(widths[j], t, name)})
    res.shapes = [{"name": name, **row(shaped[name], shape_t[name], key)} for key, name in shape_key.items()]
    if bar is not None:
        bar.close()
    res.variants.sort(key=lambda v: v["index"])
    res.seconds = time.perf_counter() - t0
    return res
