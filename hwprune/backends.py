"""Backends on the host: the one registry (:mod:`hwprune_deploy.backends`) seen from PyTorch.

Every latency number hwprune reports (tables, validation, closed-loop checks, bench) goes
through a backend of that registry and the protocol in :mod:`hwprune_deploy.timing`, so they all
agree on what is measured: the model as the backend would deploy it (ORT: exported ONNX with full
graph optimisation and fixed threads), after warm-up, median of repeats.

Two kinds share the registry. ONNX backends (ort-cpu, tensorrt, ...) live in the torch-free
``hwprune_deploy``; here :func:`get_backend` wraps them in :class:`OnnxHostBackend`, which exports a
module to ONNX and times what the backend prepared. Torch backends (torch-cpu, torch-cuda, ...)
run ``nn.Module`` s, so they live in this module; the registry names them by a lazy path
(``"hwprune.backends:TorchCpuBackend"``). Registry errors become hwprune's own here: an unknown
name or option is a :class:`~hwprune.errors.ConfigError` listing what exists, a missing runtime a
:class:`~hwprune.errors.BackendUnavailableError` with the fix.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn

from hwprune_deploy import backends as registry
from hwprune_deploy.backends import list_backends, register_backend  # noqa: F401  (the one list, re-exported)
from hwprune_deploy.timing import Protocol, Timing, measure, measure_interleaved

from .errors import BackendUnavailableError, ConfigError


@contextlib.contextmanager
def host_errors():
    """Registry errors as hwprune's: unknown name or option -> ConfigError, missing runtime ->
    BackendUnavailableError (messages unchanged: they name the value and the fix)."""
    try:
        yield
    except registry.BackendUnavailableError as e:
        raise BackendUnavailableError(str(e)) from None
    except registry.BackendError as e:
        raise ConfigError(str(e)) from None


def backend_class(name: str) -> type:
    """The class registered as ``name`` (imported on first use); ConfigError listing the names."""
    with host_errors():
        return registry.backend_class(name)


def check_backend_name(name: str) -> None:
    """ConfigError (with a did-you-mean and the registered names) unless ``name`` is registered."""
    with host_errors():
        registry.backend_spec(name)


def get_backend(name: str, protocol: Optional[Protocol] = None, **options):
    """The backend registered as ``name``, ready for ``runner(model, x)``, ``measure(_many)`` and
    ``fingerprint()``: torch backends as they are, ONNX backends wrapped in
    :class:`OnnxHostBackend`. ``options``: threads, precision, spinning and the backend's own."""
    with host_errors():
        cls = registry.backend_class(name)
        if not cls.onnx:
            return cls(**options, **({} if protocol is None else {"protocol": protocol}))
        return OnnxHostBackend(cls(**options), protocol or Protocol())


def check_ort_spinning(spinning: bool, backend: str) -> None:
    """ORT's worker spinning (``--ort-spinning``) is a setting of backends that have it (ort-cpu):
    a ConfigError naming the backend and the fix otherwise (every config that takes the flag checks here)."""
    if not spinning:
        return
    try:
        ok = registry.backend_class(backend).supports_spinning
    except registry.BackendError:
        ok = False
    if not ok:
        raise ConfigError(registry.spinning_message(backend))


def require_cuda() -> None:
    """Raise BackendUnavailableError with the fix when no CUDA device is usable."""
    TorchCudaBackend.check()


def require_tensorrt() -> None:
    """Raise BackendUnavailableError naming what is missing (package, pycuda, device)."""
    backend_class("tensorrt").check()


