"""``hwprune prune``: search widths (ratio or budget), cut channels, check by measurement, write
plan + checkpoint + report.json (+ pareto.json and PNGs)."""
from __future__ import annotations

import argparse
import os
import sys

from hwprune_deploy.backends import list_backends

from ..importance import list_criteria
from ..jsonio import write_json
from ..outdir import check_output_dir, staged_output_dir
from ..prune_config import PruneConfig
from ..strategies import describe_strategies, get_strategy_spec, list_strategies, option_owners
from .common import (DEVICE_ALIGN_HELP, add_executor_args, add_grid_args, add_model_args, budget_exit_code, grid_hint,
                     load_from_args, resolve_align)
from .main import SUMMARIES


#: strategy options with a flag of their own (--amc-episodes N is --option amc_episodes=N)
OPTION_FLAGS = ("amc_episodes", "evo_pop", "evo_gens", "netadapt_initial", "netadapt_decay", "netadapt_ft_steps")

OPTIONS_EPILOG = ("strategy options: --option KEY=VALUE, several at once: --option halp_steps=6 halp_bins=4000.\n"
                  "An option of another strategy is ignored; an unknown name or a malformed or out-of-range value\n"
                  "is an error.\n")


class _EpilogFormatter(argparse.HelpFormatter):
    """Wraps the description as usual; prints a text with line breaks (the option table) as laid out."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def register(sub) -> None:
    p = sub.add_parser("prune", help=SUMMARIES["prune"],
                       formatter_class=_EpilogFormatter, epilog=OPTIONS_EPILOG + describe_strategies(),
                       description="Prune channels and write OUT/plan.json, OUT/pruned.pt (plan + weights) and "
                                   "OUT/report.json (budget, predicted and measured latency, FLOPs, params, "
                                   "accuracy, widths). Example: hwprune prune --model tiny_resnet_synthetic --budget 0.5x "
                                   "--strategy netadapt --data synthetic --evaluator adaptive-bn --out out/netadapt --plot")
    add_model_args(p, default="tiny_resnet_synthetic")
    add_grid_args(p, align_default=None, align_help=DEVICE_ALIGN_HELP)
    p.add_argument("--max-prune", type=float, default=1.0, metavar="F",
                   help="no search removes more than this fraction of any group's channels (e.g. 0.75 keeps at "
                        "least a quarter of every layer; Torch-Pruning's max_pruning_ratio). Default 1: only "
                        "--min-width bounds a layer, and a search may take some layers down to it")
    p.add_argument("--strategy", default="uniform", help=f"width search ({', '.join(list_strategies())})")
    p.add_argument("--ratio", type=float, help="fraction of channels to remove per group (uniform), e.g. 0.5")
    p.add_argument("--budget", action="append", metavar="BUDGET[@TABLE]",
                   help="12ms, 0.5x (of unpruned latency), 2.0speedup, 50%%flops, 30%%params, 1.2gflops. Give it "
                        "several times to meet several budgets at once, each latency budget on its own device's "
                        "table: --budget 0.5x@latency_tables/A.json --budget 4ms@latency_tables/B.json (without @: "
                        "--table); every reachable device is measured, the others reported as predicted")
    p.add_argument("--table", help="latency table JSON (default: reuse a matching one from latency_tables/ or profile)")
    p.add_argument("--criterion", default="l1", help=f"which channels to keep ({', '.join(list_criteria())})")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same plan)")
    p.add_argument("--out", default="out/prune", help="output folder (default out/prune)")
    g = p.add_argument_group("evaluation")
    g.add_argument("--data", help="synthetic | imagefolder:PATH | cifar10:PATH | module:function")
    g.add_argument("--evaluator", default="adaptive-bn", help="accuracy | adaptive-bn | reconstruct | finetune")
    g.add_argument("--data-batch", type=int, default=64, help="batch size of the data loaders (default 64)")
    g.add_argument("--n-train", type=int, default=5000, help="synthetic data: training images (default 5000)")
    g.add_argument("--n-val", type=int, default=1000,
                   help="synthetic data: held-out images every candidate is scored on (default 1000; fewer: a faster, "
                        "noisier search)")
    g = p.add_argument_group("closed loop (measurement)")
    g.add_argument("--backend", default=None, choices=[*list_backends(), "none"],
                   help="measure the result on this backend (default: the backend the latency table was measured on, "
                        "ort-cpu when a table is found or profiled; 'none' to skip)")
    g.add_argument("--threads", type=int, default=None,
                   help="backend threads (default: those of the table the first latency budget is spent on, else 2)")
    g.add_argument("--closed-loop-rounds", type=int, default=3, help="re-searches when the measurement misses (default 3)")
    g.add_argument("--tolerance", type=float, default=0.03, help="allowed measured overshoot (default 0.03)")
    g.add_argument("--spend-band", type=float, default=0.10,
                   help="a result measured more than this fraction under the budget is searched again with a looser "
                        "target (within --closed-loop-rounds), so the latency you allowed buys accuracy; a looser one "
                        "that misses is searched again halfway back while rounds remain, and the last result that "
                        "met the budget is kept (default 0.10; 0 disables)")
    g.add_argument("--precision", default="fp32", choices=["fp32", "int8"],
                   help="int8 (ort-cpu): spend an int8 latency table (found in latency_tables/ or profiled with every "
                        "unit statically quantized) and measure the quantized result side by side with the quantized "
                        "unpruned model. fp32 (default) also spends a GPU table profiled in fp16 or bf16 "
                        "(hwprune profile --backend torch-cuda --precision fp16), measured in that precision")
    g.add_argument("--budget-ref", default="fp32", choices=["fp32", "int8"],
                   help="int8: a relative budget (0.25x, 4speedup) is a share of the fp32 unpruned model (default: what "
                        "runs today; timed beside the int8 result by the closed loop) or of the int8 unpruned model. "
                        "Among several budgets the same holds for one bound to an int8 table (0.6x@INT8_TABLE): of the "
                        "fp32 unpruned model on that device (its fp32/int8 ratio measured here, so the device must be "
                        "this machine) or, with --budget-ref int8, of the int8 one")
    g.add_argument("--ort-spinning", action="store_true",
                   help="ort-cpu: spend and check a table timed with ORT's worker threads spinning (as a deployment "
                        "with ORT's default session options runs); default: workers blocked, as tables are profiled")
    add_executor_args(g, "candidates are scored (evolution's population, netadapt's proposals)")
    g.add_argument("--recalibrate", action="store_true",
                   help="before searching, re-time an existing table's full model and calibration variants and re-fit "
                        "its residual curve (units kept; about 30 s for resnet50): for a table profiled hours ago on a "
                        "machine that drifts (same as `hwprune profile --recalibrate`). With several budgets, every "
                        "table a budget is bound to that this machine can measure, each with its own settings")
    g = p.add_argument_group("fine-tune")
    g.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune the result for E epochs (needs --data)")
    g.add_argument("--finetune-lr", type=float, default=0.01)
    g.add_argument("--distill", action="store_true", help="distil from the unpruned model while fine-tuning")
    g.add_argument("--iterative", type=int, default=1, metavar="K",
                   help="reach the budget in K cut + fine-tune steps, targets geometric from the unpruned cost to "
                        "the budget (baseline * (budget/baseline)**(k/K)); the last step is checked by measurement "
                        "as usual (needs --data; default 1: one shot)")
    g.add_argument("--iterative-epochs", type=int, default=1, metavar="E",
                   help="fine-tune epochs between iterative steps (default 1; --distill applies)")
    g = p.add_argument_group("regularise, then cut (hwprune.regularize)")
    g.add_argument("--regularize", metavar="NAME",
                   help="after the search, train the unpruned model with a penalty on the channels the plan cuts, "
                        "then cut: slimming | tpp | group-lasso (needs --data)")
    g.add_argument("--reg-epochs", type=int, default=1, help="epochs of regularised training (default 1)")
    g.add_argument("--reg-strength", type=float, default=None,
                   help="slimming: λ (default 1e-4); tpp, group-lasso: λ's growth per 10 steps (default 1e-4, "
                        "ceiling 1)")
    g = p.add_argument_group("strategy options")
    owners = option_owners()
    for name in OPTION_FLAGS:
        row = next(r for r in get_strategy_spec(owners[name]).options.describe() if r["name"] == name)
        g.add_argument("--" + name.replace("_", "-"), metavar=row["type"].upper(),
                       help=f"same as --option {name}={row['type'].upper()} ({owners[name]}; default {row['default']})")
    g.add_argument("--option", action="extend", nargs="+", default=[], metavar="KEY=VALUE",
                   help="a strategy option, or several (each strategy's are listed below)")
    g = p.add_argument_group("2:4 sparsity (NVIDIA ASP: hwprune.sparsity)")
    g.add_argument("--sparsity", metavar="N:M",
                   help="2:4: after any channel cut, keep the 2 largest-|w| of every 4 consecutive input weights of "
                        "each Linear/Conv whose weight is (out %% 8 == 0, in %% 16 == 0), as NVIDIA's ASP does; "
                        "--finetune-epochs and `hwprune train` then fine-tune with the masks fixed. Alone (no "
                        "--ratio/--budget) it keeps every channel, and --model may be a checkpoint. Runs faster only "
                        "on sparse tensor cores: hwprune export --format tensorrt --sparse")
    p.add_argument("--plot", action="store_true",
                   help="write widths.png (and pareto.png for evolution; devices.png with several budgets: each "
                        "device's share of its budget, measured and predicted)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _options(args) -> dict:
    """The dedicated flags and --option KEY=VALUE pairs as given (strings): PruneConfig checks them
    against the strategy's options dataclass, which coerces the values and says what is wrong."""
    opts = {k: getattr(args, k) for k in OPTION_FLAGS if getattr(args, k) is not None}
    opts.update(option_pairs(args.option))
    return opts


