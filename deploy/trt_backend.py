"""``tensorrt`` and ``tensorrt-sparse``: a TensorRT engine per ONNX model, timed with CUDA events
(see :mod:`hwprune_deploy.trt`). Torch-free; TensorRT and pycuda are imported on use only, so
this module loads anywhere and an absent runtime is a clear message. Registered in
:mod:`hwprune_deploy.backends`. UNTESTED ON HARDWARE in this repository's CI."""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

from .backends import Backend
from .timing import Protocol, Timing


class TensorRTBackend(Backend):
    """TensorRT engines built per model/unit (fp32, or the fp16 builder flag)."""

    name = "tensorrt"
    onnx = True
    precisions = ("fp32", "fp16")
    sparse = False

    def __init__(self, threads: int = 2, precision: Optional[str] = None, spinning: Optional[bool] = False,
                 workspace_mb: int = 1024):
        self.workspace_mb = workspace_mb
        super().__init__(threads=threads, precision=precision, spinning=spinning)

    @classmethod
    def unavailable_reason(cls) -> str:
        from .trt import unavailable_reason

        return unavailable_reason()

    @classmethod
    def unavailable_message(cls, reason: str) -> str:
        return (f"backend {cls.name!r} is unavailable: {reason}. Install it on a machine with an NVIDIA GPU "
                "(pip install 'hwprune[tensorrt]'), or profile remotely: `hwprune profile --bundle b.zip`, then "
                f"`hwprune-deploy measure b.zip --backend {cls.name} --out r.json` on the device.")

    def _factory(self):
        from .trt import TrtRunnerFactory

        return TrtRunnerFactory(precision=self.precision, sparse=self.sparse, workspace_mb=self.workspace_mb)

    def fingerprint(self) -> dict:
        self.check()
        return self._factory().fingerprint()

    def prepare(self, data: bytes, kernel_time: bool = False,
                inputs: Optional[Sequence] = None) -> Callable[[], object]:
        """An engine built at the ONNX's static shape, run on device-resident random input."""
        self.check()
        return self._factory()(data)

    def time(self, runners: Mapping[str, Callable[[], object]], protocol: Protocol) -> dict[str, Timing]:
        """CUDA events around back-to-back enqueues, per engine (device time, not host time)."""
        return {k: r.time_events(protocol) for k, r in runners.items()}


class TensorRTSparseBackend(TensorRTBackend):
    """TensorRT with the sparse-weights flag (2:4 sparse tensor cores); fp16 by default."""

    name = "tensorrt-sparse"
    precisions = ("fp16", "fp32")
    sparse = True
    sparse24 = True
