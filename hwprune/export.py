"""``hwprune export``: ONNX (fp32, or int8 by :mod:`hwprune.quantize`), TensorRT engines, and
AOTInductor packages (:mod:`hwprune.aoti`), each checked against PyTorch before anything is written.

The ONNX primitives (serialise, check, verify in ONNX Runtime, write atomically) live in
:mod:`hwprune.onnx_export` and are re-exported here.

A ``--sparse`` TensorRT build uses the model's 2:4 masks (:mod:`hwprune.sparsity`, NVIDIA ASP;
Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"), or one-shot magnitude masks on a
copy when it has none; an ONNX export of a model with masks reports how many weights keep 2:4.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch
from torch import nn

from .errors import BackendUnavailableError, ConfigError, ExportError
from .jsonio import atomic_write_bytes
from .onnx_export import check_onnx, export_onnx, onnx_bytes, verify_onnx  # noqa: F401 (re-exported)
from .parity import DEFAULT_ATOL, DEFAULT_RTOL, Parity, check_parity_many, parity_inputs  # noqa: F401 (re-exported)

FORMATS = ("onnx", "tensorrt", "aoti")
TRT_INSTALL_HINT = ("install it with `pip install 'hwprune[tensorrt]'` (TensorRT >= 10 and pycuda) on a machine "
                    "with an NVIDIA GPU and CUDA driver")


# --------------------------------------------------------------------------------------- 2:4 masks

def _sparse_model(model: nn.Module) -> tuple[nn.Module, int, str]:
    """(model with 2:4 weights, sparse weights, how): the model's own masks (``hwprune prune
    --sparsity 2:4``, fine-tuned with them fixed) when it carries them, else one-shot magnitude
    masks on a copy (:func:`hwprune.sparsity.sparsify`; accuracy not recovered)."""
    from .sparsity import masks_of, sparsify

    masks = masks_of(model)
    if masks is not None:
        masks.apply_(model)
        return model, len(masks.masks), "the checkpoint's 2:4 masks"
    model = copy.deepcopy(model).eval()
    return model, len(sparsify(model).masks), ("one-shot 2:4 magnitude masks without fine-tuning (accuracy not "
                                               "recovered: hwprune prune --sparsity 2:4 --finetune-epochs E first)")


def _onnx_sparsity(model: nn.Module, path: str) -> dict:
    """For a model with 2:4 masks: how many of the exported ONNX's weights keep 2:4 along their input dim."""
    from .sparsity import masks_of, onnx_nm_weights

    masks = masks_of(model)
    if masks is None:
        return {}
    found = onnx_nm_weights(path, masks.n, masks.m)
    return {"sparsity": {"pattern": masks.pattern, "sparse_layers": len(masks.masks),
                         "onnx_weights_nm": sum(found.values()), "onnx_weights": len(found)}}


# ---------------------------------------------------------------------------- config + one verb

@dataclass
class ExportConfig:
    """How to export. ``batch`` is the traced batch; with ``dynamic_batch`` parity is also
    checked at ``parity_batches``. TensorRT options need ``format='tensorrt'``."""

    format: str = "onnx"
    opset: int = 17
    dynamic_batch: bool = False
    batch: int = 1
    input_size: Optional[int] = None
    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    samples: int = 3
    parity_batches: tuple[int, ...] = (1, 4)
    fp16: bool = False
    int8: bool = False
    calib_data: Optional[str] = None
    calib_batches: int = 8
    sparse: bool = False
    workspace_mb: int = 1024
    max_batch: int = 32
    seed: int = 0
    precision: str = "fp32"  # onnx: fp32 | int8 (static QDQ quantization, hwprune.quantize)
    max_int8_drop: float = 1.0  # int8: top-1 points int8 may lose against fp32 before it is an error
    keep_fp32: tuple[str, ...] = ()  # int8: layers (module or ONNX node names) left unquantized
    int8_eval_batches: int = 8  # int8: held-out batches of the accuracy check
    device: Optional[str] = None  # aoti: cpu | cuda (None: cuda when visible, else cpu)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ConfigError(f"export format {self.format!r} is not one of {', '.join(FORMATS)}")
        if not 7 <= self.opset <= 21:
            raise ConfigError(f"opset {self.opset} is out of range; use 13..21 (17 is the default)")
        if self.batch < 1 or self.samples < 1:
            raise ConfigError(f"batch {self.batch} and samples {self.samples} must be >= 1")
        if self.atol < 0 or self.rtol < 0:
            raise ConfigError(f"tolerances must be >= 0 (got atol {self.atol}, rtol {self.rtol})")
        if self.format == "aoti":
            from .aoti import check_device, default_device

            if self.int8 or self.sparse or self.fp16 or self.precision == "int8":
                raise ConfigError("--int8/--sparse/--fp16/--precision int8 do not apply to --format aoti; an AOTInductor "
                                  "package is fp32 (fp16/bf16 on a GPU: --precision fp16)")
            self.device = self.device or default_device()
            check_device(self.device, self.precision)
        elif self.device is not None:
            raise ConfigError("--device applies to --format aoti (an AOTInductor package for cpu or cuda)")
        if self.precision not in ("fp32", "int8") and self.format != "aoti":
            raise ConfigError(f"export precision {self.precision!r} is not one of fp32, int8")
        if self.precision == "int8" and self.format == "tensorrt":
            self.int8 = True  # TensorRT's own int8 calibration (--int8)
        if self.format == "onnx" and self.precision == "int8":
            from .quantize import CALIB_HINT

            if not self.calib_data:
                raise ConfigError(f"--precision int8 needs calibration data: {CALIB_HINT}")
            if self.max_int8_drop < 0:
                raise ConfigError(f"--max-int8-drop {self.max_int8_drop} must be >= 0 (top-1 points)")
        elif self.keep_fp32:
            raise ConfigError("--keep-fp32 applies to --format onnx --precision int8")
        self.keep_fp32 = tuple(self.keep_fp32)
        if self.format == "onnx" and (self.fp16 or self.int8 or self.sparse):
            raise ConfigError("--fp16/--int8/--sparse apply to TensorRT engines; add --format tensorrt (an int8 ONNX "
                              "file for ONNX Runtime: --precision int8 --calib-data SPEC)")
        if self.int8 and not self.calib_data:
            raise ConfigError("--int8 needs --calib-data (synthetic, imagefolder:PATH, ...) for calibration")
        self.parity_batches = tuple(int(b) for b in self.parity_batches)


