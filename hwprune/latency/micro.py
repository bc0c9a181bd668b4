"""Micro-models: one unit at one (cin, cout) point, as ONNX (for ORT / TensorRT) or nn.Module.

The ONNX graphs are written directly with ``onnx.helper`` (no torch export per point: a table
has hundreds of points). Weights are a short random pattern repeated: dense kernels do not look
at values, and a repeated pattern compresses ~100x in a bundle zip, so a bundle for ResNet-50
stays small. BatchNorm is already folded (a bias), exactly as the runtime sees the real model.
"""
from __future__ import annotations

import numpy as np
# name prefix of context nodes: in a micro-model only to put the unit in the state it runs in
# inside a network; the torch-free runner defines it and leaves such nodes out of kernel time
from hwprune_deploy.runner import CONTEXT_PREFIX, LAYOUT_KEY

from .units import UnitFamily

OPSET = 17
_PATTERN = np.random.default_rng(0).standard_normal(997).astype(np.float32) * 0.05


def pattern_array(shape, dtype=np.float32) -> np.ndarray:
    n = int(np.prod(shape)) if len(shape) else 1
    return np.resize(_PATTERN, n).reshape(shape).astype(dtype)


def _act_nodes(helper, act: str, src: str, dst: str, inits: list) -> list:
    from onnx import numpy_helper

    if act == "relu":
        return [helper.make_node("Relu", [src], [dst])]
    if act == "relu6":
        inits += [numpy_helper.from_array(np.array(0.0, np.float32), "clip_min"),
                  numpy_helper.from_array(np.array(6.0, np.float32), "clip_max")]
        return [helper.make_node("Clip", [src, "clip_min", "clip_max"], [dst])]
    if act == "hardswish":
        return [helper.make_node("HardSwish", [src], [dst])]
    if act == "sigmoid":
        return [helper.make_node("Sigmoid", [src], [dst])]
    if act == "silu":  # x * sigmoid(x), as PyTorch exports nn.SiLU (ORT fuses the pair into QuickGelu)
        return [helper.make_node("Sigmoid", [src], [dst + "_sig"]), helper.make_node("Mul", [src, dst + "_sig"], [dst])]
    if act == "hardsigmoid":  # PyTorch's relu6(x + 3) / 6
        return [helper.make_node("HardSigmoid", [src], [dst], alpha=1.0 / 6, beta=0.5)]
    return [helper.make_node("Identity", [src], [dst])]




#: channels of the graph inputs that feed the context convs: fewer than ORT's NCHWc block, so
#: ORT's blocked conv reads them as they are and no input reorder runs at the micro-model's edge
CTX_FEED = 3


def _ctx_conv(helper, numpy_helper, inits: list, src: str, name: str, channels: int, feed: int) -> list:
    """A context conv ``feed`` -> ``channels`` (1x1) named and writing ``name`` (the prefix keeps it
    out of kernel time; ORT renames converted nodes "<output>_nchwc", so the output carries it too)."""
    w = np.ones((channels, 1 if feed == channels else feed, 1, 1), np.float32) / (1 if feed == channels else feed)
    inits.append(numpy_helper.from_array(w, name + "_w"))
    return [helper.make_node("Conv", [src, name + "_w"], [name], name=name, kernel_shape=[1, 1],
                             group=channels if feed == channels else 1)]


def _input_context(helper, numpy_helper, inits: list, nodes: list, cin: int, input_context: bool,
                   output_context: bool) -> tuple[str, int]:
    """(tensor the unit reads, channels of graph input X): with ``input_context`` and cin >= 8 the
    unit reads a context conv's output (appended to ``nodes``), in the runtime's blocked layout, as
    it reads the previous conv's in a network; X then has cin channels, or 3 with an output context."""
    if not (input_context and cin >= 8):
        return "X", cin
    xch = CTX_FEED if output_context else cin
    nodes += _ctx_conv(helper, numpy_helper, inits, "X", CONTEXT_PREFIX + "input", cin, xch)
    return CONTEXT_PREFIX + "input", xch


#: activations ORT CPU fuses into a conv only when the conv runs in its blocked (NCHWc) layout. A
#: hard-swish conv whose output is the micro-model's graph output runs as a plain Conv, HardSigmoid
#: and Mul; fed to another conv, as in a network, ORT runs one blocked Conv[HardSwish]. Measured
#: (tools/act_fusion_check.py): MobileNetV3-Small's stem at 8 and 16 channels took 239-286 and
#: 311-382 us as the unit was timed before, 154-184 and 220-248 us with an output context; the
#: network's 8 -> 16 step is 65 us, the context's 66 us, the old unit's 72-96 us. ReLU stems are
#: fused either way, and the output context for every unit cost mobilenet_v2's fidelity.
FUSED_WHEN_BLOCKED = ("hardswish",)


def unit_contexts(fam: UnitFamily, context: bool) -> dict:
    """How :func:`unit_onnx` surrounds ``fam`` on a backend that times units in context (ORT CPU):
    input and residual contexts for every unit, and the output context for convs whose activation
    ORT fuses only in the blocked layout (:data:`FUSED_WHEN_BLOCKED`); nothing without ``context``."""
    return {"residual_context": context, "input_context": context,
            "output_context": bool(context and fam.kind in ("conv", "dwconv") and fam.act in FUSED_WHEN_BLOCKED)}


