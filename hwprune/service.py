"""The service layer between the CLI verbs and the library: one place that decides which latency
table a request uses, so ``hwprune prune`` and ``hwprune run`` never disagree.

    req = TableRequest(backend="ort-cpu", threads=2, spinning=False, align=16)
    path = find_table(req, loaded, folders=("latency_tables",))          # or None
    path, how = find_or_profile_table(loaded, req, folders=("latency_tables",))  # 'reused' | 'profiled'

A table serves a request when it was measured the same way on this machine: same backend,
precision, batch and thread count, the same ORT worker mode (blocked or spinning: another
protocol, other numbers), a channel grid that holds the request's widths (the request's ``align``
is a multiple of the table's), the same device fingerprint, and units for every layer of the model.
"""
from __future__ import annotations

import dataclasses
import glob
import os
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch

from .errors import ConfigError, TableError
from .models import LoadedModel

TABLE_DIR = "latency_tables"


@dataclass(frozen=True)
class TableRequest:
    """How the latency a search spends must have been measured."""

    backend: str = "ort-cpu"
    threads: int = 2
    batch: int = 1
    precision: str = "fp32"
    spinning: bool = False
    align: int = 8
    min_width: int = 8
    input_size: Optional[int] = None
    ignore: tuple[str, ...] = ()

    def why_not(self, table) -> Optional[str]:
        """None when ``table`` was measured as this request needs (coverage aside), else why not."""
        from .latency.measure import table_spinning

        if (table.backend, table.precision, table.batch) != (self.backend, self.precision, self.batch):
            return f"{table.backend}/{table.precision}/b{table.batch}, not {self.backend}/{self.precision}/b{self.batch}"
        threads = int(table.device.get("threads", self.threads))
        if threads != self.threads:
            return f"{threads} threads, not {self.threads}"
        if table_spinning(table) != self.spinning:
            return f"ORT workers {'spinning' if table_spinning(table) else 'blocked'}"
        grid = int(table.protocol.get("align") or 8)
        if self.align % grid:
            return f"channel grid {grid} does not hold widths on a grid of {self.align}"
        if table.check_device():
            return "measured on another device"
        return None


def _graph(loaded: LoadedModel, req: TableRequest, batch: int):
    from .graph import ChannelGraph

    size = req.input_size or loaded.input_size
    return ChannelGraph(loaded.model, torch.randn(batch, 3, size, size), ignore=req.ignore)


def find_table(req: TableRequest, loaded: LoadedModel, folders=(TABLE_DIR,)) -> Optional[str]:
    """The first table (by file name, folder by folder) measured as ``req`` needs that covers the
    model; None if there is none. Files that are not readable tables are skipped."""
    from .latency import LatencyTable

    graph = None
    for folder in folders:
        for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    table = LatencyTable.load(path, check_device=False)
            except (TableError, ValueError, OSError):  # not a table (a report, a manifest) or damaged
                continue
            if req.why_not(table) is not None:
                continue
            graph = graph or _graph(loaded, req, table.batch)
            if table.covers(graph):
                return path
    return None


#: table precisions a float (non-int8) search spends as they are: a GPU table timed in fp16 or bf16
#: is checked in its own precision by the closed loop (:func:`hwprune.closed_loop.measure_as`)
HALF_PRECISIONS = ("fp16", "bf16")


def spends(search_precision: str, table_precision: str) -> bool:
    """Whether a ``search_precision`` search (fp32 or int8) can spend a ``table_precision`` table:
    the same precision, or an fp32 (float) search and a half-precision GPU table. int8 is never
    mixed with a float table either way."""
    return table_precision == search_precision or (search_precision == "fp32" and table_precision in HALF_PRECISIONS)


def reachable(table) -> tuple[bool, Optional[str]]:
    """(can this machine measure as ``table`` was measured, why not): its backend runs here and this
    machine's fingerprint is the table's (:mod:`hwprune.devices`)."""
    how, why = how_measured(table)
    return how == "here", why


def how_measured(table, share: bool = False) -> tuple[Optional[str], Optional[str]]:
    """How a budget spent on ``table`` is checked by measurement on this machine, and why not fully:

    - ``("here", None)``: the table's device is this machine (:func:`reachable`);
    - ``("proxy", why)``: ``share`` (a budget that is a share of the unpruned model, ``0.5x``) and
      the table's backend runs here but its fingerprint is another device's: the pruned/unpruned
      ratio is measured here, side by side, as a proxy for that device's -- said in the verdict;
    - ``(None, why)``: not measurable here (a budget in ms on another device, or a backend that
      does not run here): checked by the table's prediction only.

    One rule for one budget and several (:func:`hwprune.closed_loop.where_measured`,
    :func:`hwprune.devices.close_loop_devices`)."""
    from .backends import get_backend
    from .errors import HwpruneError

    if not hasattr(table, "backend"):
        return None, "no latency table"
    try:
        be = get_backend(table.backend, threads=int(table.device.get("threads", 2)), precision=table.precision)
        current = be.fingerprint()
    except HwpruneError as e:
        return None, f"backend {table.backend} is not usable here: {str(e).splitlines()[0]}"
    except Exception as e:  # a runtime that fails to start is just as unreachable
        return None, f"backend {table.backend} failed to start here: {e}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diff = table.check_device(current)
    if diff:
        why = "measured on another device (" + "; ".join(diff[:3]) + ")"
        return ("proxy" if share else None), why
    return "here", None


