"""int8 export for ONNX Runtime: static QDQ quantization on real calibration data, and an accuracy
check in place of the fp32 parity check.

    res = export_int8(model, x, "model-int8.onnx", data=make_data("synthetic", input_size=32))
    res.check.agreement, res.check.drop_points   # int8 vs fp32 on held-out batches

The model is exported to ONNX (fp32 graph parity-checked against PyTorch first), then quantized by
``onnxruntime.quantization.quantize_static`` (:func:`hwprune_deploy.quant.quantize_qdq`: QDQ,
per-channel int8 weights, uint8 activations, MinMax ranges) with a calibration data reader that
streams the first ``calib_batches`` batches of the data's calibration loader. An int8 model is
not expected to match fp32 to a tolerance, so its "parity" is an accuracy check (:func:`accuracy_check`):
top-1 of the fp32 and the int8 ONNX models in ONNX Runtime on held-out batches, the share of images
where the two agree on the top-1 class, and the logit error. A drop of more than ``max_drop``
points is an :class:`~hwprune.errors.ExportError` that names the layers whose quantization costs
most (:func:`layer_sensitivity`: leave-one-out, as NVIDIA's pytorch-quantization sensitivity
analysis does it -- each layer in turn kept in fp32, the rest int8, the logit error measured) and
suggests ``--keep-fp32 LAYER``, which excludes that layer's ONNX nodes from quantization
(``nodes_to_exclude``). Nothing is written unless the check passes.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Iterable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ExportError
from .jsonio import atomic_write_bytes

#: ONNX ops whose weights int8 quantizes (the layers --keep-fp32 and the sensitivity name)
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul", "ConvTranspose")
CALIB_HINT = ("pass --calib-data synthetic (the project's generated images: fine for the shipped demo model) or the "
              "data the model was trained on, e.g. --calib-data imagefolder:/data/val")


@dataclass
class Int8Check:
    """int8 vs fp32 (both ONNX, both in ONNX Runtime) on ``images`` held-out images."""

    top1_fp32: float
    top1_int8: float
    agreement: float  # share of images where int8 and fp32 pick the same class
    max_abs_logit_err: float
    rel_logit_err: float  # ||z_int8 - z_fp32|| / ||z_fp32|| over all images
    images: int
    split: str
    max_drop: float  # points
    keep_fp32: list = field(default_factory=list)
    sensitivity: list = field(default_factory=list)  # filled when the check fails

    @property
    def drop_points(self) -> float:
        return 100.0 * (self.top1_fp32 - self.top1_int8)

    @property
    def ok(self) -> bool:
        return self.drop_points <= self.max_drop + 1e-9

    def __str__(self) -> str:
        return (f"top-1 fp32 {100 * self.top1_fp32:.1f}% -> int8 {100 * self.top1_int8:.1f}% "
                f"({self.drop_points:+.1f} points drop, limit {self.max_drop:g}); top-1 agreement "
                f"{100 * self.agreement:.1f}%; logits max |err| {self.max_abs_logit_err:.3g}, relative "
                f"{self.rel_logit_err:.3g} ({self.images} images of {self.split}; {'ok' if self.ok else 'TOO LOSSY'})")

    def to_dict(self) -> dict:
        return {**asdict(self), "drop_points": self.drop_points, "ok": self.ok}


# ------------------------------------------------------------------------------ layer names

def layer_of(node_name: str) -> str:
    """The module path of a TorchScript-exported node: '/layers/layers.0/conv1/Conv' ->
    'layers.0.conv1', '/features/features.1/conv/conv.0/conv.0.0/Conv' -> 'features.1.conv.0.0'
    (a scope that extends the one before it by '.child' adds 'child'). Other names are returned as
    they are."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return node_name
    path: list[str] = []
    prev = None
    for c in parts[:-1]:
        path.append(c[len(prev) + 1:] if prev and c.startswith(prev + ".") else c)
        prev = c
    return ".".join(path)


def weighted_nodes(data: bytes) -> list[str]:
    """Names of the nodes int8 quantizes the weights of, in graph order."""
    import onnx

    return [n.name for n in onnx.load_from_string(data).graph.node if n.op_type in WEIGHTED_OPS and n.name]


def keep_fp32_nodes(data: bytes, layers: Sequence[str]) -> list[str]:
    """ONNX node names for ``--keep-fp32`` values: a module name ('layers.0.conv1', every node of
    that module) or an ONNX node name. An unknown value is a ConfigError listing real ones."""
    import onnx

    nodes = [n.name for n in onnx.load_from_string(data).graph.node if n.name]
    out: list[str] = []
    for layer in layers:
        if layer in nodes:
            out.append(layer)
            continue
        hits = [n for n in nodes if layer_of(n) == layer]
        if not hits:
            known = sorted({layer_of(n) for n in weighted_nodes(data)})
            raise ConfigError(f"--keep-fp32 {layer!r}: no layer of that name in the ONNX graph; layers: "
                              f"{', '.join(known[:12])}{' ...' if len(known) > 12 else ''}")
        out += hits
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------ data

