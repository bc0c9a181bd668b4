"""Execution backends: turn an ``nn.Module`` + example input into a prepared, timeable runner.

Every latency number hwprune reports (tables, validation, closed-loop checks, bench) goes
through a backend here and the protocol in :mod:`hwprune_deploy.timing`, so they all agree on
what is measured: the model as the backend would deploy it (ORT: exported ONNX with full graph
optimisation and fixed threads), after warm-up, median of repeats.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from hwprune_deploy.timing import Protocol, Timing, measure, measure_interleaved

from .errors import BackendUnavailableError
from .registry import Registry


@dataclass
class Backend:
    """Base class. ``runner`` returns a zero-argument callable running one inference."""

    name: str = "base"
    threads: int = 2
    precision: str = "fp32"
    protocol: Protocol = field(default_factory=Protocol)

    def runner(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        raise NotImplementedError

    def runner_from_onnx(self, data: bytes, x: torch.Tensor) -> Callable[[], object]:
        raise BackendUnavailableError(f"backend {self.name!r} does not run ONNX files")

    def fingerprint(self) -> dict:
        return {}

    def measure(self, model: nn.Module, x: torch.Tensor) -> Timing:
        return measure(self.runner(model, x), self.protocol)

    def measure_many(self, models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, Timing]:
        """Side-by-side measurement (repeats interleaved across models)."""
        return measure_interleaved({k: self.runner(m, x) for k, m in models.items()}, self.protocol)


BACKENDS: Registry[type] = Registry("backend")


def get_backend(name: str, **kwargs) -> Backend:
    return BACKENDS.get(name)(**kwargs)


def list_backends() -> list[str]:
    return BACKENDS.list()


@BACKENDS.register("ort-cpu")
@dataclass
class OrtCpuBackend(Backend):
    """ONNX Runtime, CPUExecutionProvider, ORT_ENABLE_ALL, ``threads`` intra-op threads."""

    name: str = "ort-cpu"
    opt_level: str = "all"

    def runner(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        from .export import onnx_bytes

        return self.runner_from_onnx(onnx_bytes(model, x), x)

    def runner_from_onnx(self, data: bytes, x: torch.Tensor) -> Callable[[], object]:
        import numpy as np

        from hwprune_deploy.ort import make_session

        sess = make_session(data, threads=self.threads, opt_level=self.opt_level)
        feed = {sess.get_inputs()[0].name: x.detach().cpu().numpy().astype(np.float32)}
        return lambda: sess.run(None, feed)

    def fingerprint(self) -> dict:
        from hwprune_deploy.ort import cpu_fingerprint

        return {**cpu_fingerprint(), "threads": self.threads, "opt_level": self.opt_level}


@BACKENDS.register("torch-cpu")
@dataclass
class TorchCpuBackend(Backend):
    """Eager PyTorch on the CPU under ``inference_mode`` with ``threads`` intra-op threads."""

    name: str = "torch-cpu"

    def runner(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        model = model.eval()
        threads = self.threads

        def run():
            prev = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    return model(x)
            finally:
                torch.set_num_threads(prev)

        return run

    def fingerprint(self) -> dict:
        from hwprune_deploy.ort import cpu_fingerprint

        return {**cpu_fingerprint(), "torch": torch.__version__, "threads": self.threads}
