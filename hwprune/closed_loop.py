"""The closed loop: cut the searched widths, measure the pruned model side by side with the
unpruned one on the backend, and re-search with a tightened target while the measurement misses
the budget (at most ``closed_loop_rounds`` times). A result measured more than ``spend_band``
under its budget is searched again with the target loosened by what it left unused (a table that
over-predicts the pruned end hands back a model faster, and less accurate, than the user asked
for); if the looser result misses (confirmed by a second reading, pooled with the first), the target
is searched halfway between the one that met and the one that missed while rounds remain, and
in the end the last result that met is kept. A miss of a budget in *milliseconds* while the
unpruned model reads far slower than its table (the machine busy) is measured again after a pause
before the loop tightens anything (:func:`settle`). The estimator is the budget's
(:data:`hwprune.bench.BUDGET_STATISTIC`)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import nn

from hwprune_deploy.runner import timing_ms

from .bench import BUDGET_STATISTIC
from .latency.measure import mean_timing
from .models import LoadedModel
from .plan import PruningPlan, apply
from .prune_config import PruneConfig
from .search import SearchContext, run_search


#: the key of the fp32 unpruned model in an int8 closed loop's measurement (:func:`measure_pair`)
FP32_REF = "fp32 unpruned"


def measure_pair(config: PruneConfig, models: dict[str, nn.Module], x: torch.Tensor, precision: str = "fp32",
             spinning: bool = False, fp32_reference: Optional[nn.Module] = None) -> dict[str, Any]:
    """Measure ``pruned`` against ``baseline`` the way the latency table was calibrated and is
    validated (:meth:`hwprune.latency.measure.Measurer.models`): the unpruned model in every
    chunk as the reference, >=4 passes (8 under 4 ms), the mean of the fastest half, the protocol statistic
    (p10 of repeats). The closed loop then checks the budget with the very estimator the table's
    calibration was fitted with; with a different one (an unfiltered median of interleaved
    repeats) the two disagreed by several % on a busy 2-vCPU VM and the loop chased the gap.
    ``precision`` and ``spinning`` (ORT workers): as the table was measured (:func:`measure_as`).
    Returns ``{"baseline": Timing, "pruned": Timing}``, ``baseline`` being the reference level.

    ``fp32_reference`` (an int8 search whose budget is a share of the fp32 unpruned model): that
    model as well, in fp32, timed in the same passes under :data:`FP32_REF`, the int8 ones
    quantized as the int8 measurer quantizes them: the budget is then judged against the fp32
    model as the machine runs it now, not through a fp32/int8 ratio read once before the search."""
    from .latency.measure import measure_against_baseline

    if fp32_reference is None or precision != "int8":
        return measure_against_baseline(config.backend, models, x, config.threads, precision, spinning=spinning)
    return measure_int8_beside_fp32(config.backend, config.threads, models, x, fp32_reference, spinning)


def measure_int8_beside_fp32(backend: str, threads: int, models: dict[str, nn.Module], x: torch.Tensor,
                             fp32_reference: nn.Module, spinning: bool = False) -> dict[str, Any]:
    """``models`` quantized as the int8 measurer quantizes them and ``fp32_reference`` in fp32
    (under :data:`FP32_REF`), timed in the same passes, ``models["baseline"]`` the reference level
    (:func:`measure_pair`; also an int8 device among several budgets, :mod:`hwprune.devices`)."""
    from .latency.measure import Measurer
    from .onnx_export import onnx_bytes

    int8 = Measurer(backend, threads, "int8", spinning=spinning)
    prepared = {k: int8.prepare(m, x) for k, m in models.items()}
    prepared[FP32_REF] = onnx_bytes(fp32_reference.eval(), x)
    return Measurer(backend, threads, "fp32", spinning=spinning).models(prepared, x, reference="baseline")


#: what the closed loop's milliseconds are (recorded in the report): the budget's estimator,
#: the one ``hwprune bench`` reports its speedup with
MEASURE_STATISTIC = BUDGET_STATISTIC

#: a first reading within this band of the budget line (relative, either side) is measured again
#: and pooled with the second before the loop decides
CONFIRM_BAND = 0.05


#: the unpruned model measured this much off the table's prediction means the machine changed
DRIFT_WARN = 0.15


def _table_drift(ctx: SearchContext, config: PruneConfig, table, base_ms: float) -> Optional[dict]:
    """When the table is for the backend the closed loop measures on and the unpruned model
    measures more than :data:`DRIFT_WARN` off what the table predicts for it, the machine is not
    the one the table was profiled on (on the 2-vCPU VM the tables come from it ran 2x faster five
    days later, and ratios at the heavily pruned end moved with it): say so, loudly, once."""
    if not _same_backend(ctx, config, table):
        return None
    return drift_of(ctx.baseline_cost, base_ms, ctx.model_id.get("spec", "M"), table)


def _same_backend(ctx: SearchContext, config: PruneConfig, table) -> bool:
    """Does the search's table predict, in ms, the backend the closed loop measures on?"""
    return bool(ctx.cost.unit == "ms" and ctx.baseline_cost and getattr(table, "backend", None) == config.backend)


