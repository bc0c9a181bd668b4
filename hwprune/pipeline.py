"""``hwprune run``: the whole path in one command.

    profile (or reuse a matching table) -> prune to the budget -> fine-tune (optional)
    -> export ONNX (parity-checked) -> bench baseline vs pruned side by side -> report

With no arguments it runs the embedded default: ``tiny_resnet_synthetic`` (tiny_resnet trained on the project's
synthetic data, see :mod:`hwprune.data`), ONNX Runtime on the CPU with 2 threads, ``--budget 0.5x``
with a latency-aware strategy (HALP knapsack if available, else NetAdapt), and writes
``report.md`` + ``report.json`` + PNGs into ``--out``.

Nothing here invents numbers: every latency in the report is measured (interleaved, baseline vs
pruned in one run) or explicitly labelled a table prediction. When a component is missing from
this installation, the step that needs it degrades in a named way (e.g. ``uniform-bisect``:
uniform width ratio found by bisection on *measured* latency) and the report says so.
"""
from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .budget import parse_budget
from .errors import BudgetError, ConfigError, HwpruneError
from .models import LoadedModel, load_model
from .run_config import RunConfig  # noqa: F401  (re-exported: pipeline.RunConfig is the documented name)

PREFERRED_STRATEGIES = ("halp", "netadapt")
FALLBACK_STRATEGY = "uniform-bisect"
from .service import TABLE_DIR  # noqa: E402  (one folder name for prune and run)


@dataclass
class Run:
    """Mutable state of one pipeline run: timings per step and plain-words notes."""

    config: RunConfig
    steps: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    def step(self, name: str):
        run = self

        class _Step:
            def __enter__(self):
                self.t = time.perf_counter()
                self.detail = ""
                print(f"[hwprune run] {name} ...", file=sys.stderr, flush=True)
                return self

            def __exit__(self, et, ev, tb):
                dt = time.perf_counter() - self.t
                if et is None:
                    run.steps.append({"name": name, "seconds": dt, "detail": self.detail})
                    print(f"[hwprune run] {name}: {self.detail} ({dt:.1f} s)", file=sys.stderr, flush=True)
                return False

        return _Step()

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"[hwprune run] note: {text}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ sizes

def sizes(config: RunConfig) -> dict[str, Any]:
    """Scale of everything: the full default vs ``--quick`` (CI); ``--n-train``/``--n-val`` as given."""
    s = _scale(config.quick)
    s.update({k: v for k, v in (("n_train", config.n_train), ("n_val", config.n_val)) if v is not None})
    return s


def _scale(quick: bool) -> dict[str, Any]:
    if quick:
        from hwprune_deploy.timing import Protocol

        # the quick table: 2 points per axis, one interleaved pass, a short protocol (6 repeats of
        # >= 1 ms per unit point, 8 of >= 5 ms per whole model): 7 s instead of 32 s for the default
        # model on 2 cores, its predicted speedup 8% from the measured one (6% with the full protocol)
        return {"n_train": 256, "n_val": 128, "calib_size": 64, "batch_size": 64, "train_epochs": 1,
                "model_kwargs": {"width": 32, "depth": 1}, "repeats": 7, "warmup": 2, "min_repeat_ms": 5.0,
                "profile": {"points_per_axis": 2, "max_points_per_axis": 2, "calib_variants": 2, "passes": 1,
                            "unit_protocol": Protocol(warmup=1, repeats=6, min_repeat_ms=1.0, statistic="p10"),
                            "model_protocol": Protocol(warmup=1, repeats=8, min_repeat_ms=5.0, statistic="p10")},
                "strategy_options": {"amc_episodes": 4, "evo_pop": 8, "evo_gens": 2, "halp_batches": 8},
                "bisect_steps": 4}
    return {"n_train": 5000, "n_val": 1000, "calib_size": 256, "batch_size": 64, "train_epochs": 3,
            "model_kwargs": {}, "repeats": 20, "warmup": 5, "min_repeat_ms": 20.0, "profile": {},
            "strategy_options": {}, "bisect_steps": 7}


# ------------------------------------------------------------------------------ steps

def load_data(config: RunConfig, input_size: int):
    from .data import make_data

    s = sizes(config)
    return make_data(config.data, input_size=input_size, batch_size=s["batch_size"], seed=config.seed,
                     n_train=s["n_train"], n_val=s["n_val"], calib_size=s["calib_size"])