def _images(batch) -> torch.Tensor:
    return (batch[0] if isinstance(batch, (tuple, list)) else batch).detach().float().cpu()


def calib_feeds(loader, batches: int, input_name: str = "input") -> Iterable[dict]:
    """The first ``batches`` batches of ``loader`` as ORT feeds, one at a time (a generator)."""
    for i, batch in enumerate(loader):
        if i >= batches:
            return
        yield {input_name: _images(batch).numpy()}


def _labelled(loader, batches: int):
    for i, batch in enumerate(loader):
        if i >= batches:
            return
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ConfigError("the int8 accuracy check needs labelled batches (images, labels) from the data spec")
        yield _images(batch).numpy(), np.asarray(batch[1])


def _logits(session, x: np.ndarray) -> np.ndarray:
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def accuracy_check(fp32: bytes, int8: bytes, loader, batches: int = 8, max_drop: float = 1.0, split: str = "val",
                   threads: int = 2) -> Int8Check:
    """Top-1 of the fp32 and int8 ONNX models in ONNX Runtime on ``batches`` labelled batches,
    their top-1 agreement and logit error (:class:`Int8Check`)."""
    from hwprune_deploy.ort import make_session

    sf, sq = make_session(fp32, threads=threads), make_session(int8, threads=threads)
    n = hit_f = hit_q = agree = 0
    max_abs, num, den = 0.0, 0.0, 0.0
    for x, y in _labelled(loader, batches):
        zf, zq = _logits(sf, x), _logits(sq, x)
        pf, pq = zf.argmax(1), zq.argmax(1)
        n += len(y)
        hit_f += int((pf == y).sum())
        hit_q += int((pq == y).sum())
        agree += int((pf == pq).sum())
        max_abs = max(max_abs, float(np.abs(zq - zf).max()))
        num += float(((zq - zf) ** 2).sum())
        den += float((zf ** 2).sum())
    if n == 0:
        raise ConfigError(f"the data yielded no {split} batches for the int8 accuracy check")
    return Int8Check(hit_f / n, hit_q / n, agree / n, max_abs, float(np.sqrt(num / max(den, 1e-30))), n, split,
                     float(max_drop))


def _rel_err(sf, sq, xs: list[np.ndarray]) -> float:
    num = den = 0.0
    for x in xs:
        zf, zq = _logits(sf, x), _logits(sq, x)
        num += float(((zq - zf) ** 2).sum())
        den += float((zf ** 2).sum())
    return float(np.sqrt(num / max(den, 1e-30)))


def layer_sensitivity(fp32: bytes, calib_loader, eval_loader, calib_batches: int = 8, eval_batches: int = 2,
                      keep: Sequence[str] = (), threads: int = 2, cache: Optional[str] = None) -> list[dict]:
    """Per weighted layer, how much of the int8 logit error goes away when that layer alone is kept
    in fp32 (leave-one-out over the layers not already in ``keep``; activation ranges calibrated
    once and reused from ``cache``). Sorted worst first: ``{layer, nodes, error_all_int8,
    error_without, recovered}`` with errors as relative logit error on ``eval_batches`` batches."""
    from hwprune_deploy.ort import make_session
    from hwprune_deploy.quant import quantize_qdq

    xs = [x for x, _ in _labelled(eval_loader, eval_batches)]
    sf = make_session(fp32, threads=threads)
    with tempfile.TemporaryDirectory(prefix="hwprune-q8sens-") as d:
        cache = cache or os.path.join(d, "ranges")

        def quant(exclude):
            return quantize_qdq(fp32, feeds=calib_feeds(calib_loader, calib_batches), nodes_to_exclude=exclude,
                                calibration_cache=cache)

        base = _rel_err(sf, make_session(quant(list(keep)), threads=threads), xs)
        layers: dict[str, list[str]] = {}
        for node in weighted_nodes(fp32):
            if node not in keep:
                layers.setdefault(layer_of(node), []).append(node)
        rows = []
        for layer, nodes in layers.items():
            err = _rel_err(sf, make_session(quant(list(keep) + nodes), threads=threads), xs)
            rows.append({"layer": layer, "nodes": nodes, "error_all_int8": base, "error_without": err,
                         "recovered": base - err})
    return sorted(rows, key=lambda r: -r["recovered"])


