"""Benchmark models side by side: latency (median, p10/p90) and throughput per batch size.

All models are measured in one run side by side, the way a budget is checked
(:func:`hwprune.latency.measure.measure_against_baseline`), on any backend of the one registry
(:func:`hwprune.backends.list_backends`), so a noisy neighbour or a clock change hits baseline and
pruned alike and the speedup ratio stays fair (DESIGN.md, measurement discipline).
With a latency table, each model's latency is also *predicted* from the table (at the table's
batch size), so a report can put measured speedup next to predicted.

    res = bench({"baseline": load_model("tiny_resnet"), "pruned": load_model("out/pruned.pt")},
                BenchConfig(backend="ort-cpu", threads=2, batches=(1, 8)), table="t.json")
    res["speedup"]["1"]  # baseline median / pruned median at batch 1
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch

from hwprune_deploy.runner import STATISTIC, timing_ms as budget_ms
from hwprune_deploy.timing import Protocol, Timing, parse_batches as _parse_batches
from hwprune_deploy.progress import bar as progress_bar

from .backends import check_backend_name, check_ort_spinning, get_backend
from .errors import ConfigError, HwpruneError
from .models import LoadedModel

#: the estimator a latency budget promises, and that ``prune``'s closed loop, ``bench``'s speedup
#: and the reports all use: the p10 of repeats (interference on a shared machine only ever adds
#: time, so a low quantile is the device's own latency), pruned and unpruned timed side by side
#: in chunks, per model the mean of the fastest half of >=4 passes (8 under 4 ms)
BUDGET_STATISTIC = (f"{STATISTIC} of repeats, timed side by side with the reference in chunks; per model the mean of "
                    "the fastest half of >=4 passes (8 under 4 ms)")


def parse_batches(spec: str | Sequence[int] | int) -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32); a non-integer or non-positive entry is a ConfigError naming it
    (the device side's parser, :func:`hwprune_deploy.timing.parse_batches`)."""
    try:
        return _parse_batches(spec)
    except ValueError as e:
        raise ConfigError(str(e)) from None


@dataclass
class BenchConfig:
    backend: str = "ort-cpu"
    threads: int = 2
    batches: tuple[int, ...] = (1,)
    input_size: Optional[int] = None
    warmup: int = 5
    repeats: int = 20
    min_repeat_ms: float = 20.0
    precision: str = "fp32"
    seed: int = 0
    spinning: bool = False  # ort-cpu: ORT's default spinning workers, one session alive at a time
    int8: bool = False  # ort-cpu: time every model in fp32 and statically quantized int8, side by side

    def __post_init__(self):
        self.batches = parse_batches(self.batches)
        check_backend_name(self.backend)  # the registry's names (hwprune.backends.list_backends)
        if self.threads < 1:
            raise ConfigError(f"threads {self.threads} must be >= 1")
        check_ort_spinning(self.spinning, self.backend)
        if self.int8 and (self.precision != "fp32" or self.spinning):
            raise ConfigError("--int8 times each model in fp32 and int8 side by side: leave out --precision and "
                              "--ort-spinning")
        if self.int8:
            from .int8_budget import check_precision

            check_precision("int8", self.backend)
        if self.repeats < 3 or self.warmup < 0:
            raise ConfigError(f"repeats {self.repeats} must be >= 3 and warmup {self.warmup} >= 0")

    @property
    def protocol(self) -> Protocol:
        return Protocol(warmup=self.warmup, repeats=self.repeats, min_repeat_ms=self.min_repeat_ms)


# ------------------------------------------------------------------------------------ backends

def make_bench_backend(config: BenchConfig):
    """The registry's backend for ``config``, its runtime checked (BackendUnavailableError with the
    fix when it is not usable here): the fingerprint, and the ``--ort-spinning`` path's timing."""
    kw: dict[str, Any] = {"threads": config.threads}
    if config.precision != "fp32":
        kw["precision"] = config.precision
    if config.spinning:
        kw["spinning"] = None  # ORT's default: workers spin between ops (and between runs)
    be = get_backend(config.backend, protocol=config.protocol, **kw)
    be.check()
    return be


def measure_fp32_int8(config: BenchConfig, models: Mapping[str, torch.nn.Module], x: torch.Tensor,
                      reference: str) -> tuple[dict[str, Timing], list[str]]:
    """Every model in fp32 and int8 (quantized as int8 tables and the closed loop do,
    :func:`hwprune_deploy.quant.quantize_qdq`), all timed side by side in one run with
    ``reference`` in fp32 as the reference level: ``{"<label> (fp32)": Timing, "<label> (int8)": Timing}``."""
    from hwprune_deploy.quant import quantize_qdq

    from .onnx_export import onnx_bytes
    from .latency.measure import Measurer

    prepared, labels = {}, []
    for k, m in models.items():
        fp32 = onnx_bytes(m.eval(), x)
        prepared[f"{k} (fp32)"], prepared[f"{k} (int8)"] = fp32, quantize_qdq(fp32)
        labels += [f"{k} (fp32)", f"{k} (int8)"]
    protocol = Protocol(warmup=config.warmup, repeats=config.repeats, min_repeat_ms=config.min_repeat_ms,
                        statistic=STATISTIC)
    t = Measurer(config.backend, config.threads, "fp32", model_protocol=protocol).models(
        prepared, x, reference=f"{reference} (fp32)")
    return t, labels