def _images(loader) -> str:
    """", N images" for a loader over a sized dataset (what a top-1 figure was scored on), else ""."""
    try:
        return f", {len(loader.dataset)} images"
    except (AttributeError, TypeError):
        return ""


def make_eval(data, run: Run):
    """The project's evaluator: adaptive-BN recalibration (EagleEye), then top-1 on the held-out split."""
    from .evaluate import make_evaluator

    return make_evaluator("adaptive-bn", data)


def get_model(config: RunConfig, run: Run, data_factory) -> tuple[LoadedModel, Any]:
    """The model to prune and its data. Default: tiny_resnet trained on the synthetic data
    (``hwprune.train.load_default_model()`` when available, else trained here and cached)."""
    s = sizes(config)
    kwargs = {}
    if config.num_classes:
        kwargs["num_classes"] = config.num_classes
    if str(config.model).startswith("timm:") and config.input_size:
        kwargs["img_size"] = config.input_size  # a ViT/Swin is built for its input size (hwprune.timm_models)
    if config.is_default_model:
        shipped = _shipped_default_model(run)
        if shipped is not None:
            return shipped, data_factory(shipped.input_size)
        if config.quick:
            kwargs.update(s["model_kwargs"])
    # the default model's shipped weights are not there: its architecture, trained below
    spec = "tiny_resnet" if config.is_default_model else config.model
    loaded = load_model(spec, weights=config.weights, kwargs=kwargs or None)
    data = data_factory(config.input_size or loaded.input_size)
    if config.is_default_model:
        epochs = config.train_epochs or s["train_epochs"] or 3
        trained = _train_default(loaded, data, epochs, config, run)
        run.note(trained)
        loaded.model.eval()
    elif not config.weights and loaded.plan is None:
        run.note(f"model {config.model!r} has random weights (no --weights): accuracy figures are meaningless; "
                 "latency figures are still real")
    return loaded, data


def _shipped_default_model(run: Run) -> Optional[LoadedModel]:
    from .train import load_default_model

    try:
        m = load_default_model()
    except Exception as e:  # no shipped/cached checkpoint: train below
        run.note(f"hwprune.train.load_default_model() failed ({type(e).__name__}: {e}); training here")
        return None
    if isinstance(m, LoadedModel):
        return m
    base = load_model("tiny_resnet")
    base.model.load_state_dict(m.state_dict())
    base.model.eval()
    return base


def _cache_path(loaded: LoadedModel, data, epochs: int, config: RunConfig) -> str:
    import hashlib
    import json

    from .data import synthetic_fingerprint

    s = sizes(config)
    key = json.dumps([loaded.model_id, epochs, s["n_train"], config.seed,
                      synthetic_fingerprint(loaded.input_size, config.seed)], sort_keys=True, default=str)
    root = os.environ.get("HWPRUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hwprune")
    return os.path.join(root, f"default-{hashlib.sha1(key.encode()).hexdigest()[:12]}.pt")


def _train_default(loaded: LoadedModel, data, epochs: int, config: RunConfig, run: Run) -> str:
    """Train the default model (SGD, one-cycle) on the synthetic data; cache the weights so a
    second ``hwprune run`` starts at once."""
    import io

    from .jsonio import atomic_write_bytes

    try:
        path = _cache_path(loaded, data, epochs, config)
    except Exception:
        path = None
    if path and os.path.isfile(path):
        try:
            loaded.model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return f"default model: tiny_resnet weights from the cache {path} (trained earlier, {epochs} epochs)"
        except Exception:
            pass
    from .train import train

    train(loaded.model, data, epochs=epochs, lr=0.1, seed=config.seed, progress=config.progress)
    loaded.model.eval()
    if path:
        try:
            buf = io.BytesIO()
            torch.save(loaded.model.state_dict(), buf)
            atomic_write_bytes(path, buf.getvalue())
        except OSError:
            pass
    return (f"default model: tiny_resnet trained here for {epochs} epochs (SGD, one-cycle) on the synthetic data"
            + (f"; cached in {path}" if path else ""))


def run_align(config: RunConfig) -> int:
    """``config.align``, or when None the grid of the device the given table describes, else this
    machine's for ``config.backend`` (:func:`hwprune.latency.profile.search_align`, as ``hwprune prune``)."""
    if config.align is not None:
        return config.align
    from .latency.profile import search_align

    given = [config.table] if config.table and os.path.isfile(config.table) else []
    return search_align(config.backend, config.precision, given)