def drift_of(predicted_ms: float, measured_ms: float, spec: str, table, device: str = "") -> Optional[dict]:
    """The drift record (and a warning printed once) when the unpruned model measured ``measured_ms``
    more than :data:`DRIFT_WARN` off the ``predicted_ms`` of ``table``; None within it. ``device``
    names the device among several budgets."""
    rel = measured_ms / predicted_ms - 1
    if abs(rel) <= DRIFT_WARN:
        return None
    on = f" on {device}" if device else ""
    warning = (f"the table predicts the unpruned model{on} at {predicted_ms:.3f} ms but it measured {measured_ms:.3f} ms "
               f"here ({100 * rel:+.0f}%): this machine is not in the state the table was profiled in, and ratios "
               "at the heavily pruned end shift with it -- a budget in ms is judged on today's speed; recalibrate the "
               f"table (`hwprune prune ... --recalibrate`, or `hwprune profile --model {spec} --out "
               f"{getattr(table, 'path', None) or 'TABLE'} --recalibrate`: re-times the full model and the table's "
               "calibration variants, no re-profile) or profile it again")
    print(f"warning: {warning}", file=sys.stderr)
    return {"predicted_full_ms": predicted_ms, "measured_full_ms": measured_ms, "relative": rel, "warning": warning}


#: a miss of a budget in ms while the unpruned model reads more than DRIFT_WARN slower than its table
#: is measured again after a pause, this many times at most (:func:`settle`)
SETTLE_TRIES = 2
#: seconds to wait before each such reading: long enough for a burst of load (another process
#: starting or exiting) to pass
SETTLE_PAUSE_S = 3.0


def _pause(seconds: float) -> None:
    time.sleep(seconds)


def loaded_reading(base_ms: float, predicted_full_ms: Optional[float]) -> bool:
    """Does the unpruned model's ``base_ms`` read more than :data:`DRIFT_WARN` slower than its
    table's ``predicted_full_ms`` (the machine busier, or slower, than when the table was made)?"""
    return bool(predicted_full_ms) and base_ms > predicted_full_ms * (1 + DRIFT_WARN)


