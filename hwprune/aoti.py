"""A compiled PyTorch artefact: ``torch.export`` + AOTInductor, packaged as one ``.pt2`` file.

The GPU deployment path that needs no TensorRT: ``torch.export.export`` captures the (pruned)
network as a graph, AOTInductor compiles it ahead of time into a shared library with the weights
folded in (BatchNorm and all), and ``aoti_compile_and_package`` writes both into one ``.pt2``
package that ``torch._inductor.aoti_load_package`` runs without the Python model code. On a CUDA
device the kernels are Triton/CUDA; on the CPU, C++ (so the whole path is tested on CI machines
without a GPU; a GPU session builds the same package with ``device="cuda"``).

A package is written only after it has been loaded back and compared with eager PyTorch on
several random inputs (the spread-scaled tolerance of :mod:`hwprune.parity`: ``max|err| <= atol +
rtol x std(ref)`` per input; an output with negligible spread is refused as vacuous). fp16/bf16
packages are compared against the fp32 eager model with ``FP16_RTOL``.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ExportError
from .parity import DEFAULT_ATOL, DEFAULT_RTOL, VACUOUS_FACTOR, Parity, _max_err, _spread

DEVICES = ("cpu", "cuda")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
FP16_RTOL = 2e-2  # half precision against the fp32 eager model: ~3 significant digits per op, compounded


@dataclass
class AotiResult:
    path: str
    device: str
    precision: str
    parity: Parity
    compile_s: float
    size_bytes: int

    def to_dict(self) -> dict:
        return {"path": self.path, "device": self.device, "precision": self.precision, "parity": self.parity.to_dict(),
                "compile_s": self.compile_s, "size_bytes": self.size_bytes}


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str, precision: str = "fp32") -> None:
    if device not in DEVICES:
        raise ConfigError(f"AOTInductor device {device!r} is not one of {', '.join(DEVICES)}")
    if precision not in DTYPES:
        raise ConfigError(f"AOTInductor precision {precision!r} is not one of {', '.join(DTYPES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is visible here (torch "
                          f"{torch.__version__}, cuda {torch.version.cuda}); build a CPU package with --device cpu, "
                          "or run this on the GPU machine the package is for")
    if device == "cpu" and precision != "fp32":
        raise ConfigError(f"--precision {precision} packages are for GPUs; a CPU package is fp32")


def load_aoti(path: str) -> Callable:
    """The compiled network of a ``.pt2`` package, callable on tensors of the device it was built for."""
    if not os.path.isfile(path):
        raise ConfigError(f"{path!r} does not exist; build it with `hwprune export --format aoti`")
    try:
        return torch._inductor.aoti_load_package(path)
    except Exception as e:
        raise ConfigError(f"{path!r} is not a loadable AOTInductor package ({type(e).__name__}: {e}); "
                          "rebuild it with `hwprune export --format aoti` on this torch version") from e


def _compare(ref_model: nn.Module, run: Callable, inputs: Sequence[torch.Tensor], device: str, dtype,
             atol: float, rtol: float) -> Parity:
    worst_abs = worst_rel = worst_es = 0.0
    spread = tol = float("inf")
    ok = True
    for x in inputs:
        with torch.no_grad():
            ref = ref_model(x).float().numpy().astype(np.float64)
            got = run(x.to(device, dtype))
        got = (got[0] if isinstance(got, (tuple, list)) else got).float().cpu().numpy()
        s = _spread(ref)
        err = _max_err(got, ref)
        t = atol + rtol * s
        ok = ok and err <= t
        worst_abs = max(worst_abs, err)
        worst_rel = max(worst_rel, err / max(float(np.abs(ref).max()), 1e-30))
        worst_es = max(worst_es, err / s if s else float("inf"))
        spread, tol = min(spread, s), min(tol, t)
    min_spread = VACUOUS_FACTOR * atol
    vacuous = spread <= min_spread
    return Parity(max_abs=worst_abs, max_rel=worst_rel, ok=ok and not vacuous, inputs=len(inputs), spread=spread,
                  tolerance=tol, max_err_spread=worst_es, min_spread=min_spread, atol=atol, rtol=rtol,
                  basis="none" if vacuous else "output", vacuous=vacuous,
                  note=f"AOTInductor package on {device} vs eager PyTorch fp32")


def export_aoti(model: nn.Module, x: torch.Tensor, path: str, device: str | None = None, precision: str = "fp32",
                samples: int = 3, atol: float = DEFAULT_ATOL, rtol: float | None = None) -> AotiResult:
    """Compile ``model`` at ``x``'s shape into an AOTInductor package at ``path`` (``.pt2``), on
    ``device`` (default: cuda when visible, else cpu) in ``precision``; load it back, check parity
    against eager fp32 PyTorch on ``samples`` random inputs, then move it into place. On any failure
    nothing is left at ``path``."""
    device = device or default_device()
    check_device(device, precision)
    if not path.endswith(".pt2"):
        raise ConfigError(f"an AOTInductor package is a .pt2 file; got --out {path!r}")
    rtol = rtol if rtol is not None else (DEFAULT_RTOL if precision == "fp32" else FP16_RTOL)
    dtype = DTYPES[precision]
    ref = copy.deepcopy(model).eval().float().cpu()
    compiled = copy.deepcopy(model).eval().to(device, dtype)
    example = x.to(device, dtype)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}.pt2"
    t0 = time.perf_counter()
    try:
        try:
            with torch.no_grad():
                ep = torch.export.export(compiled, (example,))
                meta = {"hwprune_input_shape": ",".join(map(str, x.shape)), "hwprune_precision": precision,
                        "hwprune_device": device}
                torch._inductor.aoti_compile_and_package(ep, package_path=tmp,
                                                         inductor_configs={"aot_inductor.metadata": meta})
        except Exception as e:
            raise ExportError(f"AOTInductor could not compile {type(model).__name__} for {device} "
                              f"({type(e).__name__}: {str(e)[:400]}); nothing was written to {path!r}") from e
        compile_s = time.perf_counter() - t0
        run = torch._inductor.aoti_load_package(tmp)
        gen = torch.Generator().manual_seed(0)
        inputs = [x.float().cpu()] + [torch.randn(x.shape, generator=gen) for _ in range(max(0, samples - 1))]
        parity = _compare(ref, run, inputs, device, dtype, atol, rtol)
        if not parity.ok:
            why = "its output has no spread to compare" if parity.vacuous else "it diverges from eager PyTorch"
            raise ExportError(f"the AOTInductor package failed its parity check ({why}): {parity}; nothing was "
                              f"written to {path!r}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return AotiResult(path=path, device=device, precision=precision, parity=parity, compile_s=compile_s,
                      size_bytes=os.path.getsize(path))


def package_info(run) -> dict:
    """(input shape, precision, device) a package was compiled for, from its metadata."""
    meta = run.get_metadata() if hasattr(run, "get_metadata") else {}
    shape = meta.get("hwprune_input_shape")
    if not shape:
        raise ConfigError("this .pt2 package was not written by hwprune (no input shape in its metadata); "
                          "rebuild it with `hwprune export --format aoti`")
    return {"input_shape": [int(v) for v in shape.split(",")], "precision": meta.get("hwprune_precision", "fp32"),
            "device": meta.get("hwprune_device", meta.get("AOTI_DEVICE_KEY", "cpu"))}


def package_runner(path: str) -> tuple[Callable[[], object], dict]:
    """A zero-argument callable running one inference of the package on a fixed random input of
    the shape it was compiled for, and the package's info (:func:`package_info`)."""
    run = load_aoti(path)
    info = package_info(run)
    if info["device"] == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{path!r} was compiled for a CUDA GPU and none is visible here")
    xs = torch.randn(*info["input_shape"], generator=torch.Generator().manual_seed(0)).to(info["device"],
                                                                                       DTYPES[info["precision"]])

    def once():
        with torch.inference_mode():
            return run(xs)

    return once, info