def table_request(config: RunConfig, input_size: int):
    """What `hwprune run` asks of a latency table (:class:`hwprune.service.TableRequest`)."""
    from .service import TableRequest

    return TableRequest(backend=config.backend, threads=config.threads, batch=1, spinning=config.spinning,
                        precision=config.precision,
                        align=run_align(config), min_width=config.min_width, input_size=input_size)


def find_table(config: RunConfig, loaded: LoadedModel, input_size: int, folders=(TABLE_DIR,)) -> Optional[str]:
    """A table in ``folders`` that serves this run (:func:`hwprune.service.find_table`, as `hwprune prune`)."""
    from .service import find_table as find

    return find(table_request(config, input_size), loaded, folders)


def get_table(config: RunConfig, run: Run, loaded: LoadedModel, input_size: int,
              out_dir: Optional[str] = None) -> Optional[str]:
    """--table, else a matching table from latency_tables/ or an earlier --out, else profile one
    into ``out_dir`` (default --out; run_pipeline passes its staging folder)."""
    from .service import check_given_table, find_or_profile_table

    req = table_request(config, input_size)
    if config.table:
        check_given_table(config.table, req)
        return config.table
    path, how = find_or_profile_table(loaded, req, folders=(TABLE_DIR, config.out),
                                      out=os.path.join(out_dir or config.out, "latency_table.json"),
                                      profile_overrides=sizes(config)["profile"], progress=config.progress)
    if how == "reused":
        run.note(f"reusing latency table {path} (same device fingerprint, covers this model)")
    return path


def choose_strategy(config: RunConfig, run: Run) -> str:
    from .strategies import STRATEGIES

    if config.strategy:
        if config.strategy == FALLBACK_STRATEGY:
            return config.strategy
        STRATEGIES.get(config.strategy)  # typo -> ConfigError-style suggestion
        return config.strategy
    for name in PREFERRED_STRATEGIES:
        if name in STRATEGIES:
            return name
    run.note(f"no latency-aware strategy ({', '.join(PREFERRED_STRATEGIES)}) is installed: falling back to "
             f"'{FALLBACK_STRATEGY}' (uniform width ratio, bisection on measured latency)")
    return FALLBACK_STRATEGY


def prune_step(config: RunConfig, run: Run, loaded: LoadedModel, data, table: Optional[str], evaluator, strategy: str,
               input_size: int):
    from .prune import PruneConfig, prune

    fields = {f.name for f in dataclasses.fields(PruneConfig)}
    s = sizes(config)
    if strategy == FALLBACK_STRATEGY or "budget" not in fields:
        if config.more_budgets:
            raise ConfigError(f"the '{FALLBACK_STRATEGY}' fallback bisects one budget on one device; several budgets "
                              f"({config.budget}, {', '.join(config.more_budgets)}) need a latency-aware strategy "
                              f"(--strategy {' or '.join(PREFERRED_STRATEGIES)})")
        return bisect_uniform(config, run, loaded, input_size)
    kw = {"strategy": strategy, "budget": config.budget, "more_budgets": config.more_budgets, "criterion": config.criterion, "align": config.align,
          "min_width": config.min_width, "max_prune": config.max_prune, "input_size": input_size, "seed": config.seed,
          "backend": config.backend, "threads": config.threads, "progress": config.progress, "closed_loop_rounds": config.closed_loop_rounds,
          "finetune_epochs": config.finetune_epochs, "precision": config.precision,
          "options": dict(s["strategy_options"])}
    pcfg = PruneConfig(**{k: v for k, v in kw.items() if k in fields})
    try:
        return prune(loaded, pcfg, calib=data.calib, table=table, evaluator=evaluator, data=data)
    except BudgetError as e:
        budget = parse_budget(config.budget)
        if config.more_budgets or not (budget.is_latency and budget.fraction() is not None and table is not None):
            raise  # several budgets: the bisection below knows one device only
        # The table says the budget is out of reach, but a table is a model of the device; when
        # its fixed remainder was measured under load it can be pessimistic. Ask the device.
        run.note(f"the latency table says budget {config.budget} is unreachable ({e}); falling back to "
                 f"'{FALLBACK_STRATEGY}' (bisection on measured latency) to check on the device itself")
        res = bisect_uniform(config, run, loaded, input_size)
        if config.finetune_epochs:
            run.note("fine-tuning after the fallback search is done by the run's fine-tune step")
        return res


