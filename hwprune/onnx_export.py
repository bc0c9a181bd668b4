"""ONNX export primitives: serialise a model to ONNX bytes, check them, verify them against
PyTorch in ONNX Runtime, and write the file atomically.

The TorchScript-based exporter is tried first (fast, mature for CNNs/ViTs); the dynamo exporter
is the fallback. Parity (ONNX Runtime vs PyTorch, tolerances relative to the reference's spread)
is :mod:`hwprune.parity`; :func:`verify_onnx` adds the probe copy for a constant reference.

A module of its own, below :mod:`hwprune.export` (the ``hwprune export`` verb, which dispatches to
int8, TensorRT and AOTInductor), so that those and the latency code use these without an import
cycle.
"""
from __future__ import annotations

import copy
import io
import os
import warnings
from typing import Sequence

import torch
from torch import nn

from .errors import ExportError, VacuousParityError
from .jsonio import atomic_write_bytes
from .parity import DEFAULT_ATOL, DEFAULT_RTOL, Parity, check_parity_many, parity_inputs, vacuous_message


def onnx_bytes(model: nn.Module, x: torch.Tensor, opset: int = 17, dynamic_batch: bool = False) -> bytes:
    """Serialize ``model`` traced at ``x`` to ONNX bytes (input 'input', output 'logits')."""
    model = model.eval()
    kw = dict(input_names=["input"], output_names=["logits"], opset_version=opset)
    if dynamic_batch:
        kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    errors = []
    for dynamo in (False, True):
        buf = io.BytesIO()
        try:
            # not under no_grad: nn.MultiheadAttention would take its fused fast path
            # (_native_multi_head_attention), which the TorchScript exporter cannot express
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if dynamo:
                    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"hwprune-export-{os.getpid()}.onnx")
                    dkw = dict(kw)
                    if dynamic_batch:
                        dkw.pop("dynamic_axes")
                        dkw["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
                    torch.onnx.export(model, (x,), path, dynamo=True, verbose=False, external_data=False, **dkw)
                    with open(path, "rb") as f:
                        data = f.read()
                    os.unlink(path)
                    return data
                torch.onnx.export(model, (x,), buf, dynamo=False, **kw)
                return buf.getvalue()
        except Exception as e:  # try the next exporter
            errors.append(f"{'dynamo' if dynamo else 'torchscript'}: {type(e).__name__}: {str(e)[:300]}")
    raise ExportError(f"ONNX export of {type(model).__name__} failed: " + " | ".join(errors))


def _probe_copy(model: nn.Module, seed: int = 0) -> tuple[nn.Module, int]:
    """Copy of ``model`` with every all-zero parameter re-randomised (zero-init heads, layer scales)."""
    probe = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(seed)
    n = 0
    with torch.no_grad():
        for p in probe.parameters():
            if p.numel() and not bool(p.any()):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
                n += 1
    return probe, n


def verify_onnx(model: nn.Module, data: bytes, inputs: Sequence[torch.Tensor], opset: int = 17,
                dynamic_batch: bool = False, threads: int = 2, atol: float = DEFAULT_ATOL,
                rtol: float = DEFAULT_RTOL) -> Parity:
    """Parity on ``inputs``; when the reference is constant, re-check the graph on a probe copy.
    Raises :class:`VacuousParityError` when the check cannot fail (no spread anywhere)."""
    parity = check_parity_many(model, data, inputs, threads=threads, atol=atol, rtol=rtol)
    if parity.degenerate and (parity.ok or parity.vacuous):
        probe, n = _probe_copy(model)
        if n:
            pdata = onnx_bytes(probe, inputs[0], opset=opset, dynamic_batch=dynamic_batch)
            pp = check_parity_many(probe, pdata, inputs, threads=threads, atol=atol, rtol=rtol)
            if pp.vacuous:
                raise VacuousParityError(vacuous_message(probe, pp) + f" (checked on a copy with {n} all-zero "
                                         "parameter(s) re-randomised)")
            pp.note = (f"reference output is constant; graph verified on a copy with {n} all-zero parameter(s) "
                       f"re-randomised: max |err| {pp.max_abs:.2e}, max rel {pp.max_rel:.2e}"
                       + (f"; {pp.note}" if pp.note else ""))
            pp.degenerate = True
            return pp
    if parity.vacuous:
        raise VacuousParityError(vacuous_message(model, parity))
    return parity


def export_onnx(model: nn.Module, x: torch.Tensor, path: str, opset: int = 17, dynamic_batch: bool = False,
                check: bool = True, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL, samples: int = 1,
                parity_batches: Sequence[int] = ()) -> Parity | None:
    """Export, run onnx.checker and the ORT parity check, then write ``path`` atomically.

    ``samples`` random inputs shaped like ``x`` are compared (``x`` first); with ``dynamic_batch``
    the batch sizes in ``parity_batches`` are checked too."""
    data = onnx_bytes(model, x, opset=opset, dynamic_batch=dynamic_batch)
    check_onnx(data)
    parity = None
    if check:
        inputs = parity_inputs(x, samples, parity_batches if dynamic_batch else ())
        parity = verify_onnx(model, data, inputs, opset=opset, dynamic_batch=dynamic_batch, atol=atol, rtol=rtol)
        if not parity.ok:
            raise ExportError(f"ONNX Runtime output diverges from PyTorch: {parity} (tolerance atol {atol:g} + "
                              f"rtol {rtol:g} x the output's std); nothing was written to {path!r}. Look for ops that "
                              "behave differently when traced (data-dependent Python control flow, custom autograd "
                              "functions) or raise --atol/--rtol if the difference is numerical noise")
    atomic_write_bytes(path, data)
    return parity


def check_onnx(data: bytes) -> None:
    import onnx

    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as e:
        raise ExportError(f"onnx.checker rejected the export: {e}") from e