def fp32_share_on_int8(budget, table_precision: str, search_precision: str, budget_ref: str) -> bool:
    """Is ``budget``, spent on a table of ``table_precision`` in a ``search_precision`` search, a
    share of the *fp32* unpruned model on an int8 device (``0.6x@INT8_TABLE`` among several budgets
    without ``--budget-ref int8``)? Such a budget needs that device's fp32/int8 ratio: measured
    (:func:`hwprune.search.resolve_constraints`) where the device is reachable, refused elsewhere
    (:func:`check_bound_precision`)."""
    return (table_precision == "int8" and search_precision == "fp32" and budget.is_latency
            and budget.fraction() is not None and budget_ref == "fp32")


def check_bound_precision(bound, table_precision: str, search_precision: str, several: bool = False,
                          budget_ref: str = "fp32", table=None) -> None:
    """A budget bound to a table (``0.5x@T``, a :class:`hwprune.budget.BoundBudget`) spends T's
    latencies, so T must be one this search can spend (:func:`spends`): an fp32 search handed an
    int8 table as its one budget would judge a float model on the quantized model's times.

    Among ``several`` budgets (one model for several devices) an int8 table is a device that runs
    the pruned model quantized, and is measured so by the closed loop; its budget must then say
    what it is of: milliseconds (``4ms@T``); with ``budget_ref='int8'`` (``--budget-ref int8``) a
    share of the *int8* unpruned model there; with the default ``fp32`` a share of the fp32
    unpruned model there, which needs that device's fp32/int8 ratio: measured when this machine
    can measure the device (``table``, the loaded table, is reachable:
    :func:`reachable`), refused for one it cannot.
    ConfigError naming the budget and what to pass instead."""
    if spends(search_precision, table_precision):
        return
    budget, path = bound.budget.text, bound.table
    if table_precision == "int8" and search_precision == "fp32" and several:
        if not fp32_share_on_int8(bound.budget, table_precision, search_precision, budget_ref):
            return  # a budget in ms, or a share of the int8 unpruned model (--budget-ref int8)
        why = "no table given to check"
        if table is not None:
            ok, why = reachable(table)
            if ok:
                return  # its fp32/int8 ratio is measured here (hwprune.search.resolve_constraints)
        raise ConfigError(f"budget {bound.text!r}: {path!r} is an int8 device that this machine cannot measure ({why}), "
                          "so a share of its fp32 unpruned model (what a share means by default) cannot be turned into "
                          "its int8 latencies; pass --budget-ref int8 (a share of the int8 unpruned model on that "
                          f"device) or a budget in ms (e.g. 4ms@{path})")
    if table_precision == "int8":
        fix = (f"an int8 search takes one budget on --table (hwprune prune --precision int8 --budget {budget} "
               f"--table {path}); to bind int8 devices among several budgets, give each its own budget "
               "(--budget 0.5x@FP32_TABLE --budget 4ms@INT8_TABLE)")
    elif search_precision == "int8":
        fix = (f"an int8 search takes one budget without @TABLE, spent on an int8 table (hwprune prune --precision "
               f"int8 --budget {budget} --table INT8_TABLE; hwprune profile --precision int8 makes one)")
    else:
        fix = f"bind an {search_precision} table (hwprune profile --precision {search_precision})"
    raise ConfigError(f"budget {bound.text!r}: table {path!r} holds {table_precision} latencies and this search is "
                      f"{search_precision}: {fix}")


