"""``hwprune run``: profile, prune, export, bench and report in one go (embedded default demo)."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from types import SimpleNamespace

from hwprune_deploy.backends import list_backends

from ..run_config import RunConfig
from .common import DEVICE_ALIGN_HELP, budget_exit_code, grid_hint, resolve_align
from .main import SUMMARIES


def register(sub) -> None:
    d = SimpleNamespace(**{f.name: f.default for f in dataclasses.fields(RunConfig)})  # the defaults, unchecked
    p = sub.add_parser("run", help=SUMMARIES["run"],
                       description="The whole path in one command: profile the device (or reuse a matching "
                                   "table from latency_tables/), prune to the budget, fine-tune if asked, export "
                                   "ONNX, bench baseline vs pruned side by side, write report.md/report.json/PNGs. "
                                   "With no arguments: tiny_resnet_synthetic (trained on the synthetic data), ONNX Runtime CPU with "
                                   "2 threads, --budget 0.5x. Several --budget values prune one model for "
                                   "several devices (the first is the device this run profiles and benches).")
    p.add_argument("--model", default=d.model, help=f"model spec (default {d.model}, trained on the synthetic data)")
    p.add_argument("--weights", help="state_dict for --model (no downloads)")
    p.add_argument("--num-classes", type=int, help="classifier outputs, passed to the model factory")
    p.add_argument("--data", default=d.data, help="synthetic (default), imagefolder:PATH, cifar10:PATH, module:function")
    p.add_argument("--budget", action="append", metavar="BUDGET[@TABLE]",
                   help=f"latency budget: {d.budget} (default), 12ms, 2.0speedup, 50%%flops; BUDGET@TABLE spends "
                        "that table (as --table). Repeat it for one model that meets budgets on several devices "
                        "(--budget 0.5x --budget 0.6x@B.json --budget 4ms@C.json): the first is this run's device "
                        "(profiled, benched), every one is met, each measured on its own device where this machine "
                        "can run it (report.md: one row per device, devices.png)")
    p.add_argument("--strategy", help="width search (default: halp if available, else netadapt)")
    p.add_argument("--criterion", default=d.criterion, help="channel importance criterion (default l1)")
    p.add_argument("--backend", default=d.backend, choices=list_backends(),
                   help=f"where to profile, check and bench (default {d.backend})")
    p.add_argument("--threads", type=int, default=None,
                   help=f"CPU threads (default: the given table's, else {d.threads})")
    p.add_argument("--ort-spinning", action="store_true",
                   help="ort-cpu: profile the table, check the budget and bench with ORT's worker threads spinning, "
                        "as a deployment with ORT's default session options runs (default: workers blocked; "
                        "README: Spinning)")
    p.add_argument("--table", help="latency table to use (default: reuse a matching one or profile)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="int8 (ort-cpu): prune against an int8 table to the budget (a share of the fp32 unpruned "
                        "latency), check the quantized result by measurement, write baseline-int8.onnx and "
                        "pruned-int8.onnx and report fp32 unpruned / int8 unpruned / int8 pruned")
    p.add_argument("--closed-loop-rounds", type=int, default=d.closed_loop_rounds,
                   help=f"re-searches when the measurement misses the budget (default {d.closed_loop_rounds}); "
                        "exit status 3 when the result still misses it, as `hwprune prune`")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                   help=f"fine-tune the pruned model for E epochs (default {d.finetune_epochs}; 0: none)")
    p.add_argument("--train-epochs", type=int, help="epochs to train the default model (default: trainer's own)")
    p.add_argument("--batch", default="1,8", help="batch sizes to bench (default 1,8)")
    p.add_argument("--input-size", type=int, help="square input resolution (default: the model's own)")
    p.add_argument("--align", type=int, default=None, help=DEVICE_ALIGN_HELP)
    p.add_argument("--min-width", type=int, default=d.min_width, help="narrowest group width (default 8)")
    p.add_argument("--max-prune", type=float, default=d.max_prune, metavar="F",
                   help="no search removes more than this fraction of any group's channels (default 1)")
    p.add_argument("--out", default=d.out, help=f"output folder (default {d.out})")
    p.add_argument("--quick", action="store_true", help="smaller everything (CI smoke run, ~1 minute)")
    p.add_argument("--n-train", type=int, help="synthetic data: training images (default 5000; --quick 256)")
    p.add_argument("--n-val", type=int,
                   help="synthetic data: held-out images the accuracy is scored on (default 1000; --quick 128)")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--aoti", action=argparse.BooleanOptionalAction, default=None,
                   help="also compile baseline and pruned into AOTInductor packages (torch.export; .pt2 in --out) "
                        "for the backend's device, parity-checked, and bench them side by side: the GPU artefact "
                        "without TensorRT (default: on with --backend torch-cuda, off otherwise; torch-cpu allowed)")
    p.set_defaults(func=run)


def split_budgets(budgets: list[str] | None, table: str | None,
                  default: str) -> tuple[str, str | None, tuple[str, ...]]:
    """(budget, table, more budgets) of `hwprune run`'s ``--budget`` values. The first budget is
    the run's device: its table is ``BUDGET@TABLE`` or ``--table`` (else found or profiled), and
    the run benches there. Further budgets (``0.6x@B.json``, ``4ms@C.json``, ``50%flops``) are
    met by the same pruned model, each measured on its own device where this machine reaches it
    (:mod:`hwprune.devices`), as `hwprune prune` with several budgets does."""
    from ..budget import parse_bound_budget
    from ..errors import ConfigError

    budgets = budgets or [default]
    bound = parse_bound_budget(budgets[0])
    more = tuple(budgets[1:])
    if bound.table is None:
        return budgets[0], table, more
    if table and os.path.abspath(table) != os.path.abspath(bound.table):
        raise ConfigError(f"--budget {budgets[0]} names the table {bound.table!r} and --table {table!r} another; "
                          "give one of them")
    return bound.budget.text, bound.table, more


def run(args) -> int:
    from ..pipeline import run_pipeline

    args.budget, args.table, more = split_budgets(args.budget, args.table, RunConfig.budget)
    tables = []
    if more and args.precision != "int8":  # several devices (int8: one, RunConfig says): bound tables there and
        # of a precision this run spends, before any work
        from ..budget import parse_budgets
        from ..service import budget_tables

        tables = budget_tables(parse_budgets([args.budget, *more]), args.table, args.precision)
    elif args.table and os.path.isfile(args.table):  # a missing one is reported, with its fix, where it is read
        from ..latency import LatencyTable

        tables = [LatencyTable.load(args.table, check_device=False)]  # its device's grid, not this machine's
    from ..service import measuring_threads

    run_table = next((t for t in tables if args.table and t.path == args.table), None)
    args.threads = measuring_threads(args.threads, run_table, args.backend, RunConfig.threads)
    config = RunConfig(model=args.model, weights=args.weights, data=args.data, budget=args.budget, more_budgets=more,
                       strategy=args.strategy, criterion=args.criterion, backend=args.backend, threads=args.threads,
                       spinning=args.ort_spinning, table=args.table, closed_loop_rounds=args.closed_loop_rounds,
                       finetune_epochs=args.finetune_epochs,
                       train_epochs=args.train_epochs,
                       batches=args.batch, input_size=args.input_size, num_classes=args.num_classes,
                       align=resolve_align(args.align, args.backend, args.precision, tables), min_width=args.min_width,
                       max_prune=args.max_prune, out=args.out,
                       quick=args.quick, n_train=args.n_train, n_val=args.n_val, seed=args.seed,
                       progress=not args.no_progress, aoti=args.aoti,
                       precision=args.precision)
    if hint := grid_hint(config.backend, config.align, config.precision, tables):
        print(hint, file=sys.stderr)
    rep = run_pipeline(config)
    print(summary_lines(rep))
    return budget_exit_code(rep.get("prune") or {})


def summary_lines(rep: dict) -> str:
    L = []
    acc = rep.get("accuracy") or {}
    budget = f"budgets {', '.join(rep['budgets'])}" if rep.get("budgets") else f"budget {rep.get('budget')}"
    L.append(f"model {rep['model'].get('spec')}, strategy {rep.get('strategy')}, {budget}, "
             f"backend {rep['backend']['name']} ({rep['backend']['threads']} thread"
             + ("s" if rep['backend']['threads'] != 1 else "")
             + (", workers spinning" if rep['backend'].get('spinning') else "") + ")")
    L.append(f"FLOPs {rep['flops']['reduction']:.2f}x fewer, params {rep['params']['reduction']:.2f}x fewer")
    if acc.get("before") is not None:
        after = acc.get("after_finetune", acc.get("after"))
        L.append(f"top-1 {100 * acc['before']:.1f}% -> {100 * after:.1f}%"
                 + (f" ({100 * acc['after']:.1f}% before fine-tune)" if "after_finetune" in acc else ""))
    for b, v in (rep.get("latency") or {}).items():
        L.append(f"batch {b}: {v['baseline']['median_ms']:.3f} -> {v['pruned']['median_ms']:.3f} ms, "
                 f"{v.get('speedup', 0):.2f}x measured speedup")
    aoti = (rep.get("bench") or {}).get("aoti")
    if aoti:
        L.append(f"AOTInductor packages ({aoti['device']}): {aoti['speedup']:.2f}x measured speedup, pruned package "
                 f"{aoti['packages']['pruned']['path']}")
    verdict = (rep.get("prune") or {}).get("verdict")
    devices = (rep.get("prune") or {}).get("devices")
    if devices:  # several budgets: the verdict's head, then one line per device
        from ..devices import device_line, verdict_head

        L.append(f"budget: {verdict_head(devices, rep['prune']['config']['tolerance'])}")
        L += [f"  {device_line(row)}" for row in devices]
    elif verdict:
        L.append(f"budget: {verdict}")
    p = rep.get("predicted") or {}
    if p.get("speedup"):
        L.append(f"table predicted {p['speedup']:.2f}x at batch {p['batch']} (measured {p['measured_speedup']:.2f}x"
                 + (f"; closed loop {p['closed_loop_speedup']:.2f}x" if p.get("closed_loop_speedup") else "")
                 + (f"; ORT spinning {p['spinning_speedup']:.2f}x" if p.get("spinning_speedup") else "") + ")")
    for n in rep.get("notes", []):
        L.append(f"note: {n}")
    L.append(f"took {rep.get('total_seconds', 0):.0f} s")
    L.append(f"report: {rep['files']['report_md']}")
    from ..models import torchvision_classifiers

    if rep["model"].get("spec") in torchvision_classifiers():  # the stock models at this latency: worth shipping?
        out = os.path.dirname(rep["files"]["report_md"])
        L.append(f"is it worth shipping? time the stock models at its latency: hwprune siblings --model "
                 f"{os.path.join(out, 'pruned.pt')} --scope all")
    for r in (rep.get("int8") or {}).get("rows", []):
        L.append(f"{r['model']}: {r['latency_ms']:.3f} ms, {r['speedup']:.2f}x vs fp32 unpruned, top-1 {100 * r['top1']:.1f}%")
    return "\n".join(L)