def settle(measure: Callable[[], dict[str, Any]], reading: dict[str, Any],
           predicted_full_ms: float) -> tuple[dict[str, Any], Optional[dict[str, Any]]]:
    """A reading that missed a budget in *milliseconds* while the unpruned model in it read more
    than :data:`DRIFT_WARN` slower than its table: (the reading to judge by, what was done).

    A share of the unpruned model (``0.5x``) is judged side by side, so load slows both and
    mostly cancels; a budget in ms has nothing to cancel against, and one reading taken while
    another process started or exited made the loop tighten the target and cut far deeper than
    the budget needed (a netadapt run: 0.58 ms for a 0.93 ms budget). So wait
    :data:`SETTLE_PAUSE_S` and measure ``measure()`` again, at most :data:`SETTLE_TRIES` times,
    until the unpruned model reads within :data:`DRIFT_WARN` of the table, and judge by the
    reading whose unpruned model was fastest -- the least loaded, as the protocol's own statistic
    keeps the fastest passes. If every reading stays slow the machine is slower than the table
    (warned as drift) and the budget is judged at today's speed. ``what was done``: None when
    the reading was not measured again, else the unpruned model's ms of every reading and which
    one was kept."""
    if not loaded_reading(timing_ms(reading["baseline"]), predicted_full_ms):
        return reading, None
    readings = [reading]
    for _ in range(SETTLE_TRIES):
        _pause(SETTLE_PAUSE_S)
        readings.append(measure())
        if not loaded_reading(timing_ms(readings[-1]["baseline"]), predicted_full_ms):
            break  # the earlier ones were slow: this one is the fastest
    b = [timing_ms(r["baseline"]) for r in readings]
    best = min(range(len(b)), key=b.__getitem__)
    done = {"baseline_ms": b, "pruned_ms": [timing_ms(r["pruned"]) for r in readings], "kept": best,
            "predicted_full_ms": predicted_full_ms, "settled": not loaded_reading(b[best], predicted_full_ms)}
    print(f"closed loop: the unpruned model read {b[0]:.3f} ms against the table's {predicted_full_ms:.3f} ms while "
          f"the result missed a budget in ms; measured again after a pause: {', '.join(f'{v:.3f}' for v in b[1:])} ms"
          + ("" if done["settled"] else " -- still slow: judged at this machine's speed now"), file=sys.stderr)
    return readings[best], done


def measure_as(config: PruneConfig, table) -> tuple[str, bool]:
    """(precision, spinning) to measure with: the table's, when it was profiled on the backend the
    closed loop measures on (a torch-cuda fp16 table is checked in fp16, a table timed with ORT's
    workers spinning is checked spinning), else fp32 with blocked workers."""
    from .latency.measure import table_spinning

    if getattr(config, "precision", "fp32") == "int8":  # the quantized result, as the int8 table timed it
        return "int8", bool(config.backend and getattr(table, "backend", None) == config.backend
                            and table_spinning(table))
    if config.backend and getattr(table, "backend", None) == config.backend:
        return getattr(table, "precision", "fp32"), table_spinning(table)
    return "fp32", False


@dataclass
class LoopOutcome:
    """What the loop ends with: the last widths, their plan and pruned model, the last side-by-side
    measurement (None without a backend), one step per measurement round, and how it measured."""

    widths: dict[str, int]
    plan: PruningPlan
    pruned: nn.Module
    measured: Optional[dict[str, Any]] = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    drift: Optional[dict[str, Any]] = None
    precision: str = "fp32"
    spinning: bool = False
    search_seconds: float = 0.0
    devices: Optional[list[dict[str, Any]]] = None  # several budgets: one row per device (hwprune.devices)
    goal_ms: Optional[float] = None  # the budget (ms) of the measurement the outcome was judged by


def provenance(ctx: SearchContext, config: PruneConfig, table) -> dict[str, Any]:
    return {"strategy": config.strategy, "criterion": config.criterion, "ratio": config.ratio,
            "budget": config.budget, "seed": config.seed, "align": config.align, "min_width": config.min_width,
            "max_prune": config.max_prune,
            "table": getattr(table, "path", table if isinstance(table, str) else None),
            "target": ctx.target, "unit": ctx.cost.unit}


#: a loosened target that missed is bisected towards the one that met while they are more than
#: this far apart (relative)
BISECT_MIN = 0.01


def _search_at(ctx: SearchContext, strategy: Callable, target: float, out: LoopOutcome) -> dict[str, int]:
    """Search again with the table target set to ``target``; the time goes to ``out``."""
    ctx.target = target
    t1 = time.perf_counter()
    widths = run_search(strategy, ctx)
    out.search_seconds += time.perf_counter() - t1
    return widths