def budget_tables(bounds, default_table: Optional[str], search_precision: str, budget_ref: str = "fp32") -> list:
    """Before any model is loaded (``hwprune prune`` and ``hwprune run``), the tables the latency
    budgets ``bounds`` (:class:`hwprune.budget.BoundBudget`) are spent on (``@TABLE``, else
    ``default_table``, the verb's --table), loaded without the other-device warning (it comes once,
    later), first budget's first. A budget bound to a missing table is a ConfigError
    (:func:`hwprune.budget.check_tables_exist`); a missing --table is left out (it is reported, with
    its fix, where it is read). Every bound table must hold latencies this search can spend
    (:func:`check_bound_precision`), and ``budget_ref='int8'`` needs an int8 device to apply to
    (:func:`check_budget_ref`); the search checks both again for library users."""
    from .budget import check_tables_exist
    from .latency import LatencyTable

    check_tables_exist(bounds)
    paths = [b.table or default_table for b in bounds if b.budget.is_latency]
    paths = list(dict.fromkeys(p for p in paths if p and os.path.isfile(p)))
    tables = [LatencyTable.load(p, check_device=False) for p in paths]
    by_path = {t.path: t for t in tables}
    bound = [(b, by_path[b.table].precision) for b in bounds if b.table is not None and b.table in by_path]
    for b, precision in bound:
        check_bound_precision(b, precision, search_precision, several=len(bounds) > 1, budget_ref=budget_ref,
                              table=by_path[b.table])
    check_budget_ref([p for _, p in bound], search_precision, budget_ref)
    return tables


def check_budget_ref(bound_precisions, search_precision: str, budget_ref: str) -> None:
    """``budget_ref='int8'`` (``--budget-ref int8``) says what a relative budget on an int8 device
    is a share of; a search with no int8 device (not ``--precision int8``, no budget bound to an
    int8 table: ``bound_precisions``) would ignore it. ConfigError with the three ways out."""
    if budget_ref == "int8" and search_precision != "int8" and "int8" not in bound_precisions:
        raise ConfigError("--budget-ref int8 says what a relative budget on an int8 device is a share of, and this "
                          "search has none: add --precision int8 (one device, int8), bind a budget to an int8 table "
                          "(--budget 0.5x@INT8_TABLE among several), or drop --budget-ref")


def measuring_threads(threads: Optional[int], table, backend: Optional[str], default: int = 2) -> int:
    """The thread count a verb measures with: ``threads`` (``--threads``), else that of ``table``
    (the table the closed loop checks against: ``--table`` or the first latency budget's
    ``@TABLE``, loaded; None when there is none) where it was timed on ``backend``, else
    ``default``. A ``--threads`` that contradicts that table is a ConfigError: the closed loop,
    the bench and ``--recalibrate`` would time another device than the one the table describes
    (before, a 1-thread table given to ``prune`` was checked and recalibrated at 2 threads)."""
    own = None
    if table is not None and getattr(table, "backend", None) == backend and "threads" in (table.device or {}):
        own = int(table.device["threads"])
    if threads is None:
        return own or default
    if own is not None and threads != own:
        raise ConfigError(f"table {table.path!r} was profiled with {own} thread{'s' if own != 1 else ''} and --threads "
                          f"is {threads}: the closed loop and bench would time another device than the table "
                          f"describes; leave out --threads (the table's {own} is used) or profile a table with "
                          f"--threads {threads}")
    return threads


def check_given_table(path: str, req: TableRequest) -> None:
    """A table the user named must have been timed the way the closed loop and bench will time."""
    from .latency import LatencyTable
    from .latency.measure import table_spinning

    table = LatencyTable.load(path)
    if not spends(req.precision, table.precision):
        raise ConfigError(f"table {path!r} holds {table.precision} latencies and this search is {req.precision}: "
                          + ("pass --precision int8 to spend it, or an fp32 table" if table.precision == "int8" else
                             f"pass an {req.precision} table (hwprune profile --precision {req.precision}), or leave "
                             "out --table to find or profile one"))
    if table.backend == req.backend and table_spinning(table) != req.spinning:
        raise ConfigError(f"table {path!r} was profiled with ORT's workers "
                          f"{'spinning' if table_spinning(table) else 'blocked'}; "
                          f"{'add' if table_spinning(table) else 'drop'} --ort-spinning so the closed loop and the "
                          "bench time the way the table did")


def find_or_profile_table(loaded: LoadedModel, req: TableRequest, folders=(TABLE_DIR,), out: Optional[str] = None,
                          profile_overrides: Optional[dict[str, Any]] = None,
                          progress: bool = True) -> tuple[str, str]:
    """A matching table from ``folders`` ('reused'), else a fresh profile ('profiled') written to
    ``out`` (default: latency_tables/ named after the device and protocol)."""
    found = find_table(req, loaded, folders)
    if found:
        return found, "reused"
    from .latency import ProfileConfig, profile

    kw = {"backend": req.backend, "threads": req.threads, "batch": req.batch, "precision": req.precision,
          "input_size": req.input_size or loaded.input_size, "spinning": req.spinning, "align": req.align,
          "min_width": req.min_width, "ignore": req.ignore, "out": out, **(profile_overrides or {})}
    names = {f.name for f in dataclasses.fields(ProfileConfig)}
    unknown = sorted(set(kw) - names)
    if unknown:
        raise ConfigError(f"profile settings {unknown} are not ProfileConfig fields ({', '.join(sorted(names))})")
    return profile(loaded, ProfileConfig(**kw), progress=progress), "profiled"
