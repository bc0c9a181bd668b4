"""Static int8 quantization of ONNX models with ONNX Runtime's own tool (torch-free).

Every int8 model hwprune times or exports -- latency-table units, calibration variants, whole
models in the closed loop and in bench, the exported file -- is quantized here, one way:
``onnxruntime.quantization.quantize_static`` in QDQ form (QuantizeLinear/DequantizeLinear pairs
around each quantized op, which ORT fuses into QLinearConv, QLinearAdd, QGemm, ... when it loads
the model), weights int8 per output channel (7-bit on a CPU without VNNI: :data:`REDUCE_RANGE`),
activations uint8 (u8s8, :data:`ACTIVATIONS`), activation ranges by MinMax over a calibration
data reader.

Timing does not depend on the quantization scales, so latency tables and measurements calibrate
on a few seeded random inputs (:func:`random_feeds`); an export calibrates on real data (the
``--calib-data`` spec, fed through :class:`FeedReader`).

    q = quantize_qdq(onnx_bytes)                                  # random calibration (latency)
    q = quantize_qdq(onnx_bytes, feeds=[{"input": x} for x in batches], nodes_to_exclude=["/fc/Gemm"])
"""
from __future__ import annotations

import logging
import os
import tempfile
from typing import Iterable, Mapping, Optional, Sequence

#: what an int8 model is, as tables, reports and exports record it
SCHEME = {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ", "weights": "int8, per channel",
          "activations": "uint8, per tensor", "calibration": "MinMax"}
#: onnxruntime.quantization.QuantType of activations: uint8 (u8s8), the pair every x86 int8 kernel
#: of ORT is built on (VNNI's ``vpdpbusd``, AVX2's ``vpmaddubsw``). With int8 activations (s8s8)
#: ORT 1.32 on an AVX2 CPU left 9 of the shipped tiny_resnet's 15 convs as float Conv between
#: DequantizeLinear and QuantizeLinear; with uint8 all 15 ran as QLinearConv.
ACTIVATIONS = "QUInt8"
#: weights on 7 bits (``reduce_range``): None -- only where the CPU has no VNNI. AVX2's
#: ``vpmaddubsw`` adds two u8 x s8 products in int16, which saturates with full-range weights: the
#: shipped tiny_resnet lost 12.9 top-1 points in u8s8 on this AVX2 EPYC, 0.9 with 7-bit weights
#: (ORT's documented remedy). VNNI accumulates in int32 and needs no such cut.
REDUCE_RANGE = None


def has_vnni() -> bool:
    """Does this CPU have VNNI (AVX-512 VNNI, AVX-VNNI or AMX): int8 dot products without the
    int16 saturation of AVX2's ``vpmaddubsw``?"""
    from .ort import cpu_flags

    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def reduce_range() -> bool:
    return (not has_vnni()) if REDUCE_RANGE is None else bool(REDUCE_RANGE)


def scheme() -> dict:
    """:data:`SCHEME` with what this machine uses (7-bit weights or not)."""
    return {**SCHEME, "weights": "int8, per channel" + (", 7-bit range (no VNNI)" if reduce_range() else "")}


#: the ops a QDQ model is made of (their presence marks a model as already quantized)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
#: calibration inputs for latency only (values do not change int8 kernel time)
TIMING_CALIB_SAMPLES = 2


class QuantizationError(RuntimeError):
    """onnxruntime.quantization failed on a model (the message names the step and the fix)."""


def _reader_base():
    try:
        from onnxruntime.quantization import CalibrationDataReader
    except ImportError as e:  # pragma: no cover - onnxruntime always ships it
        raise QuantizationError(f"onnxruntime.quantization is not importable ({e}); pip install onnxruntime") from e
    return CalibrationDataReader


def make_reader(feeds: Iterable[Mapping[str, object]]):
    """A ``CalibrationDataReader`` streaming ``feeds`` (dicts input name -> float32 array) one at
    a time: a generator over a data loader is never held in memory whole."""
    base = _reader_base()

    class FeedReader(base):
        def __init__(self, it):
            self._it = iter(it)
            self.count = 0

        def get_next(self):
            import numpy as np

            feed = next(self._it, None)
            if feed is None:
                return None
            self.count += 1
            return {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in feed.items()}

    return FeedReader(feeds)


def random_feeds(data: bytes, n: int = TIMING_CALIB_SAMPLES, seed: int = 0) -> list[dict]:
    """``n`` seeded standard-normal feeds for every input of the model ``data`` (symbolic dims -> 1)."""
    import numpy as np
    import onnx

    m = onnx.load_from_string(data)
    inits = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(seed)
    shapes = {}
    for i in m.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                for d in i.type.tensor_type.shape.dim]
        shapes[i.name] = dims
    return [{k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()} for _ in range(n)]


