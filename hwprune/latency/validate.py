"""The ``validate`` verb: does the table agree with the stopwatch on held-out pruned variants?

Draws ``samples`` random pruned variants (random widths per group on the align grid, seed
stream disjoint from the profiler's calibration variants), predicts each from the table, builds
each for real (channels removed), measures it end to end on the table's backend (variants timed
interleaved in small chunks), and reports per-variant error, median |error| and the share within
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
    model: str
    table: str
    backend: str
    input_shape: list[int]
    variants: list[dict] = field(default_factory=list)  # {widths, predicted_ms, measured_ms, error}
    seconds: float = 0.0

    @property
    def errors(self) -> np.ndarray:
        return np.array([v["error"] for v in self.variants], dtype=float)

    @property
    def median_abs_error(self) -> float:
        return float(np.median(np.abs(self.errors))) if self.variants else float("nan")

    def share_within(self, tol: float) -> float:
        return float(np.mean(np.abs(self.errors) <= tol)) if self.variants else float("nan")

    @property
    def max_abs_error(self) -> float:
        return float(np.max(np.abs(self.errors))) if self.variants else float("nan")

    def to_dict(self) -> dict:
        return {"model": self.model, "table": self.table, "backend": self.backend, "input_shape": self.input_shape,
                "samples": len(self.variants), "median_abs_error": self.median_abs_error,
                "within_5pct": self.share_within(0.05), "within_10pct": self.share_within(0.10),
                "max_abs_error": self.max_abs_error, "seconds": self.seconds, "variants": self.variants}


def validate(loaded: LoadedModel, table_path: str, samples: int = 30, seed: int = 0, align: int = 8,
             min_width: int = 8, progress: bool = True, input_size: Optional[int] = None, threads: Optional[int] = None,
             chunk: int = 5, protocol=None, passes: int = 2) -> ValidationResult:
    """Predict vs measure ``samples`` random pruned variants of ``loaded`` (see module doc)."""
    import time

    if samples < 1:
        raise ConfigError(f"samples {samples} must be >= 1")
    t0 = time.perf_counter()
    table = LatencyTable.load(table_path)
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

        bar = tqdm(total=samples, desc=f"validating {spec}", unit="variant", dynamic_ncols=True)
    for i in range(0, samples, chunk):
        part = {f"v{j}": build_variant(loaded.model, x, widths[j]) for j in range(i, min(samples, i + chunk))}
        timings = meas.models(part, x, passes=passes)
        for name, t in timings.items():
            j = int(name[1:])
            pred = cm.predict(widths[j])
            m = timing_ms(t)
            res.variants.append({"index": j, "widths": widths[j], "predicted_ms": pred, "measured_ms": m,
                                 "iqr_ms": float(t.iqr_ms), "error": (pred - m) / m})
        if bar is not None:
            bar.update(len(part))
    if bar is not None:
        bar.close()
    res.variants.sort(key=lambda v: v["index"])
    res.seconds = time.perf_counter() - t0
    return res
