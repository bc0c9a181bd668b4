"""The ``validate`` verb: does the table agree with the stopwatch on held-out pruned variants?

Draws ``samples`` random pruned variants (random widths per group on the align grid, seed
stream disjoint from the profiler's calibration variants), predicts each from the table, builds
each for real (channels removed), measures it end to end on the table's backend (several passes
over all variants in different orders, interleaved in small chunks, repeated where passes
disagree: see :meth:`Measurer.models`), and reports per-variant error, median |error| and the share within
+-5% / +-10% -- the fidelity figure nn-Meter (Zhang et al., MobiSys 2021) reports for its predictor.
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

from .measure import Measurer, build_variant, random_widths
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

    def to_dict(self) -> dict:
        return {"model": self.model, "table": self.table, "backend": self.backend, "input_shape": self.input_shape,
                "samples": len(self.variants), "metric": "latency ratio to the unpruned model, timed side by side",
                **self.summary("error"), "absolute_ms": self.summary("error_ms"),
                "reference_ms": self.reference_ms, "predicted_full_ms": self.predicted_full_ms,
                "seconds": self.seconds, "variants": self.variants}


def validate(loaded: LoadedModel, table_path: str, samples: int = 30, seed: int = 0, align: Optional[int] = None,
             min_width: int = 8, progress: bool = True, input_size: Optional[int] = None, threads: Optional[int] = None,
             chunk: int = 5, protocol=None, passes: int = 2) -> ValidationResult:
    """Predict vs measure ``samples`` random pruned variants of ``loaded`` (see module doc)."""
    import time

    if samples < 1:
        raise ConfigError(f"samples {samples} must be >= 1")
    t0 = time.perf_counter()
    table = LatencyTable.load(table_path)
    if align is None:  # the grid the table was profiled on
        align = int(table.protocol.get("align") or 8)
    spec = loaded.model_id.get("spec")
    if input_size is None:  # the resolution this model was profiled at, if the table has it
        sizes = [r["input_shape"][-1] for r in table.models.values() if r.get("spec") == spec]
        input_size = sizes[0] if sizes else loaded.input_size
    x = torch.randn(table.batch, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    graph = ChannelGraph(loaded.model, x)
    cm = table.cost_model(graph)
    meas = Measurer(table.backend, threads or int(table.device.get("threads", 2)), table.precision,
                    model_protocol=protocol)
    rng = np.random.default_rng(seed)
    widths = [random_widths(graph.groups, rng, align, min_width) for _ in range(samples)]
    res = ValidationResult(str(spec), table_path, table.backend, list(x.shape))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=samples, desc=f"building {spec} variants", unit="variant", dynamic_ncols=True)
    prepared = {}
    for j in range(samples):  # build + export each variant once; the module is freed
        prepared[f"v{j}"] = meas.prepare(build_variant(loaded.model, x, widths[j]), x)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
        bar = tqdm(total=samples * max(1, passes), desc=f"measuring {spec} variants", unit="variant",
                   dynamic_ncols=True)
    prepared["reference"] = meas.prepare(loaded.model, x)  # the unpruned model, timed in every chunk
    # every chunk is scaled to the median reference, so measured / reference is exactly the
    # variant's ratio to the unpruned model timed side by side in its chunk
    timings = meas.models(prepared, x, passes=passes, chunk=chunk, reference="reference",
                          progress=(lambda n: bar.update(n)) if bar is not None else None)
    ref = timing_ms(timings.pop("reference"))
    pred_full = cm.predict({})
    res.reference_ms, res.predicted_full_ms = ref, pred_full
    for name, t in timings.items():
        j = int(name[1:])
        pred = cm.predict(widths[j])
        m = timing_ms(t)
        pr, mr = pred / pred_full, m / ref
        res.variants.append({"index": j, "widths": widths[j], "predicted_ms": pred, "measured_ms": m,
                             "iqr_ms": float(t.iqr_ms), "predicted_ratio": pr, "measured_ratio": mr,
                             "error": (pr - mr) / mr, "error_ms": (pred - m) / m})
    if bar is not None:
        bar.close()
    res.variants.sort(key=lambda v: v["index"])
    res.seconds = time.perf_counter() - t0
    return res