def is_quantized(data: bytes) -> bool:
    """Does the ONNX model ``data`` already hold QDQ (or QLinear) nodes?"""
    import onnx

    if b"QuantizeLinear" not in data and b"QLinear" not in data:  # op types are stored as strings: none of them
        return False

    return any(n.op_type in QDQ_OPS or n.op_type.startswith("QLinear")
               for n in onnx.load_from_string(data).graph.node)


#: ops whose weight and bias inputs must be their own tensors for ORT to fuse their QDQ form
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def own_weights(model) -> int:
    """Give every Conv/Gemm/MatMul its own copy of a weight or bias initializer it shares with
    another node; returns how many copies were made (``model``, an ``onnx.ModelProto``, in place).

    The exporter de-duplicates equal constants: in a random-init network (or any with equal folded
    BatchNorm biases) many convs share one bias tensor. ``quantize_static`` quantizes a bias with
    the scale of one consumer (input scale x weight scale), and ORT then cannot fuse the others'
    DequantizeLinear -> Conv -> QuantizeLinear into a QLinearConv: they run as float convs with
    their weights dequantized on every run (random-init resnet18 on an AVX2 CPU: 16 of 20 convs,
    the int8 model 1.4x *slower* than fp32, and the latency table's int8 units summed to 40% of it).
    A trained network rarely shares them; an own copy costs one bias vector per conv."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    # the exporter also hands a shared constant to a second consumer through Identity(constant)
    alias = {n.output[0]: n.input[0] for n in g.node if n.op_type == "Identity" and n.input[0] in inits}
    seen: set[str] = set()
    made = 0
    for node in g.node:
        if node.op_type not in WEIGHTED_OPS:
            continue
        for k in range(1, len(node.input)):
            name = alias.get(node.input[k], node.input[k])
            if name not in inits:
                continue
            if name not in seen and node.input[k] == name:
                seen.add(name)
                continue
            copy = f"{name}__{node.name or made}_{k}"
            g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(inits[name]).copy(), copy))
            node.input[k] = copy
            made += 1
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    dead = [n for n in g.node if n.op_type == "Identity" and n.output[0] in alias and n.output[0] not in used]
    for n in dead:  # the Identity nodes nothing reads any more
        g.node.remove(n)
    return made


def quantize_qdq(data: bytes, feeds: Optional[Iterable[Mapping[str, object]]] = None,
                 nodes_to_exclude: Sequence[str] = (), per_channel: bool = True,
                 calibration_cache: Optional[str] = None) -> bytes:
    """``data`` (fp32 ONNX bytes) statically quantized as :data:`SCHEME` says; returns ONNX bytes.

    ``feeds``: calibration inputs (an iterable of {input name: array}); None: :func:`random_feeds`
    (for timing). ``nodes_to_exclude``: ONNX node names left in fp32 (``--keep-fp32``).
    ``calibration_cache``: a JSON file of activation ranges; written by the first call, read by
    later ones (which then skip calibration: the per-layer sensitivity re-quantizes many times)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    model = onnx.load_from_string(data)
    own_weights(model)
    names = {n.name for n in model.graph.node}
    missing = [n for n in nodes_to_exclude if n not in names]
    if missing:
        convs = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")][:8]
        raise QuantizationError(f"--keep-fp32 {', '.join(missing)}: no such node in the ONNX graph; node names look "
                                f"like {', '.join(convs)}")
    import itertools

    cached = calibration_cache is not None and os.path.isfile(calibration_cache)
    reader = None
    if not cached:
        it = iter(random_feeds(data) if feeds is None else feeds)
        first = next(it, None)
        if first is None:
            raise QuantizationError("the calibration data yielded no batches; int8 needs calibration inputs")
        reader = make_reader(itertools.chain([first], it))
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # quantize_static logs a pre-processing hint on every call
    try:
        with tempfile.TemporaryDirectory(prefix="hwprune-q8-") as d:
            out = os.path.join(d, "q.onnx")
            quantize_static(model, out, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                            activation_type=getattr(QuantType, ACTIVATIONS), weight_type=QuantType.QInt8,
                            reduce_range=reduce_range(),
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(nodes_to_exclude),
                            extra_options={"CalibTensorRangeSymmetric": False},
                            calibration_cache_path=calibration_cache)
            with open(out, "rb") as f:
                q = f.read()
    except QuantizationError:
        raise
    except Exception as e:
        raise QuantizationError(f"onnxruntime.quantization.quantize_static failed: {type(e).__name__}: "
                                f"{str(e)[:300]}") from e
    finally:
        logging.getLogger().setLevel(level)
    return q