def bisect_uniform(config: RunConfig, run: Run, loaded: LoadedModel, input_size: int):
    """Degraded search: the uniform ratio whose *measured* latency meets a relative budget."""
    from .prune import PruneConfig, prune

    budget = parse_budget(config.budget)
    frac = budget.fraction() if budget.is_latency else None
    if frac is None:
        raise ConfigError(f"the '{FALLBACK_STRATEGY}' fallback only handles relative latency budgets "
                          f"(0.5x, 2speedup), not {config.budget!r}")
    s = sizes(config)
    from hwprune_deploy.runner import STATISTIC, timing_ms
    from hwprune_deploy.timing import Protocol

    from .latency.measure import measure_against_baseline

    protocol = Protocol(warmup=s["warmup"], repeats=s["repeats"], min_repeat_ms=s["min_repeat_ms"], statistic=STATISTIC)
    x = torch.randn(1, 3, input_size, input_size)
    lo, hi, best, closest = 0.0, 0.95, None, None
    for _ in range(s["bisect_steps"]):
        mid = (lo + hi) / 2
        res = prune(loaded, PruneConfig(strategy="uniform", ratio=mid, criterion=config.criterion, align=config.align,
                                        min_width=config.min_width, input_size=input_size, seed=config.seed))
        t = measure_against_baseline(config.backend, {"baseline": loaded.model, "pruned": res.model}, x,
                                     config.threads, protocol=protocol, spinning=config.spinning)
        got = timing_ms(t["pruned"]) / timing_ms(t["baseline"])
        closest = got if closest is None else min(closest, got)
        if got <= frac:
            best, hi = (res, mid, got), mid
        else:
            lo = mid
    if best is None:
        raise HwpruneError(
            f"uniform pruning up to ratio {hi:.2f} did not reach {config.budget} by measurement on {config.backend} "
            f"(the fastest pruned model measured {closest:.2f}x of the unpruned one at batch 1): this model at this "
            "size is bound by fixed per-call costs (kernel launches on a GPU), which channel pruning does not cut. "
            "Use a looser --budget, a larger --input-size, or prune against a table profiled at a larger batch "
            "(hwprune profile --backend ... --batch 64, then hwprune prune --table)")
    res, ratio, got = best
    res.report.config["budget"] = config.budget
    res.report.config["strategy"] = FALLBACK_STRATEGY
    res.report.fallback = {"ratio": ratio, "measured_fraction": got}
    return res


# ------------------------------------------------------------------------------ the verb

def run_pipeline(config: RunConfig) -> dict:
    """Run every step; returns the report dict (``files`` says where report.md went). Everything
    is written into a staging folder that becomes ``config.out`` only when the report is written:
    a run that fails leaves no half folder, and an earlier run's folder stays until then."""
    from .outdir import check_output_dir, staged_output_dir

    check_output_dir(config.out)
    config = dataclasses.replace(config, align=run_align(config))
    with staged_output_dir(config.out) as work:
        return _run_steps(config, Run(config), work)


def _staged_table(path: Optional[str], config: RunConfig, work: str):
    """The table to read, named by where it lives once the run is done: one profiled into the
    staging folder ``work`` is read there but carries its final path (OUT/...); one reused from an
    earlier OUT is copied into ``work`` so the replaced OUT still holds it."""
    from .bench import load_table

    if path is None:
        return None
    final = path
    here = os.path.abspath(path)
    if here.startswith(os.path.abspath(work) + os.sep):
        final = os.path.join(config.out, os.path.relpath(here, os.path.abspath(work)))
    elif os.path.dirname(here) == os.path.abspath(config.out):
        import shutil

        shutil.copy2(path, os.path.join(work, os.path.basename(path)))
    table = load_table(path)
    if table is None:
        return path
    table.path = final
    return table


