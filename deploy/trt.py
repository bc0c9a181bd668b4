"""TensorRT engines from ONNX, and a pycuda runner timed with CUDA events. Torch-free.

Everything imports ``tensorrt``/``pycuda`` lazily, so this module loads anywhere;
:func:`unavailable_reason` says why TensorRT cannot be used here (not installed, no CUDA device)
and callers turn that into a clear message. Engines are built with an optimisation profile over
the batch axis (min/opt/max), optional fp16/int8 precision flags and the sparse-weights flag
(2:4 sparse tensor cores; weights must already carry 2:4 masks).

    data = open("model.onnx", "rb").read()             # dynamic batch axis, as `hwprune export` writes it
    engine = build_engine(data, input_shape=(3, 224, 224), opt_batch=8, fp16=True)
    runner = EngineRunner(engine, batch=8)
    ms = runner.time_events(Protocol())   # per-call latency from CUDA events
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from .timing import Protocol, Timing, summarize_ms


class EngineBuildError(RuntimeError):
    """The TensorRT builder rejected the network or produced no engine."""


def unavailable_reason() -> str:
    """'' when TensorRT + pycuda + a CUDA device are usable here, else a short reason."""
    try:
        import tensorrt  # noqa: F401
    except Exception as e:
        return f"the 'tensorrt' Python package is not importable ({type(e).__name__}: {e})"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() < 1:
            return "no CUDA device is visible"
    except Exception as e:
        return f"pycuda/CUDA is not usable ({type(e).__name__}: {e})"
    return ""


def _logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


class _Calibrator:
    """Entropy calibrator over a list of float32 NCHW batches (host arrays)."""

    def __new__(cls, batches: Sequence[np.ndarray]):
        import pycuda.autoinit  # noqa: F401
        import pycuda.driver as cuda
        import tensorrt as trt

        class Calib(trt.IInt8EntropyCalibrator2):
            def __init__(self):
                super().__init__()
                self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
                self.i = 0
                self.dev = cuda.mem_alloc(max(b.nbytes for b in self.batches))

            def get_batch_size(self):
                return int(self.batches[0].shape[0])

            def get_batch(self, names):
                if self.i >= len(self.batches):
                    return None
                cuda.memcpy_htod(self.dev, self.batches[self.i])
                self.i += 1
                return [int(self.dev)]

            def read_calibration_cache(self):
                return None

            def write_calibration_cache(self, cache):
                return None

        return Calib()


def _plan_shapes(net_shape: Sequence[int], input_shape: Optional[Sequence[int]], min_batch: int, opt_batch: int,
                 max_batch: int) -> Optional[tuple]:
    """The (min, opt, max) shapes of the optimisation profile for an input whose network shape is
    ``net_shape`` (-1 = dynamic), or None where the input is static and needs no profile.

    ``input_shape`` (C, H, W) may be None to take the network's own; a static input must match it."""
    net = tuple(int(d) for d in net_shape)
    if input_shape is None:
        if any(d < 0 for d in net[1:]):
            raise EngineBuildError(f"the ONNX input has dynamic non-batch dimensions {net}; pass input_shape=(C, H, W)")
        input_shape = net[1:]
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != len(net) - 1 or any(n >= 0 and n != s for n, s in zip(net[1:], shape)):
        raise EngineBuildError(f"input_shape {shape} does not match the ONNX input {net} (C, H, W after the batch)")
    if not any(d < 0 for d in net):
        return None  # static: TensorRT builds for exactly this shape; min/opt/max batch do not apply
    if net[0] >= 0:
        min_batch = opt_batch = max_batch = net[0]
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise EngineBuildError(f"batch range min {min_batch} <= opt {opt_batch} <= max {max_batch} does not hold")
    return (min_batch, *shape), (opt_batch, *shape), (max_batch, *shape)


def build_engine(onnx_data: bytes, input_shape: Optional[Sequence[int]] = None, min_batch: int = 1,
                 opt_batch: int = 1, max_batch: int = 32, fp16: bool = False, int8: bool = False,
                 sparse: bool = False, calib_batches: Optional[Sequence[np.ndarray]] = None,
                 workspace_mb: int = 1024) -> bytes:
    """Parse ONNX bytes and build a serialized engine (bytes). ``input_shape`` is (C, H, W), or None
    for the ONNX input's own. A dynamic batch axis gets an optimisation profile over
    min/opt/max batch; a static input is built as it is (no profile needed)."""
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # implicit in TensorRT >= 10
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_data):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"ONNX parser: {errs}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if int8:
        if not calib_batches:
            raise EngineBuildError("int8 needs calibration batches")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = _Calibrator(calib_batches)
    if sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    inp = network.get_input(0)
    shapes = _plan_shapes(tuple(inp.shape), input_shape, min_batch, opt_batch, max_batch)
    if shapes is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(inp.name, *shapes)
        config.add_optimization_profile(profile)
        if int8:
            config.set_calibration_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise EngineBuildError("builder returned no engine (see the TensorRT log above)")
    return bytes(engine)


