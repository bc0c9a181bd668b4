"""The ``prune`` verb: search widths with a strategy, pick channels with a criterion, cut, check.

    result = prune(loaded_model, PruneConfig(strategy="uniform", ratio=0.5))
    result = prune(loaded, PruneConfig(strategy="netadapt", budget="0.5x", backend="ort-cpu"),
                   calib=data.calib, table="latency_tables/....json", evaluator=make_evaluator(...))
    result.model      # smaller dense nn.Module
    result.plan       # PruningPlan (JSON-able)
    result.report     # dict written to report.json by the CLI

With a latency budget the search spends the latency table's cost model; afterwards the pruned
model is measured end to end on the backend, side by side with the unpruned one (the closed
loop): a result that misses the budget by more than ``tolerance`` re-runs the strategy with a
target scaled by budget/measured, and says so plainly if it still misses.
"""
from __future__ import annotations

import copy
import time

from .closed_loop import (CONFIRM_BAND, DRIFT_WARN, MEASURE_STATISTIC, close_loop, mark_not_measured,  # noqa: F401
                          mark_proxy, measure_as, measure_pair, where_measured)
from .errors import ConfigError
from .models import LoadedModel
from .prune_config import PruneConfig
from .prune_report import LatencyReport, PruneReport  # noqa: F401 (re-exported)
from .prune_steps import PruneResult, build_report, finetune_pruned  # noqa: F401 (PruneResult re-exported)
from .search import (SearchContext, make_context, primary_table, reconstruct_model, run_search,  # noqa: F401
                     seed_everything, with_default_align)

__all__ = ["CONFIRM_BAND", "DRIFT_WARN", "MEASURE_STATISTIC", "LatencyReport", "PruneConfig", "PruneReport",
           "PruneResult", "SearchContext", "make_context", "measure_as", "measure_pair", "prune",
           "reconstruct_model", "seed_everything"]


def prune(loaded: LoadedModel, config: PruneConfig, calib=None, table=None, evaluator=None,
          data=None) -> PruneResult:
    """Search widths (:mod:`hwprune.search`), cut and check them by measurement
    (:mod:`hwprune.closed_loop`), report (:mod:`hwprune.prune_report`), score and fine-tune.
    ``data`` (a DataBundle) is only needed for ``finetune_epochs``."""
    from .strategies import STRATEGIES

    strategy = STRATEGIES.get(config.strategy)
    if loaded.plan is not None and loaded.plan.kept:  # a trained, uncut model (hwprune train) prunes as any other
        raise ConfigError("this checkpoint is already pruned; prune the original model again with a stronger setting "
                          "(re-pruning a pruned checkpoint is not supported yet)")
    from .sparsity import masks_of

    if masks_of(loaded.model) is not None:
        raise ConfigError("this checkpoint carries 2:4 masks (hwprune prune --sparsity 2:4); a channel cut would leave "
                          "them the wrong shape: cut the dense model, then add --sparsity 2:4 (one command does both)")
    if config.finetune_epochs and data is None:
        raise ConfigError("--finetune-epochs needs training data: pass --data synthetic (or imagefolder:PATH ...)")
    config = with_default_align(config, table)
    if config.iterative > 1:
        from .iterative import prune_iterative

        return prune_iterative(loaded, config, calib=calib, table=table, evaluator=evaluator, data=data)
    seed_everything(config.seed)
    t0 = time.perf_counter()
    config, int8 = _int8_config(loaded, config, table)
    ctx = make_context(loaded, config, calib, table, evaluator)
    if int8 is not None and "fp32_unpruned_ms" in int8:  # the closed loop judges against the fp32 model itself
        from .budget import parse_budget

        ctx.fp32_fraction = parse_budget(int8["budget"]).fraction()
    ctx.train = getattr(data, "train", None)
    table = primary_table(ctx, table)  # one budget bound to a table (0.5x@T) reads as --table T
    from .executor import make_executor

    ctx.executor = make_executor(config.executor, config.ray_address, config.worker_threads)
    try:
        result = _search_and_check(ctx, loaded, config, strategy, table, evaluator, data, t0)
        if int8 is not None:
            result.report.config["int8"] = int8
        return result
    finally:
        ctx.executor.close()