def close_loop(ctx: SearchContext, loaded: LoadedModel, config: PruneConfig, strategy: Callable,
               widths: dict[str, int], table, measured_table, cut_from: Optional[nn.Module] = None,
               check_drift: bool = True) -> LoopOutcome:
    """Cut ``widths`` and, with ``config.backend``, measure and re-search until the budget is met
    by measurement or the rounds run out (see module doc). ``measured_table``: the loaded table,
    for the precision/worker mode to measure in and the drift check. ``cut_from``: the network the
    widths are cut from when it is not ``loaded.model`` (an iterative prune's last step cuts the
    already-pruned network; ``loaded.model`` stays the measured baseline; ``check_drift=False`` there,
    as the context's baseline cost is that network's, not the unpruned model's: no drift check, and
    no :func:`settle`, which compares with it too)."""
    x = ctx.example_input
    out = LoopOutcome(widths=widths, plan=None, pruned=None)  # type: ignore[arg-type]
    out.precision, out.spinning = measure_as(config, measured_table)
    # an int8 search on a budget that is a share of the fp32 unpruned model: judged against that model, timed
    # beside the result in every measurement (hwprune.int8_budget converted it once, for the search's target)
    fp32_frac = ctx.fp32_fraction if out.precision == "int8" else None
    ref_kw = {"fp32_reference": loaded.model} if fp32_frac else {}  # only then: measure_pair as before otherwise
    kept: Optional[dict[str, Any]] = None  # the last result that met the budget, while a looser one is tried
    missed: Optional[float] = None  # the last loosened target whose plan missed: loosening stays below it
    slow_machine = False  # the unpruned model stayed slow after a pause (settle): judged at that speed from then on
    while True:
        out.plan = ctx.plan_for(out.widths, provenance=provenance(ctx, config, table))
        out.pruned = apply(loaded.model if cut_from is None else cut_from, out.plan)
        if not config.backend:
            return out
        pair = {"baseline": loaded.model, "pruned": out.pruned}
        measured = measure_pair(config, pair, x, out.precision, out.spinning, **ref_kw)
        fp32_t = measured.pop(FP32_REF, None)
        settled = None
        in_ms = ctx.budget is not None and ctx.budget.is_latency and ctx.budget.fraction() is None
        if (in_ms and not slow_machine and fp32_t is None and check_drift and _same_backend(ctx, config, measured_table)
                and timing_ms(measured["pruned"]) > ctx.budget.value * (1 + config.tolerance)):
            # a miss of a budget in ms while the machine reads slow: measure again before tightening
            measured, settled = settle(lambda: measure_pair(config, pair, x, out.precision, out.spinning),
                                       measured, ctx.baseline_cost)
            slow_machine = bool(settled and not settled["settled"])  # stays slow: not re-measured every round
        base_ms, got_ms = timing_ms(measured["baseline"]), timing_ms(measured["pruned"])
        if not out.steps and check_drift:  # the first measurement of the unpruned model
            out.drift = _table_drift(ctx, config, measured_table, base_ms)
        step = {"round": len(out.steps), "target": ctx.target, "predicted": ctx.predict(out.widths),
                "baseline_ms": base_ms, "measured_ms": got_ms}
        if settled:
            step["settle"] = settled
        out.measured = measured
        if ctx.budget is None or not ctx.budget.is_latency:
            out.steps.append(step)
            return out
        frac = ctx.budget.fraction()
        goal_ms = frac * base_ms if frac is not None else ctx.budget.value
        if fp32_t is not None:
            step["fp32_baseline_ms"] = timing_ms(fp32_t)
            goal_ms = fp32_frac * step["fp32_baseline_ms"]
        step["goal_ms"] = goal_ms
        near = abs(got_ms / goal_ms - (1 + config.tolerance)) <= CONFIRM_BAND
        if near or (kept is not None and got_ms > goal_ms * (1 + config.tolerance)):
            # a reading near the line, on either side, is measured again and the two are pooled,
            # so one noisy reading neither passes nor shrinks the model; a clear pass or a clear
            # miss stands as measured -- except a loosened plan's miss, which would throw the
            # loosening away for the tighter plan kept: one slow reading under load must not do
            # that alone (a benchmark run kept a 0.37x plan for a 0.5x budget that way)
            again = measure_pair(config, pair, x, out.precision, out.spinning, **ref_kw)
            fp32_again = again.pop(FP32_REF, None)
            readings = [(base_ms, got_ms), (timing_ms(again["baseline"]), timing_ms(again["pruned"]))]
            base_ms = sum(r[0] for r in readings) / 2
            got_ms = sum(r[1] for r in readings) / 2
            out.measured = {"baseline": mean_timing(measured["baseline"], again["baseline"]),
                            "pruned": mean_timing(measured["pruned"], again["pruned"])}
            goal_ms = frac * base_ms if frac is not None else ctx.budget.value
            if fp32_again is not None:
                step["fp32_baseline_ms"] = (step["fp32_baseline_ms"] + timing_ms(fp32_again)) / 2
                goal_ms = fp32_frac * step["fp32_baseline_ms"]
            step.update(readings_ms=[list(r) for r in readings], baseline_ms=base_ms, measured_ms=got_ms,
                        goal_ms=goal_ms)
        out.steps.append(step)
        met = got_ms <= goal_ms * (1 + config.tolerance)
        if kept is not None and not met:
            # a loosened target overshot: while rounds remain, search halfway between the target
            # that met and the one that missed (a loosening that overshoots by noise or by a
            # staircase step would otherwise throw the whole spare latency away: a benchmark run
            # kept a 0.41x model for a 0.5x budget so); else hand back the last result that met
            missed = ctx.target
            mid = (kept["target"] + missed) / 2
            if len(out.steps) <= config.closed_loop_rounds and missed > kept["target"] * (1 + BISECT_MIN):
                widths = _search_at(ctx, strategy, mid, out)
                if widths != kept["widths"] and widths != out.widths:
                    step["note"] = (f"the loosened plan missed; re-searching halfway, target {missed:.3f} -> "
                                    f"{mid:.3f} (round {kept['step']['round']} is kept if it misses too)")
                    print(f"closed loop: measured {got_ms:.3f} ms > budget {goal_ms:.3f} ms; " + step["note"],
                          file=sys.stderr)
                    out.widths = widths
                    continue
            step["note"] = f"the loosened plan missed; kept round {kept['step']['round']}"
            out.widths, out.plan, out.pruned, out.measured = kept["widths"], kept["plan"], kept["pruned"], kept["measured"]
            out.goal_ms, ctx.target = kept["step"]["goal_ms"], kept["target"]
            return out
        out.goal_ms = goal_ms
        if met:
            # aimed at the middle of the band, not at the line: a plan aimed at the line misses it
            # half the time by noise alone and the loosening is thrown away
            aim = goal_ms * (1 - config.spend_band / 2)
            loose = (min(ctx.baseline_cost, max(ctx.target, step["predicted"]) * aim / got_ms)
                     if ctx.baseline_cost else ctx.target)
            if missed is not None:  # a target known to miss bounds the loosening
                loose = min(loose, (ctx.target + missed) / 2)
            if (config.spend_band <= 0 or got_ms >= goal_ms * (1 - config.spend_band)
                    or len(out.steps) > config.closed_loop_rounds or loose <= ctx.target * 1.001):
                return out
            # met with latency to spare (a table that over-predicts the pruned end): search again
            # with the target raised by what the measurement left unused, keeping this result
            kept = {"widths": out.widths, "plan": out.plan, "pruned": out.pruned, "measured": out.measured,
                    "step": step, "target": ctx.target}
            step["note"] = f"met {100 * (1 - got_ms / goal_ms):.0f}% under the budget; target loosened to spend it"
            print(f"closed loop: measured {got_ms:.3f} ms, {100 * (1 - got_ms / goal_ms):.0f}% under the budget "
                  f"{goal_ms:.3f} ms; re-searching with the table target loosened {ctx.target:.3f} -> {loose:.3f} "
                  f"(the met result is kept if the looser one misses)", file=sys.stderr)
            out.widths = _search_at(ctx, strategy, loose, out)
            continue
        if len(out.steps) > config.closed_loop_rounds:
            return out
        # scale what the table said of *this* result, not the target: a search that landed under
        # its target (amc, evolution) would otherwise be handed a target its last result already
        # meets and return it again, wasting the round
        new_target = min(ctx.target, step["predicted"]) * goal_ms / got_ms
        if new_target < ctx.artifacts["smallest_cost"]:
            step["note"] = "tightened target below the smallest reachable cost; stopped"
            return out
        print(f"closed loop: measured {got_ms:.3f} ms > budget {goal_ms:.3f} ms (+{100 * config.tolerance:.0f}%); "
              f"re-searching with the table target tightened {ctx.target:.3f} -> {new_target:.3f} ms",
              file=sys.stderr)
        out.widths = _search_at(ctx, strategy, new_target, out)