def measure_side_by_side(config: BenchConfig, models: Mapping[str, torch.nn.Module], x: torch.Tensor,
                         reference: str) -> dict[str, Timing]:
    """The models timed the way a budget is checked (:func:`hwprune.latency.measure.measure_against_baseline`:
    the reference in every chunk, >=4 passes, the mean of the fastest half), with bench's protocol."""
    from .latency.measure import measure_against_baseline

    protocol = Protocol(warmup=config.warmup, repeats=config.repeats, min_repeat_ms=config.min_repeat_ms,
                        statistic=STATISTIC)
    return measure_against_baseline(config.backend, models, x, config.threads, config.precision, protocol=protocol,
                                    baseline=reference)


# ------------------------------------------------------------------------------------ prediction

def base_graph(loaded: LoadedModel, x: torch.Tensor):
    """(channel graph of the *unpruned* network, widths of ``loaded``) -- a table knows base models."""
    from .graph import ChannelGraph
    from .models import build_model

    if loaded.plan is None:
        return ChannelGraph(loaded.model, x), {}
    base, _ = build_model(loaded.plan.model_id["spec"], loaded.plan.model_id.get("kwargs"))
    return ChannelGraph(base.eval(), x, ignore=loaded.plan.ignore), dict(loaded.plan.widths)


def predict_ms(table, loaded: LoadedModel, input_size: int) -> tuple[Optional[float], str]:
    """Table prediction at the table's batch size; (None, why) when the table cannot predict it."""
    try:
        x = torch.randn(int(getattr(table, "batch", 1)), 3, input_size, input_size)
        graph, widths = base_graph(loaded, x)
        return float(table.cost_model(graph).predict(widths)), ""
    except HwpruneError as e:  # the table does not cover this model: say why; anything else is a bug and surfaces
        return None, str(e)


def load_table(table):
    if table is None or not isinstance(table, str):
        return table
    try:
        from .latency import LatencyTable
    except ImportError:
        print("hwprune bench: latency tables are not available in this build; skipping predictions", file=sys.stderr)
        return None
    return LatencyTable.load(table)


# ------------------------------------------------------------------------------------ the verb

def _other_device(table, config: BenchConfig, backend) -> Optional[str]:
    """A note when ``table`` was not measured as this bench measures: another backend, or the
    fingerprint of another device or another thread count (:meth:`LatencyTable.check_device`). Its
    predictions are then that device's milliseconds, set beside this machine's."""
    if getattr(table, "backend", config.backend) != config.backend:
        return (f"the table is of backend {table.backend} and this bench measured {config.backend}: its predictions "
                "are that backend's")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        diff = table.check_device(backend.fingerprint()) if hasattr(table, "check_device") else []
    if not diff:
        return None
    return ("the table describes another device or setting (" + "; ".join(diff[:3]) + "): its predictions are "
            "that device's milliseconds, the measurements this machine's; profile this machine (hwprune profile) "
            "to compare them, or bench on the table's device (hwprune export, then hwprune-deploy bench there)")


