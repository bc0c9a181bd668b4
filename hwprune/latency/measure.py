"""How the profiler times things on each backend: unit micro-models, whole (pruned) models.

ORT and TensorRT time ONNX micro-models through the torch-free runners in ``hwprune_deploy``
(the exact code a remote device runs); torch backends time the same units as ``nn.Module``.
Also: random pruned variants (for calibration and validation) built by really removing channels.
"""
from __future__ import annotations

import copy
from typing import Mapping

import numpy as np
import torch

from hwprune_deploy.runner import MODEL_PROTOCOL, UNIT_PROTOCOL, OrtRunnerFactory, measure_onnx_set
from hwprune_deploy.timing import Timing, measure_interleaved

from ..backends import get_backend
from ..errors import ConfigError
from .micro import overhead_onnx, unit_onnx, unit_module
from .units import UnitFamily

ONNX_BACKENDS = ("ort-cpu", "tensorrt", "tensorrt-sparse")


class Measurer:
    """Times units and models on one backend with the house protocol."""

    def __init__(self, backend: str, threads: int = 2, precision: str = "fp32", unit_protocol=None,
                 model_protocol=None):
        self.backend, self.threads, self.precision = backend, threads, precision
        self.unit_protocol = unit_protocol or UNIT_PROTOCOL
        self.model_protocol = model_protocol or MODEL_PROTOCOL
        if backend == "ort-cpu":
            if precision != "fp32":
                raise ConfigError(f"precision {precision!r} is not supported on ort-cpu; use fp32")
            self.factory = OrtRunnerFactory(threads)
        elif backend.startswith("tensorrt"):
            from hwprune_deploy.trt import TrtRunnerFactory

            from ..backends import require_tensorrt

            require_tensorrt()
            self.factory = TrtRunnerFactory(precision=precision, sparse=backend.endswith("sparse"))
        else:
            self.factory = None
            if backend == "torch-cpu" and precision != "fp32":
                raise ConfigError(f"precision {precision!r} is not supported on torch-cpu; use fp32")
            self.torch_backend = get_backend(backend, threads=threads, precision=precision)
            if backend.startswith("torch-cuda"):
                from ..backends import require_cuda

                require_cuda()

    @property
    def sparse(self) -> bool:
        return self.backend.endswith("sparse")

    def fingerprint(self) -> dict:
        if self.factory is not None:
            return self.factory.fingerprint()
        return self.torch_backend.fingerprint()

    def overhead(self) -> float:
        """Fixed per-call cost of the runtime (ms), subtracted from unit points; 0 for torch."""
        if self.factory is None:
            return 0.0
        from hwprune_deploy.runner import timing_ms

        return timing_ms(measure_onnx_set({"o": overhead_onnx()}, self.factory, self.unit_protocol)["o"])

    def units(self, fam: UnitFamily, points: list[tuple[int, int]]) -> dict[tuple[int, int], Timing]:
        """Interleaved timing of ``fam`` at each (cin, cout) point."""
        if self.factory is not None:
            models = {f"{a},{b}": unit_onnx(fam, a, b, sparse24=self.sparse) for a, b in points}
            t = measure_onnx_set(models, self.factory, self.unit_protocol)
            return {p: t[f"{p[0]},{p[1]}"] for p in points}
        fns = {}
        for a, b in points:
            mod, inputs = unit_module(fam, a, b)
            fns[(a, b)] = self.torch_backend.runner(mod, inputs if len(inputs) > 1 else inputs[0])
        if hasattr(self.torch_backend, "measure_fns"):  # CUDA: device events
            return self.torch_backend.measure_fns(fns, self.unit_protocol)
        return measure_interleaved(fns, self.unit_protocol)

    def models(self, models: Mapping[str, torch.nn.Module], x: torch.Tensor, passes: int = 2) -> dict[str, Timing]:
        """Interleaved end-to-end timing of whole models (as deployed: ONNX for ORT/TensorRT).
        ``passes`` independent interleaved passes; per model the fastest pass counts (a burst of
        load on a shared machine only ever adds time)."""
        from hwprune_deploy.runner import timing_ms

        if self.factory is not None:
            from ..export import onnx_bytes

            data = {k: onnx_bytes(m, x) for k, m in models.items()}

            def one():
                return measure_onnx_set(data, self.factory, self.model_protocol, chunk=6)
        else:
            fns = {k: self.torch_backend.runner(m, x) for k, m in models.items()}

            def one():
                if hasattr(self.torch_backend, "measure_fns"):
                    return self.torch_backend.measure_fns(fns, self.model_protocol)
                return measure_interleaved(fns, self.model_protocol)
        best: dict[str, Timing] = {}
        for _ in range(max(1, passes)):
            for k, t in one().items():
                if k not in best or timing_ms(t) < timing_ms(best[k]):
                    best[k] = t
        return best


def random_widths(groups, rng: np.random.Generator, align: int, min_width: int) -> dict[str, int]:
    """A random pruned variant: a global keep ratio in [0.25, 1], then per group a jitter of
    +-0.2 around it, snapped to the align grid. Spans the range a search visits."""
    r = rng.uniform(0.25, 1.0)
    out = {}
    for g in groups:
        if not g.prunable:
            continue
        f = float(np.clip(r + rng.uniform(-0.2, 0.2), 0.05, 1.0))
        out[g.name] = int(g.snap(g.width * f, align, min_width))
    return out


def build_variant(model: torch.nn.Module, x: torch.Tensor, widths: Mapping[str, int]) -> torch.nn.Module:
    """Really remove channels (keep the first ``w`` of each group) from a copy of ``model``."""
    from ..graph import ChannelGraph

    m = copy.deepcopy(model).eval()
    g = ChannelGraph(m, x)
    kept = {k: list(range(int(w))) for k, w in widths.items() if w < g.group(k).width}
    g.prune_(kept)
    return m.eval()
