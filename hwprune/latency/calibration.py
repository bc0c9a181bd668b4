"""A table's calibration: how a model's measured latency relates to the sum of its units.

Whole-model times of the full model and of ``calib_variants`` random pruned variants (a seed
stream disjoint from validation's) fit a residual curve on top of the units' sum
(:func:`fit_calibration`). :func:`hwprune.latency.profile.profile` and bundle read-backs store it
(:func:`store_calibration`), :func:`recalibrate` re-times it on a machine that drifted, and
:func:`hwprune.latency.validate.validate` re-fits it to report a recalibrated error. Kept apart
from profile and validate so that each of them can use it without importing the other.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from ..graph import ChannelGraph
from ..models import LoadedModel
from hwprune_deploy.runner import timing_ms

from .measure import Measurer, build_variant, calibration_widths, table_spinning
from .table import LatencyTable, now
from .units import model_key

CALIB_VARIANTS = 20  # pruned variants timed end to end per model (ProfileConfig.calib_variants' default)
CALIB_SEED = 10_000  # their seed stream (ProfileConfig.calib_seed's default), disjoint from validate's


def profiled_input_size(table: LatencyTable, loaded: LoadedModel) -> int:
    """The resolution ``loaded`` was profiled at in ``table`` (its own default if not there)."""
    spec = loaded.model_id.get("spec")
    sizes = [r["input_shape"][-1] for r in table.models.values() if r.get("spec") == spec]
    return sizes[0] if sizes else loaded.input_size


def calibration_set(table: LatencyTable, graph: ChannelGraph, align: int, min_width: int) -> list[dict[str, int]]:
    """The widths of the table's calibration variants for this model: as profile or a bundle
    read-back stored them -- none for a table profiled without any (``--quick``,
    ``--calib-variants 0``), whose recalibration then re-times the full model alone -- or, for
    older tables that do not record them, drawn again from the profiler's seed stream on the
    table's grid."""
    rec = table.record_for(graph)
    calib = rec.get("calibration") or {}
    if "variants" in calib:
        return [dict(v["widths"]) for v in calib["variants"].values()]
    return calibration_widths(graph.groups, CALIB_VARIANTS, CALIB_SEED, align, min_width)


def calibration_variants(groups, config) -> dict[str, dict[str, int]]:
    """``full`` (no pruning) plus ``calib<i>``: the widths whose whole-model times calibrate a
    table (:func:`~hwprune.latency.measure.calibration_widths`; profile and bundles alike), as
    ``config`` (a :class:`~hwprune.latency.profile.ProfileConfig`) sets their count, seed and grid."""
    variants: dict[str, dict[str, int]] = {"full": {}}
    for i, w in enumerate(calibration_widths(groups, config.calib_variants, config.calib_seed, config.align,
                                             config.min_width)):
        variants[f"calib{i}"] = w
    return variants


def _prepare_variants(meas: Measurer, loaded: LoadedModel, x: torch.Tensor, variants: dict, into) -> None:
    """Build and prepare each of ``variants`` (widths; empty: the unpruned model) into ``into``
    (a :meth:`Measurer.store`): one variant's module lives at a time."""
    for k, w in variants.items():
        into[k] = meas.prepare(loaded.model if not w else build_variant(loaded.model, x, w), x)


def _time_variants(meas: Measurer, loaded: LoadedModel, x: torch.Tensor, variants: dict,
                   passes: Optional[int]) -> dict:
    with meas.store() as prepared:
        _prepare_variants(meas, loaded, x, variants, prepared)
        return meas.models(prepared, x, passes=passes, reference="full")