def _run_steps(config: RunConfig, run: Run, work: str) -> dict:
    """The steps of :func:`run_pipeline`, writing into ``work`` (the staging folder)."""
    from .bench import BenchConfig, bench, load_table
    from .checkpoint import save_checkpoint
    from .export import export_onnx
    from .jsonio import write_json
    from .report import table_breakdown, write_report

    s = sizes(config)
    with run.step("model + data") as st:
        loaded, data = get_model(config, run, lambda size: load_data(config, size))
        size = config.input_size or loaded.input_size
        from .train import check_num_classes

        check_num_classes(loaded.model, data, size)  # before the search, not as a traceback in fine-tuning
        evaluator = make_eval(data, run)
        acc_before = float(evaluator(loaded.model))
        st.detail = f"{loaded.model_id['spec']} @ {size}x{size}, top-1 {100 * acc_before:.1f}% on {config.data} val"
    with run.step("latency table") as st:
        table = _staged_table(get_table(config, run, loaded, size, out_dir=work), config, work)
        st.detail = f"{getattr(table, 'path', table)}" if table else "none"
    with run.step("prune") as st:
        strategy = choose_strategy(config, run)
        res = prune_step(config, run, loaded, data, table, evaluator, strategy, size)
        budgets = ", ".join((config.budget, *config.more_budgets))
        st.detail = (f"{strategy}, budget{'s' if config.more_budgets else ''} {budgets}: FLOPs "
                     f"{res.report.flops_reduction:.2f}x fewer")
    pruned = res.model.eval()
    acc = {"before": acc_before, "split": f"{config.data} val" + _images(getattr(data, "val", None))}
    rep_acc = res.report.accuracy or {}
    if config.finetune_epochs and not (rep_acc.get("after_finetune") is not None):
        with run.step("fine-tune") as st:
            from .train import finetune

            acc["after"] = float(evaluator(pruned))
            finetune(pruned, data, epochs=config.finetune_epochs, seed=config.seed, teacher=loaded.model,
                     progress=config.progress)
            pruned.eval()
            acc["after_finetune"] = float(evaluator(pruned))
            st.detail = f"{config.finetune_epochs} epoch(s): top-1 {100 * acc['after']:.1f}% -> {100 * acc['after_finetune']:.1f}%"
    else:
        acc["after"] = float(evaluator(pruned)) if rep_acc.get("after") is None else float(rep_acc["after"])
        if rep_acc.get("after_finetune") is not None:
            acc["after_finetune"] = float(rep_acc["after_finetune"])
    with run.step("save + export ONNX") as st:
        save_checkpoint(os.path.join(work, "pruned.pt"), pruned, res.plan, meta={"accuracy": acc})
        res.plan.save(os.path.join(work, "plan.json"))
        write_json(os.path.join(work, "prune_report.json"), res.report.to_dict())
        x = torch.randn(1, 3, size, size)
        p_base = export_onnx(loaded.model, x, os.path.join(work, "baseline.onnx"), dynamic_batch=True,
                             samples=2, parity_batches=config.batches)
        p_pruned = export_onnx(pruned, x, os.path.join(work, "pruned.onnx"), dynamic_batch=True, samples=2,
                               parity_batches=config.batches)
        st.detail = f"parity baseline {p_base.max_abs:.1e}, pruned {p_pruned.max_abs:.1e} (max |err| vs PyTorch)"
    with run.step("bench") as st:
        bcfg = BenchConfig(backend=config.backend, threads=config.threads, batches=config.batches, input_size=size,
                           warmup=s["warmup"], repeats=s["repeats"], min_repeat_ms=s["min_repeat_ms"], seed=config.seed,
                           spinning=config.spinning, precision=config.precision)
        pruned_loaded = LoadedModel(pruned, loaded.model_id, size, plan=res.plan)
        tbl = load_table(table) if table else None
        b = bench({"baseline": loaded, "pruned": pruned_loaded}, bcfg, table=tbl, progress=config.progress)
        st.detail = ", ".join(f"batch {k}: {v:.2f}x" for k, v in b["speedup"].items()) + " measured"
        if config.backend == "ort-cpu" and not config.spinning and config.precision == "fp32":  # also as ORT's defaults
            scfg = dataclasses.replace(bcfg, batches=(bcfg.batches[0],), spinning=True)
            bs = bench({"baseline": loaded, "pruned": pruned_loaded}, scfg, progress=False)
            b["ort_spinning"] = {k: bs[k] for k in ("rows", "speedup", "protocol")}
            st.detail += f"; ORT spinning (default options) {next(iter(bs['speedup'].values())):.2f}x"
        write_json(os.path.join(work, "bench.json"), b)
        if "predicted_speedup" in b:
            st.detail += f"; {b['predicted_speedup']:.2f}x predicted"
    if config.aoti:
        with run.step("AOTInductor packages") as st:
            from .aoti import export_aoti
            from .aoti_bench import bench_packages

            device = "cuda" if config.backend == "torch-cuda" else "cpu"
            xa = torch.randn(config.batches[0], 3, size, size)
            pk = {k: export_aoti(m, xa, os.path.join(work, f"{k}.pt2"), device=device, samples=2)
                  for k, m in (("baseline", loaded.model), ("pruned", pruned))}
            ab = bench_packages({k: os.path.join(work, f"{k}.pt2") for k in ("baseline", "pruned")},
                                threads=config.threads, warmup=s["warmup"], repeats=s["repeats"])
            b["aoti"] = {**ab, "packages": {k: {**r.to_dict(), "path": os.path.join(config.out, f"{k}.pt2")}
                                            for k, r in pk.items()}}
            write_json(os.path.join(work, "bench.json"), b)
            st.detail = (f"{device} packages, batch {config.batches[0]}: {ab['speedup']:.2f}x measured "
                         f"(parity max |err| {pk['pruned'].parity.max_abs:.1e})")
    int8 = None
    if config.precision == "int8":
        with run.step("int8 files + fp32/int8 bench") as st:
            from .int8_run import int8_rows

            int8 = int8_rows(loaded.model, pruned, data, size, work, config.out,
                             dataclasses.replace(bcfg, batches=(1,), precision="fp32", int8=True))
            b["int8_run"] = int8
            write_json(os.path.join(work, "bench.json"), b)
            st.detail = ", ".join(f"{r['model']} {r['latency_ms']:.3f} ms ({r['speedup']:.2f}x, top-1 "
                                  f"{100 * r['top1']:.1f}%)" for r in int8["rows"])
    with run.step("report") as st:
        breakdown = table_breakdown(tbl, loaded, res.plan, size) if tbl is not None else None
        extra = {"run": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
                 "parity": {"baseline": p_base.to_dict(), "pruned": p_pruned.to_dict()},
                 "notes": run.notes, "bench": b,
                 "steps": run.steps + [{"name": "report", "seconds": 0.0, "detail": ""}],
                 "total_seconds": time.perf_counter() - run.t0, "commands": [command_line(config)]}
        rep = write_report(work, res.report.to_dict(), b, breakdown=breakdown, accuracy=acc, extra=extra)
        if int8 is not None:
            from .int8_run import int8_markdown

            rep["int8"] = int8
            with open(rep["files"]["report_md"], "a") as f:
                f.write(int8_markdown(int8))
        if "aoti" in b:
            a = b["aoti"]
            rows = [f"| {k} | `{os.path.basename(a['packages'][k]['path'])}` | {m['median_ms']:.3f} | {m['p10_ms']:.3f} | "
                    f"{a['packages'][k]['parity']['max_abs']:.1e} |" for k, m in a["models"].items()]
            with open(rep["files"]["report_md"], "a") as f:
                f.write("\n## AOTInductor packages (torch.export + AOTInductor, " + a["device"] + ")\n\n"
                        "| model | package | median (ms) | p10 (ms) | parity max abs err |\n|---|---|---|---|---|\n"
                        + "\n".join(rows) + f"\n\nMeasured speedup {a['speedup']:.2f}x (median, batch "
                        f"{config.batches[0]}, {a['repeats']} interleaved repeats).\n")
        # the report names its files where they will be, not in the staging folder
        rep["files"] = {k: ([os.path.join(config.out, os.path.basename(p)) for p in v] if isinstance(v, list)
                            else os.path.join(config.out, os.path.basename(v))) for k, v in rep["files"].items()}
        write_json(os.path.join(work, "report.json"), rep)
        st.detail = rep["files"]["report_md"]
    return rep


def command_line(config: RunConfig) -> str:
    """The ``hwprune run`` command that reproduces ``config`` (non-default flags only)."""
    d = RunConfig()
    parts = ["hwprune", "run"]
    for f in dataclasses.fields(RunConfig):
        v, dv = getattr(config, f.name), getattr(d, f.name)
        if f.name == "progress" or v == dv or (isinstance(v, tuple) and list(v) == list(dv)):
            continue
        flag = {"spinning": "--ort-spinning"}.get(f.name, "--" + f.name.replace("_", "-"))
        if f.name == "aoti":  # None on the default; the flag form of what was chosen
            if v == (config.backend == "torch-cuda"):
                continue
            parts.append("--aoti" if v else "--no-aoti")
            continue
        if isinstance(v, bool):
            parts.append(flag)
        elif f.name == "batches":
            parts += ["--batch", ",".join(map(str, v))]
        elif f.name == "more_budgets":
            if config.budget == dv and "--budget" not in parts:  # the first budget is the default: name it first
                parts += ["--budget", shlex.quote(config.budget)]
            for b in v:
                parts += ["--budget", shlex.quote(b)]
        else:
            parts += [flag, shlex.quote(str(v))]
    return " ".join(parts)
