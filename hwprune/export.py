"""ONNX export with a parity check against PyTorch.

The TorchScript-based exporter is tried first (fast, mature for CNNs/ViTs); the dynamo exporter
is the fallback. Files are written atomically: a failed export or a parity miss leaves nothing.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .errors import ExportError
from .jsonio import atomic_write_bytes


@dataclass
class Parity:
    max_abs: float
    max_rel: float
    ok: bool

    def __str__(self) -> str:
        return f"max |err| {self.max_abs:.2e}, max rel err {self.max_rel:.2e} ({'ok' if self.ok else 'MISMATCH'})"


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


def check_parity(model: nn.Module, data: bytes, x: torch.Tensor, threads: int = 2,
                 atol: float = 1e-3, rtol: float = 1e-3) -> Parity:
    """Run the ONNX bytes in ONNX Runtime and compare with PyTorch on ``x``."""
    from hwprune_deploy.ort import make_session

    sess = make_session(data, threads=threads)
    with torch.no_grad():
        ref = model.eval()(x).float().numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy().astype(np.float32)})[0]
    if got.shape != ref.shape:
        raise ExportError(f"ONNX output shape {got.shape} differs from PyTorch {ref.shape}")
    diff = np.abs(got - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref).max()) or 1.0
    return Parity(max_abs, max_abs / scale, bool(max_abs <= atol + rtol * scale))


def export_onnx(model: nn.Module, x: torch.Tensor, path: str, opset: int = 17, dynamic_batch: bool = False,
                check: bool = True, atol: float = 1e-3, rtol: float = 1e-3) -> Parity | None:
    """Export, run onnx.checker and the ORT parity check, then write ``path`` atomically."""
    import onnx

    data = onnx_bytes(model, x, opset=opset, dynamic_batch=dynamic_batch)
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except Exception as e:
        raise ExportError(f"onnx.checker rejected the export: {e}") from e
    parity = None
    if check:
        parity = check_parity(model, data, x, atol=atol, rtol=rtol)
        if not parity.ok:
            raise ExportError(f"ONNX Runtime output diverges from PyTorch: {parity}; nothing was written to {path!r}")
    atomic_write_bytes(path, data)
    return parity
