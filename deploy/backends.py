"""The one backend registry: every place that times a model (profile, validate, the closed loop,
bench, the bundle runner) asks here for a backend by name. Torch-free.

A backend is a :class:`Backend`: it names its precisions and its width grid, fingerprints the
device, says whether its runtime is usable here (:meth:`Backend.unavailable_reason`) and times
what it prepared. *ONNX backends* (``onnx = True``: ort-cpu, tensorrt, ...) prepare ONNX bytes
into zero-argument runners, so the same code runs on a device without PyTorch. *Torch backends*
(``onnx = False``: torch-cpu, torch-cuda, ...) run an ``nn.Module`` and live in ``hwprune``; they
are registered here by a lazy ``"module:attribute"`` path, so this module never imports torch or
hwprune (the Polygraphy pattern: a missing runtime is a clear message on use, not an ImportError
at start-up).

    from hwprune_deploy.backends import get_backend, list_backends, register_backend

    be = get_backend("ort-cpu", threads=2)      # imports hwprune_deploy.ort_backend on first use
    be.check()                                  # BackendUnavailableError with the fix, if unusable
    run = be.prepare(onnx_data)                 # zero-arg callable: one inference
    register_backend("my-ort", "my_pkg.backends:MyOrt")   # a new backend is one module + this line
"""
from __future__ import annotations

import difflib
import importlib
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence, Union

from .timing import Protocol, Timing, measure_interleaved


class BackendError(Exception):
    """Root of the registry's errors; the message names the bad value and the fix."""


class UnknownBackendError(BackendError, ValueError):
    """No backend is registered under that name (the message lists those that are)."""


class UnsupportedOptionError(BackendError, ValueError):
    """A backend was asked for a precision or setting it does not have."""


class BackendUnavailableError(BackendError, RuntimeError):
    """The backend is registered but its runtime (package, device) is not usable here."""