@dataclass
class ExportResult:
    path: str
    format: str
    parity: Optional[Parity]
    onnx_path: Optional[str] = None
    sparse_layers: int = 0
    info: dict = field(default_factory=dict)


def _trt():
    """The device-side TensorRT module, or a BackendUnavailableError saying how to get it."""
    try:
        from hwprune_deploy import trt
    except ImportError as e:  # pragma: no cover - deploy/trt.py ships with hwprune
        raise BackendUnavailableError(f"TensorRT support is missing ({e}); {TRT_INSTALL_HINT}") from e
    err = trt.unavailable_reason()
    if err:
        raise BackendUnavailableError(f"TensorRT engine build needs TensorRT and a CUDA GPU: {err}; {TRT_INSTALL_HINT}")
    return trt


def export(model: nn.Module, path: str, config: ExportConfig, input_size: int = 224, calib=None) -> ExportResult:
    """Export ``model`` to ``path`` per ``config``; nothing is written unless every check passes.

    ONNX int8 (``precision='int8'``): ``calib`` is the DataBundle of ``--calib-data`` (its calib
    loader calibrates, its val loader checks top-1 against fp32; :func:`hwprune.quantize.export_int8`).

    TensorRT: the ONNX is exported (dynamic batch), parity-checked in ORT, then built into a
    serialized engine by :mod:`hwprune_deploy.trt` (fp16/int8/sparse flags); with ``sparse`` the
    model's 2:4 masks are used (one-shot magnitude masks on a copy when it has none). The ONNX is kept next to the engine.
    """
    size = config.input_size or input_size
    x = torch.randn(config.batch, 3, size, size, generator=torch.Generator().manual_seed(config.seed))
    if config.format == "onnx" and config.precision == "int8":
        from .quantize import export_int8

        q = export_int8(model, x, path, calib, calib_batches=config.calib_batches,
                        eval_batches=config.int8_eval_batches, max_drop=config.max_int8_drop,
                        keep_fp32=config.keep_fp32, opset=config.opset, dynamic_batch=config.dynamic_batch,
                        samples=config.samples)
        return ExportResult(path=path, format="onnx", parity=None, info={"int8": q.to_dict()})
    if config.format == "aoti":
        from .aoti import export_aoti

        r = export_aoti(model, x, path, device=config.device, precision=config.precision, samples=config.samples,
                        atol=config.atol, rtol=None if config.rtol == DEFAULT_RTOL else config.rtol)
        return ExportResult(path=path, format="aoti", parity=r.parity, info={"aoti": r.to_dict()})
    if config.format == "onnx":
        parity = export_onnx(model, x, path, opset=config.opset, dynamic_batch=config.dynamic_batch, atol=config.atol,
                             rtol=config.rtol, samples=config.samples, parity_batches=config.parity_batches)
        return ExportResult(path=path, format="onnx", parity=parity, info=_onnx_sparsity(model, path))
    trt = _trt()  # fail before any work when TensorRT is absent
    sparse_layers, sparse_how = 0, None
    if config.sparse:
        model, sparse_layers, sparse_how = _sparse_model(model)
    onnx_path = os.path.splitext(path)[0] + ".onnx"
    data = onnx_bytes(model, x, opset=config.opset, dynamic_batch=True)
    check_onnx(data)
    parity = verify_onnx(model, data, parity_inputs(x, config.samples, config.parity_batches), opset=config.opset,
                         dynamic_batch=True, atol=config.atol, rtol=config.rtol)
    if not parity.ok:
        raise ExportError(f"ONNX Runtime output diverges from PyTorch: {parity}; no engine was built")
    calib_arrays = None
    if config.int8:
        calib_arrays = [b.numpy().astype(np.float32) for b in _calib_batches(calib, config)]
    try:
        engine = trt.build_engine(data, input_shape=(3, size, size), min_batch=1, opt_batch=config.batch,
                                  max_batch=max(config.max_batch, config.batch), fp16=config.fp16, int8=config.int8,
                                  sparse=config.sparse, calib_batches=calib_arrays, workspace_mb=config.workspace_mb)
    except trt.EngineBuildError as e:
        raise ExportError(f"TensorRT engine build failed: {e}; nothing was written to {path!r}") from e
    atomic_write_bytes(path, engine)
    atomic_write_bytes(onnx_path, data)
    return ExportResult(path=path, format="tensorrt", parity=parity, onnx_path=onnx_path, sparse_layers=sparse_layers,
                        info={"fp16": config.fp16, "int8": config.int8, "sparse": config.sparse,
                              "sparse_masks": sparse_how})


def _calib_batches(calib, config: ExportConfig):
    if calib is None:
        raise ConfigError("--int8 needs calibration data: pass --calib-data")
    out = []
    for batch in calib:
        xb = batch[0] if isinstance(batch, (tuple, list)) else batch
        out.append(xb.detach().float().cpu())
        if len(out) >= config.calib_batches:
            break
    if not out:
        raise ConfigError(f"calibration data {config.calib_data!r} yielded no batches")
    return out