def store_calibration(table: LatencyTable, rec: dict, variants: dict[str, dict[str, int]],
                      measured: dict[str, float]) -> None:
    """Fit ``rec``'s calibration (:func:`fit_calibration`) from whole-model times ``measured``
    (ms, keys as ``variants``, ``full`` among them) against the table's units, and store it with
    the full model's time and remainder."""
    cm = table.cost_model_for_record(rec)
    cm.a, cm.b, cm.correction = 1.0, 0.0, None
    sums = {k: cm.units_sum(w) for k, w in variants.items()}
    full_ms = measured["full"]
    rec.update(full_ms=full_ms, units_full_ms=sums["full"], remainder_ms=full_ms - sums["full"])
    rec["calibration"] = fit_calibration(sums, measured)
    rec["calibration"]["variants"] = {k: {"widths": w, "units_ms": sums[k], "measured_ms": measured[k]}
                                      for k, w in variants.items() if k != "full"}


def recalibrate(loaded: LoadedModel, table_path: str, threads: Optional[int] = None, passes: Optional[int] = None,
                input_size: Optional[int] = None) -> dict:
    """Bring a table's calibration for ``loaded`` to the machine as it is now: re-time the full
    model and the table's own calibration variants (side by side, as :func:`~hwprune.latency.profile.profile` does) and
    re-fit the residual curve; units are kept. Whole models are timed with the protocol the table
    records (:func:`_model_protocol`), in the default number of passes. A shared machine drifts over hours, and not by a
    common factor (see :func:`hwprune.latency.validate.validate`), so ~30 s of whole-model timing
    before a search is cheaper than a fresh profile. Returns the calibration before and after."""
    t0 = time.perf_counter()
    table = LatencyTable.load(table_path, check_device=False)
    meas = Measurer(table.backend, threads or int(table.device.get("threads", 2)), table.precision,
                    model_protocol=_model_protocol(table), spinning=table_spinning(table))
    _check_same_hardware(table, table_path)
    spec = loaded.model_id.get("spec")
    if input_size is None:
        input_size = profiled_input_size(table, loaded)
    x = torch.randn(table.batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    graph = ChannelGraph(loaded.model, x)
    rec = table.record_for(graph)
    before = {k: rec.get(k) for k in ("full_ms", "remainder_ms")} | {"calibration": rec.get("calibration")}
    widths = calibration_set(table, graph, int(table.protocol.get("align") or 8),
                             int(table.protocol.get("min_width") or 8))
    variants = {"full": {}, **{f"calib{i}": w for i, w in enumerate(widths)}}
    timings = _time_variants(meas, loaded, x, variants, passes)
    store_calibration(table, rec, variants, {k: timing_ms(t) for k, t in timings.items()})
    seconds = round(time.perf_counter() - t0, 1)
    rec["recalibrated"] = {"when": now(), "seconds": seconds}
    table.history.append({"spec": spec, "model_key": model_key(graph), "seconds": seconds, "when": now(),
                          "recalibrated": True})
    table.save(table_path)
    return {"before": before, "after": {k: rec.get(k) for k in ("full_ms", "remainder_ms")} |
            {"calibration": rec["calibration"]}, "seconds": seconds, "variants": len(widths)}


def _model_protocol(table: LatencyTable):
    """The whole-model protocol ``table`` was profiled with (a quick table's is short), so a
    recalibration times as the profile did; None (the default protocol) where it records none."""
    from hwprune_deploy.timing import Protocol

    rec = (table.protocol or {}).get("model") or {}
    keys = ("warmup", "repeats", "min_repeat_ms", "statistic")
    return Protocol(**{k: rec[k] for k in keys}) if all(k in rec for k in keys) else None


#: fingerprint fields that name the hardware (:meth:`LatencyTable.check_device` compares runtime
#: versions and threads too): a table whose hardware is not this machine's is not re-timed here
HARDWARE_KEYS = ("cpu", "cpu_id", "nchwc_block", "cores", "machine", "gpu")


def _check_same_hardware(table: LatencyTable, table_path: str) -> None:
    """Refuse to recalibrate a table of other hardware: re-timing it here would write this
    machine's speed into that device's table (another runtime version or thread count is what a
    recalibration is for, and passes). The table's own check against this machine's fingerprint
    (:meth:`LatencyTable.check_device`), its hardware fields only."""
    import warnings

    from ..errors import ConfigError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diff = table.check_device()
    hw = [d for d in diff if d.split(":")[0] in HARDWARE_KEYS]
    if hw:
        raise ConfigError(f"latency table {table_path} describes other hardware ({'; '.join(hw[:3])}): recalibrating "
                          "it here would write this machine's speed into that device's table; profile this machine "
                          "into a new table (hwprune profile --out NEW.json), or recalibrate on the table's device")


MIN_SLOPE = 0.05  # d(predicted) / d(units sum) at least this; launch-bound GPU models sit near 0.15


def _nondecreasing(y: list[float]) -> list[float]:
    """Pool-adjacent-violators: the closest nondecreasing sequence (least squares), so a bigger
    units sum is never predicted faster -- searches read differences off this curve."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in y:
        blocks.append([v, 1.0])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return [m for m, n in blocks for _ in range(int(n))]


WINDOWS = (3, 5, 7, 9)  # running-median widths fit_calibration chooses among (3 alone below 2k+1 points)
WINDOW_TOLERANCE = 0.02  # a wider window must cut the leave-one-out error by more than this to be chosen


def _residual_curve(xs: np.ndarray, rs: np.ndarray, window: int) -> tuple[list[float], list[float]]:
    """Knots (units sum, residual) of the curve through residuals ``rs`` at sorted sums ``xs``: a
    running median of ``window`` neighbours (narrower near the ends, the two ends kept as
    measured), made to rise at least MIN_SLOPE x as fast as the units sum (pool-adjacent-violators
    on ``y - MIN_SLOPE * x``, so a smaller model is always predicted a little faster, never tied
    with a bigger one); equal sums (identical variants) collapse to one knot."""
    n, h = len(xs), window // 2
    reach = [min(h, i, n - 1 - i) for i in range(n)]  # 0 at the ends: kept as measured
    smooth = [float(np.median(rs[i - r:i + r + 1])) for i, r in enumerate(reach)]
    fitted = [z + MIN_SLOPE * float(a) for z, a in
              zip(_nondecreasing([float(a + r - MIN_SLOPE * a) for a, r in zip(xs, smooth)]), xs)]
    ux: list[float] = []
    ur: list[float] = []
    for a, f in zip(xs, fitted):
        if ux and a - ux[-1] <= 1e-9:
            continue
        ux.append(float(a))
        ur.append(f - float(a))
    return ux, ur


def _leave_one_out(xs: np.ndarray, rs: np.ndarray, full: int, window: int) -> float:
    """Mean absolute relative error of the curve of ``window`` at each calibration variant, fitted
    without it (index ``full``, the unpruned model, always stays in: every ratio is read against it)."""
    from .table import TableCostModel

    errs = []
    for i in range(len(xs)):
        if i == full:
            continue
        keep = np.arange(len(xs)) != i
        ux, ur = _residual_curve(xs[keep], rs[keep], window)
        cm = TableCostModel([], {"calibration": {"correction": {"units_ms": ux, "residual_ms": ur}}})
        y = xs[i] + rs[i]
        errs.append(abs(cm.from_units(float(xs[i])) / y - 1) if y > 0 else 0.0)
    return float(np.mean(errs))


def fit_calibration(sums: dict[str, float], measured: dict[str, float], window: Optional[int] = None) -> dict:
    """How a model's measured latency relates to the sum of its units, from the full model and
    the calibration variants (never the validation set).

    ``correction``: what the units miss -- per-call overhead, pooling/reshape glue, scheduling
    between nodes, and the cache state of weights a network streams from DRAM that a micro-model
    finds in cache -- as a curve of the residual ``measured - units_sum`` over ``units_sum``: a
    running median of ``window`` neighbours (a variant caught by a burst of load on a shared
    machine cannot bend it; the two ends are kept as measured -- a two-point median would drag the
    lightest variant's residual towards its neighbour's), linear between them, flat above the
    largest, shrinking to 0 below the smallest if negative. The residual is not a constant
    fraction of the sum, and a single line through all variants cannot follow it at both ends
    (with a line, resnet18's lightest variants were over-predicted by 5-6% on this CPU).
    ``predict = units_sum + correction``, made to rise with the units sum (pool-adjacent-violators
    on ``y - 0.05 x``) so marginal costs keep their sign and no pruned variant ties the full model.

    ``window`` is chosen per table by leave-one-out cross-validation (Stone 1974) among
    :data:`WINDOWS`: each calibration variant predicted from a curve fitted without it, the
    narrowest window within :data:`WINDOW_TOLERANCE` of the lowest mean error wins
    (``loo_error``: each window's error). Where the residual has a feature a few variants wide,
    3 or 5 keeps it; where it is scatter around a smooth trend, a wider window stops the curve
    following one variant's idiosyncrasy. Replayed on 47 recorded fits, the share of validation
    variants within +-5% rose in 9 and fell in 2: an Intel Xeon resnet18 table went from 93% to
    100% (docs/latency.md, ``tools/calibration_cv.py``). A window k needs 2k+1 points; where only
    3 is left, it is used without cross-validation. A given ``window`` is used as it is
    (``tools/calibration_cv.py`` replays the fixed 3 beside the choice).

    ``a, b``: the robust line ``measured = a * units_sum + b`` (Theil-Sen: median of pairwise
    slopes, then median intercept; Sen 1968), kept for reports and for fewer than three points,
    where the curve is not fitted. The line falls back to a=1, b=remainder (full - units) with
    fewer than three points or a non-physical slope (outside [0.5, 2]); the curve is kept then."""
    keys = list(sums)
    remainder = measured["full"] - sums["full"]
    if len(keys) < 3:
        return {"a": 1.0, "b": remainder, "method": "remainder"}
    x = np.array([sums[k] for k in keys])
    y = np.array([measured[k] for k in keys])
    order = np.argsort(x)
    xs, rs = x[order], (y - x)[order]
    windows = [w for w in WINDOWS if w == WINDOWS[0] or 2 * w + 1 <= len(xs)]
    loo = {}
    if window is None and len(windows) > 1:
        full = int(np.where(order == keys.index("full"))[0][0])
        loo = {w: _leave_one_out(xs, rs, full, w) for w in windows}
        best = min(loo.values())
        window = min(w for w in windows if loo[w] <= best * (1 + WINDOW_TOLERANCE))
    elif window is None:
        window = WINDOWS[0]
    ux, ur = _residual_curve(xs, rs, window)
    chosen = f"running median of {window}" + (", chosen by leave-one-out" if loo else "")
    out = {"correction": {"units_ms": ux, "residual_ms": ur}, "window": window,
           **({"loo_error": {str(w): e for w, e in loo.items()}} if loo else {}),
           "method": f"units + residual curve ({chosen}) over full + calibration variants"}
    span = x.max() - x.min()
    slopes = [(y[j] - y[i]) / (x[j] - x[i]) for i in range(len(x)) for j in range(i + 1, len(x))
              if abs(x[j] - x[i]) > 0.05 * span]
    a = float(np.median(slopes)) if slopes else float("nan")  # no slopes: every variant has the same sum
    if slopes and 0.5 <= a <= 2.0:
        return {"a": a, "b": float(np.median(y - a * x)), **out}
    why = "variants too alike" if not slopes else f"line rejected, slope {a:.2f}"
    if len(ux) >= 3:  # the curve does not need the line: a launch-bound GPU model's slope is anything
        return {"a": 1.0, "b": remainder, **out, "method": f"{out['method']} ({why})"}
    return {"a": 1.0, "b": remainder, "method": f"remainder ({why})"}