def bench(models: Mapping[str, LoadedModel], config: BenchConfig, table=None, progress: bool = True) -> dict:
    """Measure ``models`` side by side at every batch size; the first model is the reference
    ("A") for speedups. Returns a JSON-able dict (rows, speedup per batch, predictions)."""
    if not models:
        raise ConfigError("bench needs at least one --model")
    labels = list(models)
    sizes = {k: config.input_size or m.input_size for k, m in models.items()}
    if len(set(sizes.values())) > 1:
        raise ConfigError(f"models have different input sizes {sizes}; pass --input-size to bench them together")
    size = next(iter(sizes.values()))
    backend = make_bench_backend(config)  # fingerprint, and the spinning path's timing
    table = load_table(table)
    from .counting import summarize

    x1 = torch.randn(1, 3, size, size)
    info = {k: {"model_id": m.model_id, "pruned": m.plan is not None, **summarize(m.model, x1)} for k, m in models.items()}
    predicted: dict[str, Optional[float]] = {}
    notes = []
    if table is not None:
        for k, m in models.items():
            predicted[k], why = predict_ms(table, m, size)
            if why:
                notes.append(f"{k}: no prediction ({why})")
        from .latency.measure import table_spinning

        other = _other_device(table, config, backend)
        if other:
            notes.append(other)
        if config.spinning and not table_spinning(table):
            notes.append("the table was profiled with ORT's workers blocked; spinning runs small models faster "
                         "than it predicts (README: Spinning)")
        elif table_spinning(table) and not config.spinning and config.backend == "ort-cpu":
            notes.append("the table was profiled with ORT's workers spinning (--ort-spinning) and this bench "
                         "blocks them: add --ort-spinning to compare like with like")
    rows, speedup, speedup_median, int8_speedup = [], {}, {}, {}
    side_by_side = not config.spinning  # ORT's default spinning workers cannot share the cores side by side
    bar = progress_bar(len(config.batches), progress, desc="bench", unit="batch", min_total=2)
    for b in config.batches:
        x = torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(config.seed))
        mods = {k: m.model.eval() for k, m in models.items()}
        rows_done = False
        if config.int8:
            timings, rows_of = measure_fp32_int8(config, mods, x, reference=labels[0])
            ref = budget_ms(timings[rows_of[0]])
            int8_speedup[str(b)] = {k: ref / budget_ms(timings[k]) for k in rows_of}
            for k in rows_of:
                t = timings[k]
                rows.append({"batch": b, "model": k, **t.to_dict(), "throughput": b * 1000.0 / t.median_ms})
            timings = {k: timings[f"{k} (fp32)"] for k in labels}
            rows_done = True
        elif side_by_side:
            timings = measure_side_by_side(config, mods, x, reference=labels[0])
        else:
            timings = backend.measure_many(mods, x)
        for k in ([] if rows_done else labels):
            t = timings[k]
            row = {"batch": b, "model": k, **t.to_dict(), "throughput": b * 1000.0 / t.median_ms}
            if table is not None and b == int(getattr(table, "batch", -1)) and predicted.get(k) is not None:
                row["predicted_ms"] = predicted[k]
            rows.append(row)
        if len(labels) > 1:
            speedup[str(b)] = budget_ms(timings[labels[0]]) / budget_ms(timings[labels[1]])
            speedup_median[str(b)] = timings[labels[0]].median_ms / timings[labels[1]].median_ms
        bar.update(1)
    bar.close()
    out = {"format": "hwprune-bench", "version": 1, "backend": config.backend, "threads": config.threads,
           "precision": config.precision, "spinning": config.spinning, "input_size": size, "batches": list(config.batches),
           "protocol": config.protocol.to_dict(), "fingerprint": backend.fingerprint(), "models": info,
           "labels": labels, "rows": rows, "speedup": speedup, "speedup_median": speedup_median,
           "statistic": BUDGET_STATISTIC if side_by_side else "median of interleaved repeats, one session alive at a time"}
    if config.int8:
        from hwprune_deploy.quant import scheme

        out["int8"] = {"scheme": scheme(), "speedup_over": f"{labels[0]} (fp32)", "speedup": int8_speedup}
    if table is not None:
        out["table"] = {"path": getattr(table, "path", None), "batch": getattr(table, "batch", None),
                        "predicted_ms": predicted, "notes": notes}
        a, b2 = (predicted.get(labels[0]), predicted.get(labels[1])) if len(labels) > 1 else (None, None)
        if a and b2:
            out["predicted_speedup"] = a / b2
    return out


def format_bench(res: dict) -> str:
    """A plain-text table of a :func:`bench` result."""
    lines = [f"backend {res['backend']} ({res['threads']} threads, {res['precision']}), input "
             f"{res['input_size']}x{res['input_size']}, {res['protocol']['repeats']} repeats; speedup: {res['statistic']}"
             + (", ORT workers spinning (one session alive at a time)" if res.get("spinning") else "")]
    has_pred = any("predicted_ms" in r for r in res["rows"])
    w = max(len(str(r["model"])) for r in res["rows"]) if res["rows"] else max(len(k) for k in res["labels"])
    head = f"{'batch':>5}  {'model':<{w}}  {'p10 ms':>9}  {'median ms':>10}  {'p90 ms':>9}  {'img/s':>9}"
    lines.append(head + (f"  {'predicted ms':>12}" if has_pred else ""))
    for r in res["rows"]:
        s = (f"{r['batch']:>5}  {r['model']:<{w}}  {r['p10_ms']:>9.3f}  {r['median_ms']:>10.3f}  {r['p90_ms']:>9.3f}"
             f"  {r['throughput']:>9.1f}")
        if has_pred:
            s += f"  {r['predicted_ms']:>12.3f}" if "predicted_ms" in r else f"  {'':>12}"
        lines.append(s)
    if res["speedup"]:
        a, b = res["labels"][:2]
        sp = ", ".join(f"batch {k}: {v:.2f}x" for k, v in res["speedup"].items())
        lines.append(f"speedup {b} vs {a} (measured, the budget's estimator): {sp}")
        if res.get("speedup_median"):
            spm = ", ".join(f"batch {k}: {v:.2f}x" for k, v in res["speedup_median"].items())
            lines.append(f"speedup {b} vs {a} (ratio of medians): {spm}")
    for b, sp in ((res.get("int8") or {}).get("speedup") or {}).items():
        lines.append(f"batch {b}, speedup over {res['int8']['speedup_over']} (the budget's estimator): "
                     + ", ".join(f"{k} {v:.2f}x" for k, v in sp.items()))
    if "predicted_speedup" in res:
        lines.append(f"speedup predicted by the table (batch {res['table']['batch']}): {res['predicted_speedup']:.2f}x")
    for n in (res.get("table") or {}).get("notes", []):
        lines.append(f"note: {n}")
    return "\n".join(lines)