def _int8_config(loaded: LoadedModel, config: PruneConfig, table):
    """An int8 search (``config.precision``): its table must be an int8 table, and a relative budget
    referred to the fp32 unpruned model is re-expressed against the int8 one
    (:func:`hwprune.int8_budget.resolve_int8_budget`). (config, what was done or None)."""
    if table is not None and not isinstance(table, str) and not hasattr(table, "precision"):
        return config, None  # a user's own cost model
    loaded_table = None
    if table is not None:
        from .latency import as_table

        loaded_table = as_table(table)
        prec = loaded_table.precision
        from .service import spends

        if not spends(config.precision, prec):
            raise ConfigError(f"the latency table holds {prec} latencies and this search is {config.precision}: "
                              + ("set precision='int8' (--precision int8) to spend it" if prec == "int8" else
                                 f"profile an {config.precision} table (hwprune profile --precision {config.precision})"))
    if config.precision != "int8":
        return config, None
    import torch

    from .int8_budget import resolve_int8_budget
    from .latency.measure import table_spinning

    size = config.input_size or loaded.input_size
    x = torch.randn(config.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    spinning = table_spinning(loaded_table) if loaded_table is not None else False
    return resolve_int8_budget(loaded.model, config, x, spinning=spinning)


def _search_and_check(ctx: SearchContext, loaded: LoadedModel, config: PruneConfig, strategy, table, evaluator,
                      data, t0: float) -> PruneResult:
    original_target = ctx.target
    widths = run_search(strategy, ctx)
    search_s = time.perf_counter() - t0
    measured_table = table
    if config.backend or ctx.cost.unit != "ms":  # read once: loop and prediction
        from .latency import as_table

        measured_table = as_table(table)
    config, elsewhere, proxy = where_measured(ctx, config, measured_table)  # another device's table: ms off, share proxy
    if ctx.multi:  # several budgets: every reachable device is measured (hwprune.devices)
        from .devices import close_loop_devices

        loop = close_loop_devices(ctx, loaded, config, strategy, widths, table)
    else:  # no drift check against another device's table: this machine is not meant to read as it predicts
        loop = close_loop(ctx, loaded, config, strategy, widths, table, measured_table, check_drift=proxy is None)
    report = build_report(ctx, loaded, config, loop, original_target, search_s + loop.search_seconds, measured_table)
    if elsewhere:
        mark_not_measured(report, ctx.predict(loop.widths), ctx.target, elsewhere)
    elif proxy and loop.measured is not None:
        mark_proxy(report, proxy)
    if evaluator is not None:  # an evaluator may recalibrate BN in place: never let it touch the user's model
        report.accuracy = {"before": float(evaluator(copy.deepcopy(loaded.model))),
                           "after": float(evaluator(loop.pruned))}
    if config.sparsity:  # ASP: 2:4 masks on the cut model, then the fine-tune below keeps them fixed
        from .sparsify import apply_sparsity

        report.sparsity = apply_sparsity(loop.pruned, config.sparsity, evaluator, report.accuracy)
    if config.finetune_epochs:
        report.finetune = finetune_pruned(loop.pruned, loaded.model, data, config)
        if evaluator is not None:
            report.accuracy["after_finetune"] = float(evaluator(loop.pruned))
    if report.sparsity:  # as the fine-tuned weights hold it
        from .sparsity import masks_of

        report.sparsity["holds"] = masks_of(loop.pruned).summary(loop.pruned)["holds"]
    return PruneResult(model=loop.pruned, plan=loop.plan, report=report, artifacts=ctx.artifacts)