class EngineRunner:
    """Deserialize an engine, allocate device buffers for ``batch`` and run it on one stream."""

    def __init__(self, engine: bytes, batch: Optional[int] = 1, seed: int = 0):
        """``batch``: the batch to run; None for the engine's static batch (1 if it is dynamic)."""
        import pycuda.autoinit  # noqa: F401
        import pycuda.driver as cuda
        import tensorrt as trt

        self.cuda = cuda
        self.runtime = trt.Runtime(_logger())
        self.engine = self.runtime.deserialize_cuda_engine(engine)
        if self.engine is None:
            raise EngineBuildError("cannot deserialize the engine (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        rng = np.random.default_rng(seed)
        self.host, self.dev = {}, {}
        for n in self.inputs:
            shape = list(self.engine.get_tensor_shape(n))
            if shape[0] >= 0 and batch is not None and batch != shape[0]:
                raise EngineBuildError(f"the engine's input {n!r} has a static batch of {shape[0]}, not {batch}")
            if shape[0] < 0:
                shape[0] = 1 if batch is None else batch
            self.context.set_input_shape(n, shape)
            arr = rng.standard_normal(shape).astype(trt.nptype(self.engine.get_tensor_dtype(n)))
            self.host[n] = arr
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            self.host[n] = np.empty(shape, dtype=trt.nptype(self.engine.get_tensor_dtype(n)))
        for n, arr in self.host.items():
            self.dev[n] = cuda.mem_alloc(max(arr.nbytes, 1))
            self.context.set_tensor_address(n, int(self.dev[n]))
        for n in self.inputs:
            cuda.memcpy_htod(self.dev[n], self.host[n])

    def set_input(self, name: str, arr: np.ndarray) -> None:
        self.host[name] = np.ascontiguousarray(arr, dtype=self.host[name].dtype)
        self.cuda.memcpy_htod(self.dev[name], self.host[name])

    def enqueue(self) -> None:
        self.context.execute_async_v3(self.stream.handle)

    def __call__(self) -> None:
        """One synchronous inference (device-resident input; what a host clock may time)."""
        self.enqueue()
        self.stream.synchronize()

    def infer(self, x: np.ndarray) -> np.ndarray:
        """Copy ``x`` in, run, copy the first output back (parity checks)."""
        self.set_input(self.inputs[0], x)
        self()
        out = self.outputs[0]
        self.cuda.memcpy_dtoh(self.host[out], self.dev[out])
        return self.host[out].copy()

    def time_events(self, protocol: Protocol = Protocol()) -> Timing:
        """Per-call latency (ms) from CUDA events around ``inner`` back-to-back enqueues."""
        cuda = self.cuda
        for _ in range(protocol.warmup):
            self.enqueue()
        self.stream.synchronize()
        start, end = cuda.Event(), cuda.Event()
        start.record(self.stream)
        self.enqueue()
        end.record(self.stream)
        end.synchronize()
        once = max(end.time_since(start), 1e-4)
        inner = max(1, int(np.ceil(protocol.min_repeat_ms / once)))
        samples = []
        for _ in range(protocol.repeats):
            start.record(self.stream)
            for _ in range(inner):
                self.enqueue()
            end.record(self.stream)
            end.synchronize()
            samples.append(end.time_since(start) / inner)
        t = summarize_ms(samples)
        return Timing(t.median_ms, t.p10_ms, t.p90_ms, t.iqr_ms, t.repeats, inner)


def gpu_fingerprint() -> dict:
    import pycuda.autoinit  # noqa: F401
    import pycuda.driver as cuda
    import tensorrt as trt

    dev = cuda.Context.get_device()
    return {"gpu": dev.name(), "compute_capability": ".".join(map(str, dev.compute_capability())),
            "cuda_driver": cuda.get_driver_version(), "tensorrt": trt.__version__}


class TrtRunnerFactory:
    """ONNX bytes -> zero-arg callable running a freshly built engine at the ONNX's static shape
    (same contract as :class:`hwprune_deploy.runner.OrtRunnerFactory`). Reads the shape through
    TensorRT's own parser, so the device side needs no ``onnx`` package."""

    name = "tensorrt"

    def __init__(self, precision: str = "fp32", sparse: bool = False, workspace_mb: int = 1024):
        self.precision, self.sparse, self.workspace_mb = precision, sparse, workspace_mb

    def __call__(self, data: bytes) -> Callable[[], object]:
        engine = build_engine(data, min_batch=1, opt_batch=1, max_batch=1, fp16=self.precision == "fp16",
                              sparse=self.sparse, workspace_mb=self.workspace_mb)
        return EngineRunner(engine, batch=None)

    def fingerprint(self) -> dict:
        return {**gpu_fingerprint(), "precision": self.precision, "sparse": self.sparse}