def unit_onnx(fam: UnitFamily, cin: int, cout: int, sparse24: bool = False, residual_context: bool = False,
              input_context: bool = False, output_context: bool = False) -> bytes:
    """ONNX bytes of ``fam`` at (cin, cout). ``sparse24``: weights carry a 2:4 pattern along the
    input-channel axis (2 of every 4 zero) so TensorRT's sparse-weights flag can pick sparse kernels.

    ``residual_context`` (ORT CPU): the residual of a fused add comes from a 1x1 depthwise conv
    (node ``ctx_residual``), not straight from a graph input. In a network the residual is
    another conv's output, already in ORT's blocked NCHWc layout, and ORT fuses the add into the
    conv; with a plain graph input it does not, and the unit would be timed as conv + separate
    NCHW add (35-45% too slow on mobilenet_v2's projection convs).

    ``input_context`` (ORT CPU): the conv's input comes from a 1x1 depthwise conv (node
    ``ctx_input``) when it has >= 8 channels (a stem reads the graph input as it is). In a network
    a conv reads what the conv before it just wrote, in NCHWc and split across the threads the
    same way; straight after the micro-model's single-threaded input reorder it ran much slower
    (tiny_resnet's 3x3 16->32 conv at 32x32: 44 us, 25 us after the context, 27 us inside the
    network; 32->16: 34, 41 and 41 us).

    ``output_context`` (ORT CPU; conv, depthwise and SE units): the unit's output feeds a 1x1
    depthwise context conv, as it feeds the next conv in a network, and the input and residual
    contexts read 3-channel graph inputs (ORT's blocked conv reads those as they are). Every
    layout reorder then left in the micro-model sits *between* its contexts -- one the unit
    itself causes, as in the network: an SE gate's multiply runs in plain NCHW, so ORT reorders
    the map out of its blocked layout and back around it -- and the model says so in its metadata
    (:data:`LAYOUT_KEY`), so kernel time counts those reorders (all but the final output's)."""
    from onnx import TensorProto, helper, numpy_helper

    b = fam.batch
    inits, nodes = [], []
    if fam.kind in ("conv", "dwconv"):
        groups = cin if fam.kind == "dwconv" else fam.groups
        if fam.kind == "dwconv":
            cout = cin
        oh, ow = fam.out_hw()
        w = pattern_array((cout, cin // groups, *fam.kernel))
        if sparse24:
            w = w.reshape(cout, -1)
            w[:, 1::4] = 0
            w[:, 2::4] = 0
            w = w.reshape(cout, cin // groups, *fam.kernel)
        inits += [numpy_helper.from_array(w, "W"), numpy_helper.from_array(pattern_array((cout,)), "B")]
        xin, xch = _input_context(helper, numpy_helper, inits, nodes, cin, input_context, output_context)
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [b, xch, fam.h, fam.w])]
        nodes.append(helper.make_node("Conv", [xin, "W", "B"], ["C"], kernel_shape=list(fam.kernel),
                                      strides=list(fam.stride), pads=[*fam.padding, *fam.padding],
                                      dilations=list(fam.dilation), group=groups))
        out_shape = [b, cout, oh, ow]
    elif fam.kind == "linear":
        w = pattern_array((cin, cout))
        if sparse24:
            w[1::4, :] = 0
            w[2::4, :] = 0
        inits += [numpy_helper.from_array(w, "W"), numpy_helper.from_array(pattern_array((cout,)), "B")]
        if fam.h == 1:
            inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [b, cin])]
            nodes.append(helper.make_node("Gemm", ["X", "W", "B"], ["C"]))
            out_shape = [b, cout]
        else:
            inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [b, fam.h, cin])]
            nodes += [helper.make_node("MatMul", ["X", "W"], ["M"]), helper.make_node("Add", ["M", "B"], ["C"])]
            out_shape = [b, fam.h, cout]
    elif fam.kind == "se":  # pool -> gate -> scale the map: the SE FCs are units of their own
        xin, xch = _input_context(helper, numpy_helper, inits, nodes, cin, input_context, output_context)
        shape = [b, cin, fam.h, fam.w]
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, [b, xch, fam.h, fam.w])]
        nodes.append(helper.make_node("GlobalAveragePool", [xin], ["P"]))
        nodes += _act_nodes(helper, fam.act, "P", "G", inits)
        nodes.append(helper.make_node("Mul", [xin, "G"], ["C"]))
        out_shape = shape
    elif fam.kind == "attn":  # heads x (softmax(q k^T / sqrt(d)) v) over h tokens, as ONNX exports SDPA
        shape = [b, cin, fam.h, fam.w]
        inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, shape)]
        inits.append(numpy_helper.from_array(np.array(fam.w ** -0.5, np.float32), "scale"))
        nodes += [helper.make_node("Transpose", ["X"], ["XT"], perm=[0, 1, 3, 2]),
                  helper.make_node("Mul", ["X", "scale"], ["Q"]),
                  helper.make_node("MatMul", ["Q", "XT"], ["S"]),
                  helper.make_node("Softmax", ["S"], ["P"], axis=-1),
                  helper.make_node("MatMul", ["P", "X"], ["C"])]
        out_shape = shape
    else:
        raise ValueError(f"unknown unit kind {fam.kind!r}")
    src = "C"
    if fam.add:
        if residual_context and fam.kind != "linear":
            rch = CTX_FEED if output_context else cout
            inputs.append(helper.make_tensor_value_info("R0", TensorProto.FLOAT, [out_shape[0], rch, *out_shape[2:]]))
            res = CONTEXT_PREFIX + "residual"
            nodes += _ctx_conv(helper, numpy_helper, inits, "R0", res, cout, rch)
        else:
            res = "R"
            inputs.append(helper.make_tensor_value_info("R", TensorProto.FLOAT, out_shape))
        nodes.append(helper.make_node("Add", ["C", res], ["S"]))
        src = "S"
    octx = output_context and fam.kind in ("conv", "dwconv", "se") and out_shape[1] >= 8
    y = "U" if octx else "Y"
    nodes += _act_nodes(helper, "none" if fam.kind == "se" else fam.act, src, y, inits)
    out = "Y"
    if octx:  # the output graph tensor carries the prefix as well (ORT names the converted conv after it)
        out = CONTEXT_PREFIX + "output"
        nodes += _ctx_conv(helper, numpy_helper, inits, y, out, out_shape[1], out_shape[1])
    graph = helper.make_graph(nodes, "unit", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwprune")
    model.ir_version = 8
    if octx:
        helper.set_model_props(model, {LAYOUT_KEY: "interior"})
    return model.SerializeToString()


def overhead_onnx() -> bytes:
    """A trivial model (Relu on 8 floats): its time is the runtime's fixed cost per ``run`` call,
    which every micro-model pays but the real network pays once (it is subtracted from units)."""
    from onnx import TensorProto, helper

    g = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"])], "overhead",
                          [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 8])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hwprune")
    m.ir_version = 8
    return m.SerializeToString()