def where_measured(ctx: SearchContext, config: PruneConfig, table) -> tuple[PruneConfig, Optional[str], Optional[str]]:
    """Where one budget's closed loop can measure what ``table`` predicts, by the rule several
    budgets follow too (:func:`hwprune.service.how_measured`). Returns (config, not measured,
    proxy): the two warnings (said on stderr; the caller puts them in the report), at most one set.

    - A budget **in ms** on a table of a device this machine cannot measure (its fingerprint is
      another machine's): the loop would time *this* machine and judge the other device's
      milliseconds by it (a 4 ms budget of a Jetson table met on a workstation), so it is turned
      off (``config.backend`` None) and the result is checked by the table's prediction only
      (:func:`mark_not_measured`).
    - A **share** of the unpruned model (``0.5x``) on such a table whose backend runs here is
      measured here, pruned beside unpruned, as a proxy for that device's ratio (the tests of every
      strategy meet 0.5x so with the committed tables of an AVX-512 EPYC on other hosts), and the
      verdict says so (:func:`mark_proxy`); no drift check then.

    The same holds for int8 (``--precision int8``): ms off, a share measured here (its fp32/int8
    ratio too, :mod:`hwprune.int8_budget`)."""
    if (ctx.multi or not config.backend or ctx.cost.unit != "ms" or ctx.budget is None
            or getattr(table, "backend", None) != config.backend):
        return config, None, None
    from dataclasses import replace

    from .service import how_measured

    share = ctx.budget.fraction() is not None
    how, why = how_measured(table, share=share)
    if how == "here" or (how is None and share):  # a share on a backend that does not run here: left to the loop
        return config, None, None
    path = getattr(table, "path", None) or ""
    if how == "proxy":
        warning = (f"the latency table {path} describes another device, {why}: the share {ctx.budget.text} is "
                   "measured on this machine, pruned beside unpruned, as a proxy for that device's ratio; time it "
                   "there (hwprune export, then hwprune-deploy bench) or prune against a table of this machine")
        print(f"warning: {warning}", file=sys.stderr)
        return config, None, warning
    warning = (f"the latency table {path} describes a device this machine cannot measure, "
               f"{why}: the result is checked by the table's prediction only, not by the closed loop here (it would "
               "time this machine); time it on that device (hwprune export, then hwprune-deploy bench there) or prune "
               "against a table of this machine (hwprune profile)")
    print(f"warning: {warning}", file=sys.stderr)
    return replace(config, backend=None), warning, None


def mark_proxy(report, warning: str) -> None:
    """The verdict and warning of a result measured here as a proxy (:func:`where_measured`)."""
    if report.verdict:
        report.verdict += " (on this machine, a proxy for the table's device)"
    report.warnings.append(warning)


def mark_not_measured(report, predicted: float, target: float, warning: str) -> None:
    """The verdict and warning of a result :func:`where_measured` kept from the closed loop."""
    met = predicted <= target * (1 + 1e-9)
    report.verdict = (f"not measured (the table's device is not this machine): predicted {predicted:.3f} ms "
                      f"{'meets' if met else 'MISSES'} the budget's {target:.3f} ms on that device")
    report.warnings.append(warning)
