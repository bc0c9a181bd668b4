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
    spinning: bool | None = False  # blocked workers, as latency tables time (see make_session); None = ORT default

    def runner(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        from .export import onnx_bytes

        return self.runner_from_onnx(onnx_bytes(model, x), x)

    def runner_from_onnx(self, data: bytes, x: torch.Tensor) -> Callable[[], object]:
        import numpy as np

        from hwprune_deploy.ort import make_session

        sess = make_session(data, threads=self.threads, opt_level=self.opt_level, spinning=self.spinning)
        feed = {sess.get_inputs()[0].name: x.detach().cpu().numpy().astype(np.float32)}
        return lambda: sess.run(None, feed)

    def fingerprint(self) -> dict:
        from hwprune_deploy.ort import cpu_fingerprint

        fp = {**cpu_fingerprint(), "threads": self.threads, "opt_level": self.opt_level}
        if self.spinning is not None:
            fp["spinning"] = self.spinning
        return fp

    def measure_many(self, models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, Timing]:
        """Side by side, repeats interleaved. With spinning workers (``spinning`` None or True,
        ORT's default) only one session may be alive at a time: a live session's workers keep
        spinning after its run and take the CPU from the one being timed (on a 2-vCPU VM the
        unpruned tiny_resnet read 0.84-1.3 ms next to a second live session, 0.47-0.49 alone).
        So each repeat builds the model's session, warms it up, times one repeat and drops it."""
        if self.spinning is False:
            return super().measure_many(models, x)
        from hwprune_deploy.timing import measure_interleaved_fresh

        from .export import onnx_bytes

        data = {k: onnx_bytes(m, x) for k, m in models.items()}
        return measure_interleaved_fresh({k: (lambda d=d: self.runner_from_onnx(d, x)) for k, d in data.items()},
                                         self.protocol)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every BatchNorm folded into the Conv/Linear before it, as ORT and
    TensorRT do when they load a model (torch.fx's ``fuse`` pass), so eager PyTorch times the
    network the latency units describe (conv with bias, no separate BN kernel). Models fx cannot
    trace are timed as they are (eval mode); the caller's module is never changed."""
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return model.eval()
    try:
        return fuse(model.eval())
    except Exception:  # untraceable control flow: keep the eager model
        return model.eval()


@BACKENDS.register("torch-cpu")
@dataclass
class TorchCpuBackend(Backend):
    """Eager PyTorch on the CPU under ``inference_mode`` with ``threads`` intra-op threads."""

    name: str = "torch-cpu"

    def runner(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        model = fold_batchnorm(model)
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


def require_cuda() -> None:
    """Raise BackendUnavailableError with the fix when no CUDA device is usable."""
    if not torch.cuda.is_available():
        raise BackendUnavailableError(
            "backend 'torch-cuda' needs a CUDA GPU and a CUDA build of PyTorch; none is visible here "
            f"(torch {torch.__version__}, cuda {torch.version.cuda}). Use --backend ort-cpu or torch-cpu, or run on a GPU box.")


def check_ort_spinning(spinning: bool, backend: str) -> None:
    """ORT's worker spinning (``--ort-spinning``) is a setting of ``ort-cpu`` only: a ConfigError
    naming the backend and the fix otherwise (every config that takes the flag checks here)."""
    if spinning and backend != "ort-cpu":
        from .errors import ConfigError

        raise ConfigError(f"--ort-spinning applies to --backend ort-cpu only, not {backend!r}; "
                          "drop --ort-spinning or use --backend ort-cpu")


def require_tensorrt() -> None:
    """Raise BackendUnavailableError naming what is missing (package, pycuda, device)."""
    from hwprune_deploy.trt import unavailable_reason

    why = unavailable_reason()
    if why:
        raise BackendUnavailableError(
            f"backend 'tensorrt' is unavailable: {why}. Install it on a machine with an NVIDIA GPU "
            "(pip install 'hwprune[tensorrt]'), or profile remotely: `hwprune profile --bundle b.zip`, then "
            "`hwprune-deploy measure b.zip --backend tensorrt --out r.json` on the device.")


@BACKENDS.register("torch-cuda")
@dataclass
class TorchCudaBackend(Backend):
    """Eager PyTorch on a CUDA GPU, timed with CUDA events (device time, not host time).

    ``precision``: fp32 | fp16 | bf16 (model and input cast); ``cuda_graphs``: capture one
    inference in a CUDA graph and replay it (removes launch overhead, as a deployment would);
    ``sparse24``: replace eligible Linear weights by 2:4 semi-structured sparse tensors
    (``torch.sparse.to_sparse_semi_structured``; fp16/bf16, shapes multiple of 64) so the table can
    hold dense and sparse variants side by side. UNTESTED ON HARDWARE in this repository's CI.
    """

    name: str = "torch-cuda"
    cuda_graphs: bool = False
    sparse24: bool = False

    def _dtype(self):
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]

    def runner(self, model: nn.Module, x) -> Callable[[], object]:
        require_cuda()
        dt = self._dtype()
        model = fold_batchnorm(model).to("cuda", dt)
        xs = tuple(t.to("cuda", dt) for t in (x if isinstance(x, tuple) else (x,)))
        if self.sparse24:
            _to_semi_structured(model)
        if self.cuda_graphs:
            with torch.inference_mode():
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s):
                    for _ in range(3):
                        model(*xs)
                torch.cuda.current_stream().wait_stream(s)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model(*xs)
            return graph.replay

        def run():
            with torch.inference_mode():
                return model(*xs)

        return run

    def _time(self, fns: dict[str, Callable[[], object]]) -> dict[str, Timing]:
        from hwprune_deploy.timing import summarize_ms

        p = self.protocol
        for fn in fns.values():
            for _ in range(p.warmup):
                fn()
        torch.cuda.synchronize()
        inner = 10
        samples: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(p.repeats):
            for k, fn in fns.items():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(inner):
                    fn()
                end.record()
                end.synchronize()
                samples[k].append(start.elapsed_time(end) / inner)
        out = {}
        for k, s in samples.items():
            t = summarize_ms(s)
            out[k] = Timing(t.median_ms, t.p10_ms, t.p90_ms, t.iqr_ms, t.repeats, inner)
        return out

    def measure(self, model: nn.Module, x) -> Timing:
        return self._time({"m": self.runner(model, x)})["m"]

    def measure_many(self, models: dict[str, nn.Module], x) -> dict[str, Timing]:
        return self._time({k: self.runner(m, x) for k, m in models.items()})

    def measure_fns(self, fns: dict[str, Callable[[], object]], protocol: Protocol | None = None) -> dict[str, Timing]:
        return self._time(fns)

    def fingerprint(self) -> dict:
        require_cuda()
        p = torch.cuda.get_device_properties(0)
        return {"gpu": p.name, "compute_capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda,
                "torch": torch.__version__, "precision": self.precision, "cuda_graphs": self.cuda_graphs,
                "sparse24": self.sparse24}


@BACKENDS.register("torch-cuda-sparse")
@dataclass
class TorchCudaSparseBackend(TorchCudaBackend):
    """torch-cuda with 2:4 semi-structured sparse Linear weights (fp16 by default)."""

    name: str = "torch-cuda-sparse"
    precision: str = "fp16"
    sparse24: bool = True


def _to_semi_structured(model: nn.Module) -> None:
    """Give eligible Linear layers a 2:4 pattern and swap in semi-structured sparse weights."""
    from torch.sparse import to_sparse_semi_structured

    for mod in model.modules():
        if isinstance(mod, nn.Linear) and mod.in_features % 64 == 0 and mod.out_features % 64 == 0:
            w = mod.weight.detach().clone()
            mask = torch.zeros_like(w, dtype=torch.bool).view(-1, 4)
            mask[:, :2] = True
            w = w * mask.view_as(w)
            mod.weight = nn.Parameter(to_sparse_semi_structured(w), requires_grad=False)


@BACKENDS.register("tensorrt")
@dataclass
class TensorRTBackend(Backend):
    """TensorRT engine per model/unit (fp32/fp16/int8 flags), timed with CUDA events via pycuda
    (see :mod:`hwprune_deploy.trt`). Imported lazily; UNTESTED ON HARDWARE in this CI."""

    name: str = "tensorrt"
    sparse: bool = False

    def runner(self, model: nn.Module, x) -> Callable[[], object]:
        from .export import onnx_bytes

        return self.runner_from_onnx(onnx_bytes(model, x), x)

    def runner_from_onnx(self, data: bytes, x=None) -> Callable[[], object]:
        require_tensorrt()
        from hwprune_deploy.trt import TrtRunnerFactory

        return TrtRunnerFactory(precision=self.precision, sparse=self.sparse)(data)

    def measure(self, model: nn.Module, x) -> Timing:
        return self.runner(model, x).time_events(self.protocol)

    def measure_many(self, models: dict[str, nn.Module], x) -> dict[str, Timing]:
        return {k: self.runner(m, x).time_events(self.protocol) for k, m in models.items()}

    def fingerprint(self) -> dict:
        require_tensorrt()
        from hwprune_deploy.trt import TrtRunnerFactory

        return TrtRunnerFactory(precision=self.precision, sparse=self.sparse).fingerprint()


@BACKENDS.register("tensorrt-sparse")
@dataclass
class TensorRTSparseBackend(TensorRTBackend):
    """TensorRT with the sparse-weights flag (2:4 sparse tensor cores) and fp16."""

    name: str = "tensorrt-sparse"
    precision: str = "fp16"
    sparse: bool = True