def option_pairs(pairs) -> dict:
    """``--option KEY=VALUE`` pairs as a dict of strings; a pair without ``=`` is a ConfigError."""
    from ..errors import ConfigError

    opts = {}
    for kv in pairs:
        k, eq, v = kv.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"--option {kv!r}: write KEY=VALUE, e.g. --option halp_steps=6")
        opts[k.strip()] = v.strip()
    return opts


def _note_ignored_options(config: PruneConfig) -> None:
    """Say which options belong to another strategy (PruneConfig accepts and ignores them)."""
    own, owners = set(get_strategy_spec(config.strategy).options.names()), option_owners()
    for k in config.options:
        if k not in own:
            print(f"note: option {k} is for strategy {owners[k]}; {config.strategy} ignores it", file=sys.stderr)


def _check_regularize(args) -> None:
    """Refuse a --regularize the run cannot honour before the search, not after it."""
    from ..errors import ConfigError
    from ..regularize import check_regularizer

    check_regularizer(args.regularize, args.reg_strength)
    if not args.data:
        raise ConfigError(f"--regularize {args.regularize} trains the unpruned model before the cut: pass --data "
                          "synthetic (or imagefolder:PATH ...)")
    if args.reg_epochs < 1:
        raise ConfigError(f"--reg-epochs {args.reg_epochs} must be >= 1")
    if args.finetune_epochs:
        raise ConfigError("--finetune-epochs fine-tunes the plain cut, which --regularize replaces: leave it out and "
                          "fine-tune OUT/pruned.pt afterwards with hwprune train")