class Backend:
    """Base of every backend. Subclasses set the class attributes and implement :meth:`prepare`
    (ONNX backends) or the host's ``runner(model, x)`` (torch backends, in ``hwprune.backends``).

    Options every backend takes: ``threads`` (intra-op threads, recorded in the fingerprint),
    ``precision`` (one of :attr:`precisions`) and ``spinning`` (ORT's worker spinning: False
    blocked, True spinning within a run and stopped between runs, None the runtime's default;
    only backends with :attr:`supports_spinning` take anything but False)."""

    #: the registry name (set by the subclass; :func:`register_backend` does not rename classes)
    name: str = "base"
    #: True: prepares ONNX bytes (runs device-side without torch); False: runs nn.Modules on the host
    onnx: bool = True
    #: precisions this backend can time; the first is its default
    precisions: tuple[str, ...] = ("fp32",)
    #: takes ``spinning`` True/None (ORT's worker threads)
    supports_spinning: bool = False
    #: unit micro-models carry context nodes around the unit (ORT: NCHWc layout kept at the edges)
    unit_context: bool = False
    #: unit micro-models carry 2:4 sparse weights (sparse tensor cores)
    sparse24: bool = False
    #: units are timed by the runtime's kernel time (no per-call overhead to subtract)
    kernel_time_units: bool = False

    def __init__(self, threads: int = 2, precision: Optional[str] = None, spinning: Optional[bool] = False):
        self.threads = int(threads)
        self.precision = self.precisions[0] if precision is None else precision
        self.spinning = spinning
        self.validate()

    def validate(self) -> None:
        """UnsupportedOptionError naming the bad option and the fix."""
        if self.spinning is not False and not self.supports_spinning:
            raise UnsupportedOptionError(spinning_message(self.name))
        if self.threads < 1:
            raise UnsupportedOptionError(f"threads {self.threads} must be >= 1")
        if self.precision not in self.precisions:
            hint = ("; int8 runs on --backend ort-cpu (static QDQ quantization by onnxruntime.quantization)"
                    if self.precision == "int8" else "")
            raise UnsupportedOptionError(f"precision {self.precision!r} is not supported on {self.name}; use "
                                         + (" or ".join(self.precisions)) + hint)

    # ------------------------------------------------------------------ availability
    @classmethod
    def unavailable_reason(cls) -> str:
        """'' when the backend's runtime is usable here, else a short reason."""
        return ""

    @classmethod
    def unavailable_message(cls, reason: str) -> str:
        """The whole message for :class:`BackendUnavailableError` (the reason plus the fix)."""
        return f"backend {cls.name!r} is unavailable: {reason}"

    @classmethod
    def check(cls) -> None:
        """Raise :class:`BackendUnavailableError` with the fix when the runtime is not usable."""
        why = cls.unavailable_reason()
        if why:
            raise BackendUnavailableError(cls.unavailable_message(why))

    # ------------------------------------------------------------------ the device
    @classmethod
    def default_grid(cls, fingerprint: Optional[dict] = None, precision: Optional[str] = None) -> int:
        """The channel multiple the device rewards (``--align`` default), for the device that
        ``fingerprint`` describes (None: this machine) running ``precision`` (None: fp32). 8: fp16
        tensor cores, SIMD."""
        return 8

    def fingerprint(self) -> dict:
        """What identifies the device and runtime for a latency table."""
        return {"threads": self.threads}

    # ------------------------------------------------------------------ timing (ONNX backends)
    def prepare(self, data: bytes, kernel_time: bool = False,
                inputs: Optional[Sequence] = None) -> Callable[[], object]:
        """ONNX bytes -> a zero-argument callable running one inference. ``inputs``: arrays fed
        to the model's inputs in order (None: random, as units are timed); ``kernel_time``: the
        runner reports kernel time (only where :attr:`kernel_time_units`)."""
        raise UnsupportedOptionError(f"backend {self.name!r} does not run ONNX files; ONNX backends: "
                                     f"{', '.join(list_backends(onnx=True))}")

    def runner_factory(self, kernel_time: bool = False) -> "RunnerFactory":
        """:meth:`prepare` as a ``bytes -> runner`` factory for
        :func:`hwprune_deploy.runner.measure_onnx_set` (with ``kernel_time`` and ``fingerprint``)."""
        return RunnerFactory(self, kernel_time and self.kernel_time_units)

    def time(self, runners: Mapping[str, Callable[[], object]], protocol: Protocol) -> dict[str, Timing]:
        """Time prepared runners side by side (repeats interleaved, host clock)."""
        return measure_interleaved(dict(runners), protocol)

    #: runners must not be alive together (each repeat needs a fresh one; see
    #: :func:`hwprune_deploy.timing.measure_interleaved_fresh`)
    @property
    def one_alive_at_a_time(self) -> bool:
        return False


class RunnerFactory:
    """``bytes -> runner`` through a backend's :meth:`Backend.prepare`; what the runner's
    :func:`~hwprune_deploy.runner.measure_onnx_set` and :func:`~hwprune_deploy.runner.unit_time` read."""

    def __init__(self, backend: Backend, kernel_time: bool = False):
        self.backend, self.kernel_time = backend, bool(kernel_time)
        self.name = backend.name

    def __call__(self, data: bytes) -> Callable[[], object]:
        return self.backend.prepare(data, kernel_time=self.kernel_time)

    def fingerprint(self) -> dict:
        return self.backend.fingerprint()


def spinning_message(name: str) -> str:
    return (f"--ort-spinning applies to --backend ort-cpu only, not {name!r}; "
            "drop --ort-spinning or use --backend ort-cpu")


# ---------------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class BackendSpec:
    """A registered name: where its class lives (imported on first use) and whether it runs ONNX."""

    name: str
    target: Union[str, type]  # "package.module:Attribute", or the class itself
    onnx: bool = True
    summary: str = ""


_REGISTRY: dict[str, BackendSpec] = {}
_LOADED: dict[str, type] = {}