class OnnxHostBackend:
    """An ONNX backend of the registry used from PyTorch: ``runner(model, x)`` exports the module
    (static shape, as deployed) and prepares it on the backend, fed ``x``."""

    def __init__(self, device: registry.Backend, protocol: Optional[Protocol] = None):
        self.device = device
        self.protocol = protocol or Protocol()

    def __getattr__(self, item):  # name, threads, precision, spinning, onnx, ... of the device backend
        return getattr(self.__dict__["device"], item)

    def check(self) -> None:
        with host_errors():
            self.device.check()

    def fingerprint(self) -> dict:
        with host_errors():
            return self.device.fingerprint()

    def runner_from_onnx(self, data: bytes, x: Optional[torch.Tensor] = None) -> Callable[[], object]:
        inputs = None if x is None else [t.detach().cpu().numpy() for t in (x if isinstance(x, tuple) else (x,))]
        with host_errors():
            return self.device.prepare(data, inputs=inputs)

    def runner(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        from .onnx_export import onnx_bytes

        return self.runner_from_onnx(onnx_bytes(model, x), x)

    def measure(self, model: nn.Module, x: torch.Tensor) -> Timing:
        return self.device.time({"m": self.runner(model, x)}, self.protocol)["m"]

    def measure_many(self, models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, Timing]:
        """Side by side, repeats interleaved. Where only one runner may be alive at a time (ORT's
        default spinning workers: a live session's workers keep spinning after its run and take
        the CPU from the one being timed; on a 2-vCPU VM the unpruned tiny_resnet read 0.84-1.3 ms
        next to a second live session, 0.47-0.49 alone), each repeat builds the model's runner,
        warms it up, times one repeat and drops it."""
        if not self.device.one_alive_at_a_time:
            return self.device.time({k: self.runner(m, x) for k, m in models.items()}, self.protocol)
        from hwprune_deploy.timing import measure_interleaved_fresh

        from .onnx_export import onnx_bytes

        data = {k: onnx_bytes(m, x) for k, m in models.items()}
        return measure_interleaved_fresh({k: (lambda d=d: self.runner_from_onnx(d, x)) for k, d in data.items()},
                                         self.protocol)


@dataclass
class Backend(registry.Backend):
    """Base of the torch backends (``onnx = False``): ``runner`` returns a zero-argument callable
    running one inference of an ``nn.Module``."""

    name: str = "base"
    threads: int = 2
    precision: str = "fp32"
    protocol: Protocol = field(default_factory=Protocol)
    spinning: Optional[bool] = False  # ORT's setting: torch backends take only False
    onnx = False
    #: where unit micro-modules are built (None: the CPU)
    unit_device = None

    def __post_init__(self):
        with host_errors():
            self.validate()

    @classmethod
    def check(cls) -> None:
        with host_errors():
            super().check()

    def runner(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        raise NotImplementedError

    def fingerprint(self) -> dict:
        return {}

    def measure(self, model: nn.Module, x: torch.Tensor) -> Timing:
        return measure(self.runner(model, x), self.protocol)

    def measure_many(self, models: dict[str, nn.Module], x: torch.Tensor) -> dict[str, Timing]:
        """Side-by-side measurement (repeats interleaved across models)."""
        return measure_interleaved({k: self.runner(m, x) for k, m in models.items()}, self.protocol)


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


@dataclass
class TorchCpuBackend(Backend):
    """Eager PyTorch on the CPU under ``inference_mode`` with ``threads`` intra-op threads."""

    name: str = "torch-cpu"
    precisions = ("fp32",)

    def runner(self, model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
        model = fold_batchnorm(model)
        threads = self.threads
        xs = x if isinstance(x, tuple) else (x,)  # a unit with a fused add takes (x, residual)

        def run():
            prev = torch.get_num_threads()
            torch.set_num_threads(threads)
            try:
                with torch.inference_mode():
                    return model(*xs)
            finally:
                torch.set_num_threads(prev)

        return run

    def fingerprint(self) -> dict:
        from hwprune_deploy.ort import cpu_fingerprint

        return {**cpu_fingerprint(), "torch": torch.__version__, "threads": self.threads}


@dataclass
class TorchCudaBackend(Backend):
    """Eager PyTorch on a CUDA GPU, timed with CUDA events (device time, not host time).

    ``precision``: fp32 | fp16 | bf16 (model and input cast); ``cuda_graphs``: capture one
    inference in a CUDA graph and replay it (removes launch overhead, as a deployment would);
    ``sparse24``: replace eligible Linear weights by 2:4 semi-structured sparse tensors
    (``torch.sparse.to_sparse_semi_structured``; fp16/bf16, shapes multiple of 64) so the table can
    hold dense and sparse variants side by side. Run on an H200 (`bash tools/gpu_session.sh`); CI has no GPU.
    """

    name: str = "torch-cuda"
    cuda_graphs: bool = False
    sparse24: bool = False
    precisions = ("fp32", "fp16", "bf16")
    unit_device = "cuda"

    @classmethod
    def unavailable_reason(cls) -> str:
        if torch.cuda.is_available():
            return ""
        return f"none is visible here (torch {torch.__version__}, cuda {torch.version.cuda})"

    @classmethod
    def unavailable_message(cls, reason: str) -> str:
        return (f"backend {cls.name!r} needs a CUDA GPU and a CUDA build of PyTorch; {reason}. "
                "Use --backend ort-cpu or torch-cpu, or run on a GPU box.")

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


@dataclass
class TorchCudaSparseBackend(TorchCudaBackend):
    """torch-cuda with 2:4 semi-structured sparse Linear weights (fp16 by default), captured in a
    CUDA graph by default. Eager, PyTorch's semi-structured tensor subclass pays about 0.5 ms of
    host-side dispatch and set-up per call whatever the GEMM's size (an H200 with torch 2.11:
    0.45-0.89 ms per Linear of any ViT-B shape where the dense one takes 0.03-0.08 ms), so an eager
    table says 2:4 is always 10-20x slower; captured in a graph the same units run at 0.83-1.16x of
    dense (``python tools/sparse24.py --diagnose``), the sparse tensor cores' own time, as a
    deployment that captures graphs (or TensorRT) runs them."""

    name: str = "torch-cuda-sparse"
    precision: str = "fp16"
    cuda_graphs: bool = True
    sparse24: bool = True
    precisions = ("fp16", "bf16", "fp32")


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