def table_request(config: PruneConfig, spinning: bool):
    """What this prune asks of a latency table (the same rule `hwprune run` applies)."""
    from ..service import TableRequest

    return TableRequest(backend=config.backend or "ort-cpu", threads=config.threads, batch=config.batch,
                        precision=config.precision, spinning=spinning, align=config.align, min_width=config.min_width,
                        input_size=config.input_size, ignore=config.ignore)


def make_evaluation(args, loaded, size: int):
    """(data bundle, evaluator, words saying what it is)."""
    if not args.data:
        return None, None, None
    from ..data import make_data

    data = make_data(args.data, input_size=size, batch_size=args.data_batch, seed=args.seed, n_train=args.n_train,
                     n_val=args.n_val)
    from ..evaluate import make_evaluator
    from ..train import check_num_classes

    check_num_classes(loaded.model, data, size)  # before the search, not as a traceback in cross_entropy

    return data, make_evaluator(args.evaluator, data, original=loaded.model), f"{args.evaluator} on {args.data}"


def write_outputs(folder: str, result, plot: bool = False) -> list[str]:
    """Write plan.json, pruned.pt, pareto.json (evolution), the PNGs and report.json into
    ``folder``; returns the names written."""
    r = result.report
    result.plan.save(os.path.join(folder, "plan.json"))
    from ..checkpoint import save_checkpoint

    save_checkpoint(os.path.join(folder, "pruned.pt"), result.model, result.plan)
    written = ["plan.json", "pruned.pt", "report.json"]
    if "pareto" in result.artifacts:
        write_json(os.path.join(folder, "pareto.json"), result.artifacts["pareto"])
        written.append("pareto.json")
    if plot:
        from ..search_plots import plot_pareto, plot_width_profile

        plot_width_profile(r, os.path.join(folder, "widths.png"))
        written.append("widths.png")
        if "pareto" in result.artifacts:
            plot_pareto(result.artifacts["pareto"], os.path.join(folder, "pareto.png"))
            written.append("pareto.png")
        if getattr(r, "devices", None):
            from ..search_plots import plot_devices

            plot_devices(r.devices, os.path.join(folder, "devices.png"))
            written.append("devices.png")
    if getattr(r, "devices", None):  # several budgets: report.md with one row per device
        from ..devices import write_devices_markdown

        write_devices_markdown(os.path.join(folder, "report.md"), r)
        written.append("report.md")
    write_json(os.path.join(folder, "report.json"), r.to_dict())
    return written