def load_target(target: str):
    """The object a lazy ``"package.module:attribute"`` path names (the module imported now; the
    attribute may be dotted). ValueError for a path not of that form; ImportError/AttributeError
    as importing and looking it up raise them. hwprune's own registries (criteria, strategies)
    resolve their lazy entries with this too."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"lazy registry target {target!r} is not 'package.module:attribute'")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def register_backend(name: str, target: Union[str, type, None] = None, *, onnx: Optional[bool] = None,
                     summary: str = ""):
    """Register a backend class under ``name`` (a warning on overwrite, as timm's registry does).

    ``target``: the class, or ``"module:Attribute"`` imported on first use (so a runtime that is
    absent costs nothing until that backend is asked for). Without ``target`` it is a class
    decorator. ``onnx``: does it prepare ONNX bytes (taken from the class when given one)."""
    def add(obj: Union[str, type]):
        is_onnx = onnx if onnx is not None else bool(getattr(obj, "onnx", True))
        if name in _REGISTRY:
            warnings.warn(f"overwriting backend {name!r} in the registry", stacklevel=3)
        text = summary or ("" if isinstance(obj, str) else (obj.__doc__ or "").strip().split("\n")[0])
        _REGISTRY[name] = BackendSpec(name, obj, is_onnx, text)
        _LOADED.pop(name, None)
        return obj

    if target is None:
        return add
    return add(target)


def unregister_backend(name: str) -> None:
    """Remove ``name`` (tests that register a toy backend clean up with this)."""
    _REGISTRY.pop(name, None)
    _LOADED.pop(name, None)


def list_backends(onnx: Optional[bool] = None) -> list[str]:
    """Registered names, sorted (``onnx``: only ONNX backends / only torch backends). Imports nothing."""
    return sorted(n for n, s in _REGISTRY.items() if onnx is None or s.onnx == onnx)


def backend_spec(name: str) -> BackendSpec:
    """The registration of ``name``; UnknownBackendError listing the registered names otherwise."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=3)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownBackendError(f"unknown backend {name!r}.{hint} Available: {', '.join(list_backends())}") from None


def backend_class(name: str) -> type:
    """The class registered as ``name``, importing its module on first use. A module that cannot
    be imported (a torch backend on a device without PyTorch) is a BackendUnavailableError."""
    if name in _LOADED:
        return _LOADED[name]
    spec = backend_spec(name)
    cls = spec.target
    if isinstance(cls, str):
        module = cls.partition(":")[0]
        try:
            cls = load_target(cls)
        except ImportError as e:
            raise BackendUnavailableError(
                f"backend {name!r} is unavailable: its module {module!r} cannot be imported ({e}); "
                + ("it runs on the host with hwprune and PyTorch installed" if not spec.onnx else
                   "install what it needs")) from None
    _LOADED[name] = cls
    return cls


def get_backend(name: str, **options) -> Backend:
    """An instance of the backend ``name`` with ``options`` (threads, precision, spinning, ...).
    Does not check that its runtime is usable; call :meth:`Backend.check` for that."""
    return backend_class(name)(**options)


# The built-in backends, one line each: a new backend is its module plus a line here (or a
# register_backend call of its own, for a backend that lives outside hwprune).
register_backend("ort-cpu", "hwprune_deploy.ort_backend:OrtCpuBackend", onnx=True,
                 summary="ONNX Runtime on the CPU, fixed threads, full graph optimisation")
register_backend("tensorrt", "hwprune_deploy.trt_backend:TensorRTBackend", onnx=True,
                 summary="TensorRT engine per model (fp32/fp16), CUDA-event timing (tensorrt + pycuda)")
register_backend("tensorrt-sparse", "hwprune_deploy.trt_backend:TensorRTSparseBackend", onnx=True,
                 summary="TensorRT with 2:4 sparse weights, fp16")
register_backend("torch-cpu", "hwprune.backends:TorchCpuBackend", onnx=False,
                 summary="eager PyTorch on the CPU (host only)")
register_backend("torch-cuda", "hwprune.backends:TorchCudaBackend", onnx=False,
                 summary="eager PyTorch on a CUDA GPU, CUDA-event timing (host only)")
register_backend("torch-cuda-sparse", "hwprune.backends:TorchCudaSparseBackend", onnx=False,
                 summary="torch-cuda with 2:4 semi-structured sparse Linear weights (host only)")