def patternize_onnx(data: bytes) -> bytes:
    """Replace large float initializers of an ONNX model by the repeated pattern (same shapes),
    so a full model in a bundle compresses; latency does not depend on the values."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    for i, t in enumerate(m.graph.initializer):
        if t.data_type == onnx.TensorProto.FLOAT and int(np.prod(t.dims)) > 1024:
            m.graph.initializer[i].CopyFrom(numpy_helper.from_array(pattern_array(tuple(t.dims)), t.name))
    return m.SerializeToString()


def unit_module(fam: UnitFamily, cin: int, cout: int, device=None):
    """The same unit as an ``nn.Module`` (for the torch backends); returns (module, inputs).
    ``device``: where to build weights and inputs ("cuda" for GPU profiles: no host-side random
    activations of batch 32 copied over per point)."""
    import torch
    from torch import nn

    acts = {"relu": nn.ReLU(), "relu6": nn.ReLU6(), "hardswish": nn.Hardswish(), "sigmoid": nn.Sigmoid(),
            "hardsigmoid": nn.Hardsigmoid(), "silu": nn.SiLU(), "none": nn.Identity()}
    b = fam.batch
    kw = {"device": device}
    if fam.kind in ("conv", "dwconv"):
        groups = cin if fam.kind == "dwconv" else fam.groups
        if fam.kind == "dwconv":
            cout = cin
        op = nn.Conv2d(cin, cout, fam.kernel, fam.stride, fam.padding, fam.dilation, groups=groups, **kw)
        x = torch.randn(b, cin, fam.h, fam.w, **kw)
        oh, ow = fam.out_hw()
        r = torch.randn(b, cout, oh, ow, **kw)
    elif fam.kind == "attn":
        x = torch.randn(b, cin, fam.h, fam.w, **kw)

        class Products(nn.Module):
            def forward(self, x, r=None):
                return torch.nn.functional.scaled_dot_product_attention(x, x, x)

        return Products().eval(), (x,)
    elif fam.kind == "se":
        x = torch.randn(b, cin, fam.h, fam.w, **kw)
        gate = acts[fam.act]

        class Gate(nn.Module):
            def forward(self, x, r=None):
                return x * gate(x.mean((2, 3), keepdim=True))

        return Gate().eval(), (x,)
    else:
        op = nn.Linear(cin, cout, **kw)
        x = torch.randn(b, cin, **kw) if fam.h == 1 else torch.randn(b, fam.h, cin, **kw)
        r = torch.randn(b, cout, **kw) if fam.h == 1 else torch.randn(b, fam.h, cout, **kw)
    act = acts[fam.act]

    class Unit(nn.Module):
        def __init__(self):
            super().__init__()
            self.op, self.act = op, act

        def forward(self, x, r=None):
            y = self.op(x)
            return self.act(y + r if r is not None else y)

    return Unit().eval(), ((x, r) if fam.add else (x,))
