"""Reusable argument groups (the Polygraphy pattern) shared by the commands."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..base_model import LoadedModel


def add_model_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=default, required=default is None,
                   help="torchvision name (resnet50), timm:NAME (timm architecture, random init; pip install 'hwprune[timm]'), built-in (tiny_resnet_synthetic: trained on --data synthetic; tiny_resnet: random init), 'pkg.module:factory', "
                        "'path/file.py:factory', or an hwprune checkpoint (.pt)")
    g.add_argument("--weights", help="local state_dict file to load into the model (no downloads)")
    g.add_argument("--num-classes", type=int, help="classifier outputs, passed to the model factory")
    g.add_argument("--input-size", type=int, help="square input resolution (default: the model's own, e.g. 224)")
    g.add_argument("--batch", type=int, default=1, help="batch size to trace/profile with (default 1)")


#: ``--align`` help of the commands that default it to the device's grid (:func:`resolve_align`)
DEVICE_ALIGN_HELP = ("channel widths are multiples of this (default: the grid of the device the table was profiled on, "
                     "from its fingerprint, else this machine's: on ort-cpu the CPU's NCHWc channel block -- 16 "
                     "with AVX-512, 8 with AVX2 -- since other widths leave ORT's blocked layout and pay reorders, "
                     "and 16 for --precision int8, the channel block of ORT's int8 kernels; 8 otherwise); a "
                     "grouped conv whose conv groups are each a multiple of it at full width keeps them so "
                     "(hwprune inspect shows every group's step)")


def add_grid_args(p: argparse.ArgumentParser, align_default: int | None = 8, align_help: str | None = None) -> None:
    g = p.add_argument_group("channel grid")
    g.add_argument("--align", type=int, default=align_default,
                   help=align_help or "widths are multiples of this (default 8: tensor cores, SIMD)")
    g.add_argument("--min-width", type=int, default=8, help="no group is cut below this many channels (default 8)")
    g.add_argument("--ignore", action="append", default=[], metavar="MODULE",
                   help="module name whose channels stay untouched (repeatable)")


def add_executor_args(g, what: str) -> None:
    """``--executor``, ``--ray-address``, ``--worker-threads`` (:mod:`hwprune.executor`) on the
    argument group ``g``; ``what`` says what the executor runs, e.g. "candidates are scored"."""
    g.add_argument("--executor", default="local", choices=["local", "ray"],
                   help=f"where {what}: local (default, in this process) or ray (pip install 'hwprune[ray]'); the "
                        "same result either way (for work that trains, when --worker-threads equals this machine's "
                        "torch threads)")
    g.add_argument("--ray-address", metavar="auto|HOST:PORT",
                   help="--executor ray: the cluster to join (auto: one started here with `ray start --head`; "
                        "default: a Ray runtime started for this run on this machine)")
    g.add_argument("--worker-threads", type=int, default=1,
                   help="--executor ray: torch threads (and Ray CPUs) per task (default 1, so workers do not fight "
                        "over cores); work that trains (fine-tuned candidates, family members) gives the local "
                        "run's numbers only when this equals the local torch threads")


def load_from_args(args) -> "LoadedModel":
    from ..models import load_model

    kwargs = {"num_classes": args.num_classes} if args.num_classes else {}
    if str(args.model).startswith("timm:") and getattr(args, "input_size", None):
        kwargs["img_size"] = args.input_size  # a ViT/Swin is built for its input size (hwprune.timm_models)
    return load_model(args.model, weights=args.weights, kwargs=kwargs or None)


def resolve_align(align: int | None, backend: str | None, precision: str | None = None, tables=()) -> int:
    """``--align`` as given, else the device's grid at ``precision``: with ``tables`` (the tables
    the budgets are spent on), the grid their devices reward, read from each table's fingerprint
    and a multiple of the grid it was profiled on (a table profiled elsewhere speaks for that
    device); else this machine's grid as ``backend`` names it (``default_grid`` in the registry; on
    ``ort-cpu`` the CPU's NCHWc block, 16 with AVX-512, and 16 for int8); 8 for budgets that are
    not latency (no device to ask) and names the registry does not know
    (:func:`hwprune.latency.profile.search_align`)."""
    if align is not None:
        return align
    from ..latency.profile import search_align

    return search_align(backend, precision, tables)


def grid_hint(backend: str | None, align: int, precision: str | None = None, tables=()) -> str | None:
    """A one-line hint when ``align`` is off the grid ORT's kernels reward on the device (the NCHWc
    block for fp32, 16 channels for int8: :func:`resolve_align`'s default, for the devices of
    ``tables`` when given, else this CPU; None if it is on it or the grid is not known)."""
    if backend not in (None, "ort-cpu"):
        return None
    from ..latency import as_table

    tables = [as_table(t, check_device=False) for t in tables if t is not None]
    if tables:
        if any(t.backend != "ort-cpu" for t in tables):
            return None  # a GPU's grid is not a CPU layout
        blocks = [int((t.device or {}).get("nchwc_block") or 0) for t in tables]
        where = "the table's device" if len(tables) == 1 else "the tables' devices"
    else:
        from hwprune_deploy.ort import nchwc_block

        blocks, where = [nchwc_block()], "this CPU"
    grid = resolve_align(None, "ort-cpu", precision, tables)
    if not all(blocks) or align % grid == 0:
        return None
    if precision == "int8":
        return (f"hint: ONNX Runtime's int8 kernels on {where} work on {grid} channels at a time; widths on "
                f"--align {align} that are not multiples of {grid} pay for the next multiple or more -- pass "
                f"--align {grid} for widths the device rewards")
    return (f"hint: {where} runs ONNX Runtime convs in {grid}-channel blocks (NCHWc); widths on --align "
            f"{align} that are not multiples of {grid} leave that layout and pay reorders -- pass --align "
            f"{grid} (or leave it out) for widths the device rewards")


#: exit status of a command whose result missed its latency budget by measurement (prune and run alike)
EXIT_BUDGET_MISSED = 3


def budget_exit_code(prune_report) -> int:
    """0, or :data:`EXIT_BUDGET_MISSED` when the closed loop measured the result over its budget
    (``prune_report``: a :class:`hwprune.prune_report.PruneReport`, or its JSON form)."""
    met = getattr(prune_report, "met_budget", None)
    if met is None and isinstance(prune_report, dict):
        if prune_report.get("devices"):  # several budgets: every device measured met its own (PruneReport.met_budget)
            met = all(r["met"] for r in prune_report["devices"] if r.get("checked") == "measured")
        else:
            met = (prune_report.get("latency") or {}).get("met_budget")
    return EXIT_BUDGET_MISSED if met is False else 0