def _check_sparsity(args) -> None:
    """Refuse what a --sparsity run cannot honour, before any work."""
    from ..errors import ConfigError
    from ..sparsity import parse_pattern

    parse_pattern(args.sparsity)
    if args.regularize:
        raise ConfigError(f"--regularize replaces the cut model after the search, which would drop the --sparsity "
                          f"{args.sparsity} masks: regularise and cut first, then run hwprune prune --model "
                          f"OUT/pruned.pt --sparsity {args.sparsity}")
    if args.evaluator == "reconstruct":
        raise ConfigError("--evaluator reconstruct refits the kept weights densely, so it would score a model without "
                          "the 2:4 masks; with --sparsity use accuracy, adaptive-bn or finetune")
    if args.ratio is None and args.budget is None:
        if args.strategy != "uniform":
            raise ConfigError(f"--strategy {args.strategy} searches channel widths, but --sparsity {args.sparsity} "
                              "alone cuts no channel: add --budget (or --ratio) to prune channels too, or leave "
                              "--strategy out")
        if args.table:
            raise ConfigError(f"--table prices channel cuts, but --sparsity {args.sparsity} alone cuts no channel: "
                              "add --budget to prune channels too, or leave --table out")


def _print_sparsity(sp: dict, acc) -> None:
    line = (f"{sp['pattern']} sparsity (ASP): {sp['layers']} layers, {100 * sp['fraction_masked_of_all_weights']:.1f}% "
            f"of all weights masked")
    if acc and "after_sparsity" in acc:
        dense = acc.get("after", acc.get("before"))
        line += (f"; accuracy {dense:.4f} before masking -> {acc['after_sparsity']:.4f} masked"
                 + (f" -> {acc['after_finetune']:.4f} after fine-tune (masks fixed)" if "after_finetune" in acc
                    else ""))
    print(line)


def run_sparsity_only(args) -> int:
    """--sparsity without --ratio/--budget: mask the model as it is, score, fine-tune (hwprune.sparsify)."""
    from ..sparsify import sparsify_loaded

    check_output_dir(args.out)
    loaded = load_from_args(args)
    size = args.input_size or loaded.input_size
    data, evaluator, eval_words = make_evaluation(args, loaded, size)
    if eval_words:
        print(f"evaluator: {eval_words}", file=sys.stderr)
    result = sparsify_loaded(loaded, args.sparsity, evaluator, data, finetune_epochs=args.finetune_epochs,
                             finetune_lr=args.finetune_lr, distill=args.distill, seed=args.seed, input_size=size,
                             progress=not args.quiet)
    result.report.evaluator = eval_words
    with staged_output_dir(args.out) as work:
        written = write_outputs(work, result)
    _print_sparsity(result.report.sparsity, result.report.accuracy)
    print(f"wrote {', '.join(os.path.join(args.out, w) for w in written)}")
    return 0


def _primary_table(args, bounds, tables: list):
    """The loaded table the first latency budget is spent on (``@TABLE``, else ``--table``; None
    when there is none or it is not there yet): the closed loop measures where and as that table
    was measured, unless --backend / --threads say otherwise (a torch-cuda table checked on ORT
    CPU would judge the budget on the wrong device)."""
    path = next((b.table or args.table for b in bounds if b.budget.is_latency), None)
    return next((t for t in tables if t.path == path), None)