# ------------------------------------------------------------------------------ the export

@dataclass
class Int8Export:
    path: str
    check: Int8Check
    keep_fp32_nodes: list
    calib_batches: int
    ops: dict  # op counts of the written (QDQ) graph

    def to_dict(self) -> dict:
        from hwprune_deploy.quant import scheme

        return {"path": self.path, "scheme": scheme(), "check": self.check.to_dict(),
                "keep_fp32_nodes": self.keep_fp32_nodes, "calib_batches": self.calib_batches, "ops": self.ops}


def _fix_batch(data: bytes, batch: int) -> bytes:
    """The quantized model with its input/output batch axis fixed to ``batch`` (it was quantized
    from a dynamic-batch export so that whole calibration batches could be fed)."""
    import onnx

    m = onnx.load_from_string(data)
    for v in list(m.graph.input) + list(m.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_value = int(batch)
    return m.SerializeToString()


def export_int8(model: nn.Module, x: torch.Tensor, path: str, data, calib_batches: int = 8, eval_batches: int = 8,
                max_drop: float = 1.0, keep_fp32: Sequence[str] = (), opset: int = 17, dynamic_batch: bool = False,
                threads: int = 2, samples: int = 3) -> Int8Export:
    """Write ``model`` as a statically quantized QDQ ONNX file at ``path`` (see module doc).

    ``data``: a :class:`~hwprune.data.DataBundle` (``calib`` calibrates, ``val`` checks; without
    ``val`` the check runs on ``calib`` and says so). Raises ExportError, writing nothing, when the
    fp32 graph fails parity or int8 loses more than ``max_drop`` top-1 points."""
    import collections

    import onnx

    from hwprune_deploy.quant import QuantizationError, quantize_qdq

    from .onnx_export import check_onnx, verify_onnx
    from .parity import parity_inputs

    if data is None or getattr(data, "calib", None) is None:
        raise ConfigError(f"int8 export needs calibration data; {CALIB_HINT}")
    if max_drop < 0:
        raise ConfigError(f"--max-int8-drop {max_drop} must be >= 0 (top-1 points)")
    if calib_batches < 1 or eval_batches < 1:
        raise ConfigError(f"calibration batches {calib_batches} and check batches {eval_batches} must be >= 1")
    from .onnx_export import onnx_bytes

    model = model.eval()
    fp32 = onnx_bytes(model, x, opset=opset, dynamic_batch=True)
    check_onnx(fp32)
    parity = verify_onnx(model, fp32, parity_inputs(x, samples, ()), opset=opset, dynamic_batch=True)
    if not parity.ok:
        raise ExportError(f"the fp32 ONNX graph diverges from PyTorch before quantization: {parity}; nothing was "
                          f"written to {path!r}")
    nodes = keep_fp32_nodes(fp32, keep_fp32)
    try:
        q = quantize_qdq(fp32, feeds=calib_feeds(data.calib, calib_batches), nodes_to_exclude=nodes)
    except QuantizationError as e:
        raise ExportError(f"{e}; nothing was written to {path!r}") from None
    check_onnx(q)
    val = getattr(data, "val", None)
    split = "validation data" if val is not None else "calibration data (no validation split)"
    check = accuracy_check(fp32, q, val if val is not None else data.calib, eval_batches, max_drop, split, threads)
    check.keep_fp32 = list(keep_fp32)
    if not check.ok:
        sens = layer_sensitivity(fp32, data.calib, val if val is not None else data.calib, calib_batches,
                                 min(2, eval_batches), nodes, threads)
        check.sensitivity = sens[:5]
        worst = sens[0] if sens else None
        hint = ""
        if worst is not None:
            others = ", ".join(f"{r['layer']} ({r['error_without']:.3g})" for r in sens[1:3])
            hint = (f"; the layer whose quantization costs most is {worst['layer']} (logit error "
                    f"{worst['error_all_int8']:.3g} with every layer int8, {worst['error_without']:.3g} with it kept in "
                    f"fp32{'; next: ' + others if others else ''}): retry with --keep-fp32 {worst['layer']}")
        err = ExportError(f"int8 loses too much accuracy: {check}{hint}, or raise --max-int8-drop; nothing was "
                          f"written to {path!r}")
        err.check = check  # type: ignore[attr-defined]
        raise err
    if not dynamic_batch:
        q = _fix_batch(q, int(x.shape[0]))
    ops = dict(collections.Counter(n.op_type for n in onnx.load_from_string(q).graph.node))
    atomic_write_bytes(path, q)
    return Int8Export(path, check, nodes, calib_batches, ops)
