"""``ort-cpu``: ONNX Runtime on the CPU (CPUExecutionProvider, full graph optimisation, fixed
intra-op threads). Torch-free; registered in :mod:`hwprune_deploy.backends`."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

from .backends import Backend


class OrtCpuBackend(Backend):
    """ONNX Runtime, CPUExecutionProvider, ORT_ENABLE_ALL, ``threads`` intra-op threads.

    ``spinning``: False (hwprune's default) -- workers block between ops; True -- they spin
    during a run and stop when it returns, so sessions can still be timed side by side (what
    ``--ort-spinning`` tables are timed with); None -- ORT's default (they keep spinning between
    runs too), which only one live session at a time can be timed with.

    ``precision="int8"``: every model it prepares is statically quantized first (QDQ, per-channel
    int8 weights, uint8 activations: :mod:`hwprune_deploy.quant`) unless it already is, so units,
    calibration variants and whole models are timed as ORT runs the quantized network; random
    calibration inputs (latency does not depend on the scales), or ``inputs`` when given."""

    name = "ort-cpu"
    onnx = True
    precisions = ("fp32", "int8")
    supports_spinning = True
    unit_context = True  # ORT's NCHWc layout: a unit's micro-model keeps it at its edges
    kernel_time_units = True  # units: summed kernel time from ORT's profiler

    def __init__(self, threads: int = 2, precision: Optional[str] = None, spinning: Optional[bool] = False,
                 opt_level: str = "all"):
        self.opt_level = opt_level
        super().__init__(threads=threads, precision=precision, spinning=spinning)

    @classmethod
    def unavailable_reason(cls) -> str:
        try:
            import onnxruntime  # noqa: F401
        except Exception as e:
            return f"the 'onnxruntime' Python package is not importable ({type(e).__name__}: {e})"
        return ""

    @classmethod
    def unavailable_message(cls, reason: str) -> str:
        return f"backend {cls.name!r} is unavailable: {reason}. Install it: pip install onnxruntime"

    @classmethod
    def default_grid(cls, fingerprint: Optional[dict] = None, precision: Optional[str] = None) -> int:
        """fp32: the CPU's NCHWc channel block (16 with AVX-512F, 8 with AVX2; at least 8): a width
        off that grid drops a conv out of ORT's blocked layout and adds reorders a unit measured
        alone never shows. int8 on x86: at least 16, the channel block of MLAS's quantized kernels
        (its AVX2 depthwise kernel runs 16 channels per vector step and the rest one by one; its
        u8s8 GEMM packs 16 output channels per pass). On this AVX2 host a width 8 short of a
        multiple of 16 cost mobilenet_v2 about what the multiple of 16 cost, or more (docs/latency.md,
        "The width grid is the device's"; ``tools/int8_grid.py``). int8 on a device not known here
        (``fingerprint={}``: a bundle's, made before the device is seen): 16, x86's int8 grid -- a
        bundle sampled on 8 put its points between the 16-multiples an x86 int8 search spends, where
        the int8 kernels' staircase is, while 16 on a device that would take 8 only coarsens its grid.
        A known CPU without an NCHWc block (not x86): 8, nothing being known of its int8 kernels."""
        unknown = fingerprint is not None and not fingerprint
        if fingerprint is None:
            from .ort import nchwc_block

            block = nchwc_block()
        else:
            block = int(fingerprint.get("nchwc_block") or 0)
        if precision == "int8" and (block or unknown):
            return max(16, block)
        return max(8, block)

    def fingerprint(self) -> dict:
        from .ort import cpu_fingerprint

        # spinning: True when ORT's workers spin between ops during a run, False when they block;
        # absent for ORT's own default (None)
        fp = {**cpu_fingerprint(), "threads": self.threads, "opt_level": self.opt_level}
        if self.spinning is not None:
            fp["spinning"] = bool(self.spinning)
        if self.precision == "int8":
            from .quant import scheme

            fp["quantization"] = scheme()
        return fp

    def quantized(self, data: bytes, inputs: Optional[Sequence] = None) -> bytes:
        """``data`` as this backend runs it: fp32 as it is; int8 statically quantized
        (:func:`hwprune_deploy.quant.quantize_qdq`) unless it already holds QDQ nodes."""
        if self.precision != "int8":
            return data
        from .quant import is_quantized, quantize_qdq

        if is_quantized(data):
            return data
        feeds = None
        if inputs is not None:
            import onnx

            m = onnx.load_from_string(data)
            inits = {i.name for i in m.graph.initializer}
            names = [i.name for i in m.graph.input if i.name not in inits]
            feeds = [dict(zip(names, inputs))]
        return quantize_qdq(data, feeds=feeds)

    def prepare(self, data: bytes, kernel_time: bool = False,
                inputs: Optional[Sequence] = None) -> Callable[[], object]:
        import numpy as np

        from .ort import make_session
        from .runner import OrtRunnerFactory

        data = self.quantized(data, inputs)
        if self.spinning is not None and inputs is None:  # as latency tables time units and models
            return OrtRunnerFactory(self.threads, self.opt_level, spinning=bool(self.spinning),
                                    kernel_time=kernel_time)(data)
        sess = make_session(data, threads=self.threads, opt_level=self.opt_level, spinning=self.spinning,
                            spin_between_runs=self.spinning is None)
        if inputs is None:
            from .ort import random_feed

            feed = random_feed(sess)
        else:
            feed = {i.name: np.asarray(a, dtype=np.float32) for i, a in zip(sess.get_inputs(), inputs)}
        return lambda: sess.run(None, feed)

    @property
    def one_alive_at_a_time(self) -> bool:
        """With ORT's default spinning (None) a live session's workers keep spinning after its run
        and take the CPU from the one being timed: one session alive at a time."""
        return self.spinning is None