def _recalibrate_tables(args, loaded, table: str | None, bounds) -> None:
    """``--recalibrate``: ``table`` (``--table``, with ``--threads``) and every table a budget is
    bound to (``0.5x@T``, with its own settings) that this machine can measure; a bound table of
    another device is left as it is, said so (timing it here would write this machine's speed into
    that device's table)."""
    from ..latency import LatencyTable
    from ..latency.profile import recalibrate
    from ..service import reachable

    todo = [(table, args.threads)] if table is not None else []
    for b in bounds:
        if b.budget.is_latency and b.table is not None and b.table not in [t for t, _ in todo]:
            ok, why = reachable(LatencyTable.load(b.table, check_device=False))
            if ok:
                todo.append((b.table, None))
            else:
                print(f"latency table {b.table} not recalibrated: {why}", file=sys.stderr)
    for path, threads in todo:
        rc = recalibrate(loaded, path, threads=threads, input_size=args.input_size)
        named = f"{path} " if len(todo) > 1 else ""
        print(f"latency table {named}recalibrated ({rc['variants']} calibration variants, {rc['seconds']:.1f} s): "
              f"unpruned {rc['before']['full_ms']:.3f} -> {rc['after']['full_ms']:.3f} ms", file=sys.stderr)


def run(args) -> int:
    from ..budget import parse_budgets
    from ..service import budget_tables, measuring_threads

    if args.sparsity:
        _check_sparsity(args)
        if args.ratio is None and args.budget is None:
            return run_sparsity_only(args)
    bounds = parse_budgets(args.budget or [])
    any_latency = any(b.budget.is_latency for b in bounds)
    # a budget bound to a missing table or one of a precision this search cannot spend: before the model is loaded
    tables = budget_tables(bounds, args.table, args.precision, args.budget_ref)
    backend, primary = args.backend, _primary_table(args, bounds, tables)
    if backend is None and any_latency:
        backend = getattr(primary, "backend", None) or "ort-cpu"
    if backend in ("none", ""):
        backend = None
    args.threads = measuring_threads(args.threads, primary, backend)
    # the grid of the devices the budgets are spent on: a table profiled elsewhere speaks for its own device
    align = resolve_align(args.align, backend, args.precision, tables)
    config = PruneConfig(strategy=args.strategy, ratio=args.ratio, criterion=args.criterion, align=align,
                         min_width=args.min_width, max_prune=args.max_prune, batch=args.batch, input_size=args.input_size,
                         ignore=tuple(args.ignore), seed=args.seed, budget=args.budget[0] if args.budget else None,
                         more_budgets=tuple((args.budget or [])[1:]), executor=args.executor,
                         ray_address=args.ray_address, worker_threads=args.worker_threads, options=_options(args),
                         backend=backend, threads=args.threads, closed_loop_rounds=args.closed_loop_rounds,
                         tolerance=args.tolerance, spend_band=args.spend_band, finetune_epochs=args.finetune_epochs,
                         finetune_lr=args.finetune_lr, distill=args.distill, sparsity=args.sparsity,
                         progress=not args.quiet, precision=args.precision, budget_ref=args.budget_ref)
    if args.iterative != 1 or args.iterative_epochs != 1:
        from dataclasses import replace

        config = replace(config, iterative=args.iterative, iterative_epochs=args.iterative_epochs)
    _note_ignored_options(config)
    from ..executor import check_executor

    check_executor(config.executor, config.ray_address)  # Ray missing or not answering: before any work
    if args.regularize:
        _check_regularize(args)
    check_output_dir(args.out)  # before the search, not after it
    loaded = load_from_args(args)
    size = args.input_size or loaded.input_size
    # the data before the table: a wrong --data path or class count fails now, not after minutes of profiling
    data, evaluator, eval_words = make_evaluation(args, loaded, size)
    table = args.table
    if any_latency and (hint := grid_hint(config.backend, config.align, config.precision, tables)):
        print(hint, file=sys.stderr)
    how = "given"
    if any(b.budget.is_latency and b.table is None for b in bounds):  # a latency budget on --table
        from ..backends import check_ort_spinning
        from ..service import check_given_table, find_or_profile_table

        check_ort_spinning(args.ort_spinning, config.backend or "ort-cpu")
        req = table_request(config, args.ort_spinning)
        if table is None:
            table, how = find_or_profile_table(loaded, req, progress=not args.quiet)
            print(f"latency table: {how} {table}", file=sys.stderr)
        else:
            check_given_table(table, req)
    if args.recalibrate:
        _recalibrate_tables(args, loaded, table if how != "profiled" else None, bounds)  # a fresh profile is calibrated
    if evaluator is None and args.strategy in ("sensitivity", "netadapt", "amc", "evolution"):
        import torch

        from ..strategies._common import fidelity_evaluator

        evaluator = fidelity_evaluator(loaded.model, torch.randn(1, 3, size, size), seed=args.seed)
        eval_words = "no --data: logit fidelity to the unpruned model on random inputs (a stand-in, not accuracy)"
    if eval_words:
        print(f"evaluator: {eval_words}", file=sys.stderr)
    from ..prune import prune

    result = prune(loaded, config, calib=data.calib if data is not None else None, table=table,
                   evaluator=evaluator, data=data)
    r = result.report
    r.evaluator = eval_words
    if args.regularize:
        from ..regularize import regularize_then_cut

        result.model, r.regularize = regularize_then_cut(
            loaded, result.plan, data, args.regularize, epochs=args.reg_epochs, strength=args.reg_strength,
            seed=args.seed, progress=not args.quiet, evaluator=evaluator)
    with staged_output_dir(args.out) as work:  # every file or none; an earlier OUT is replaced only at the end
        written = write_outputs(work, result, plot=args.plot)
    print(f"pruned {loaded.model_id['spec']} with {args.strategy}: "
          f"FLOPs {r.before['flops'] / 1e9:.3f} -> {r.after['flops'] / 1e9:.3f} G ({r.flops_reduction:.2f}x), "
          f"params {r.before['params'] / 1e6:.2f} -> {r.after['params'] / 1e6:.2f} M")
    lat = r.latency
    if lat is not None and lat.predicted_ms is not None:
        print(f"latency predicted {lat.baseline_predicted_ms:.3f} -> {lat.predicted_ms:.3f} ms "
              f"({lat.speedup_predicted:.2f}x, table {r.table})")
    if lat is not None and lat.measured_ms is not None:
        prec = f" {lat.precision}" if lat.precision not in (None, "fp32") else ""  # int8: both models quantized
        print(f"latency measured on {lat.backend}{prec} ({lat.threads} thread{'s' if lat.threads != 1 else ''}): {lat.baseline_ms:.3f} -> "
              f"{lat.measured_ms:.3f} ms ({lat.speedup_measured:.2f}x; p10 of repeats, side by side; "
              f"median {lat.measured_median_ms:.3f} ms)")
    if lat is not None and lat.fp32_baseline_ms is not None:
        print(f"against the fp32 unpruned model timed beside it: {lat.fp32_baseline_ms:.3f} -> "
              f"{lat.measured_ms:.3f} ms ({lat.speedup_over_fp32:.2f}x), the model the budget is a share of")
    from ..devices import device_line

    for row in getattr(r, "devices", None) or []:
        print(f"  {device_line(row)}")
    if (r.config or {}).get("int8", {}).get("note"):
        print(f"int8: {r.config['int8']['note']}")
    if r.verdict:
        print(r.verdict)
    if r.accuracy:
        a = r.accuracy
        print(f"accuracy {a['before']:.4f} -> {a['after']:.4f}"
              + (f" -> {a['after_finetune']:.4f} after fine-tune" if "after_finetune" in a else ""))
    if r.sparsity:
        _print_sparsity(r.sparsity, r.accuracy)
    if r.iterative:
        for s in r.iterative["history"]:
            acc = "".join(f", {k.replace('accuracy_', '')} {s[k]:.4f}" for k in ("accuracy_after_cut", "accuracy_after_finetune")
                          if k in s)
            ft = f", fine-tuned {s['finetune']['epochs']} epoch(s)" if "finetune" in s else ""
            print(f"iterative step {s['step']}/{r.iterative['steps']}: target {s['fraction_of_unpruned']:.3f} of the "
                  f"unpruned cost, predicted {s['predicted']:.4g}{ft}{acc}")
    if r.regularize:
        h = r.regularize
        acc = h.get("accuracy")
        print(f"regularized ({h['name']}, {h['epochs']} epochs) then cut: norm of the cut channels "
              f"{h['removed_norm'][0]:.3g} -> {h['removed_norm'][-1]:.3g}"
              + (f", accuracy {acc['before_cut']:.4f} before the cut -> {acc['after_cut']:.4f} after" if acc else ""))
    print(f"wrote {', '.join(os.path.join(args.out, w) for w in written)}")
    from ..models import torchvision_classifiers

    if loaded.model_id.get("spec") in torchvision_classifiers():
        print(f"is it worth shipping? time the stock models at its latency: hwprune siblings --model "
              f"{os.path.join(args.out, 'pruned.pt')} --scope all")
    return budget_exit_code(r)
