"""Latency units: what the backend executes after fusion, keyed by a shape signature.

A unit is one GEMM-like layer together with the cheap ops a deployment runtime fuses into it
(ONNX Runtime folds BatchNorm into the conv weights and fuses the activation, and on x86 the
residual add as well): ``conv+bn+act``, ``conv+bn+add+act``, depthwise conv, linear. Its cost
depends on the shape only, so entries are keyed by a signature -- op kind, kernel, stride,
groups, input H x W, batch, dtype, fused ops -- plus the (cin, cout) point. Every model that
shares a shape shares the entry (NetAdapt, Yang et al. ECCV 2018, builds its look-up tables
the same way; HALP, Shen et al. NeurIPS 2022, keys its table by layer shape and channel count).

Units are found with forward hooks (real input shapes at the chosen input size and batch); the
fused activation/add of each conv is read from the model's own ONNX export, so the unit is what
the runtime will really run.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch
from torch import nn

ACTS = ("none", "relu", "relu6", "hardswish", "sigmoid")


@dataclass(frozen=True)
class UnitFamily:
    """A unit shape with (cin, cout) left free: all models sharing it share measurements.

    ``tied``: cin and cout move together (depthwise conv), so only the diagonal is measured.
    ``h, w``: spatial size of the *input* (tokens x 1 for linear layers).
    """

    kind: str  # conv | dwconv | linear
    h: int
    w: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1  # for grouped (non-depthwise) convs; depthwise uses groups=cin
    act: str = "none"
    add: bool = False
    tied: bool = False
    batch: int = 1
    dtype: str = "fp32"

    @property
    def key(self) -> str:
        """Readable, unique signature (the JSON key of this family)."""
        k = "x".join(map(str, self.kernel))
        s = "x".join(map(str, self.stride))
        p = "x".join(map(str, self.padding))
        d = "" if self.dilation == (1, 1) else f"-d{'x'.join(map(str, self.dilation))}"
        g = f"-g{self.groups}" if self.groups > 1 else ""
        fused = ("+add" if self.add else "") + (f"+{self.act}" if self.act != "none" else "")
        t = "-tied" if self.tied and self.kind != "dwconv" else ""
        return (f"{self.kind}{fused}-k{k}-s{s}-p{p}{d}{g}-in{self.h}x{self.w}-b{self.batch}-{self.dtype}{t}")

    def out_hw(self) -> tuple[int, int]:
        if self.kind == "linear":
            return self.h, self.w
        oh = (self.h + 2 * self.padding[0] - self.dilation[0] * (self.kernel[0] - 1) - 1) // self.stride[0] + 1
        ow = (self.w + 2 * self.padding[1] - self.dilation[1] * (self.kernel[1] - 1) - 1) // self.stride[1] + 1
        return oh, ow

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("kernel", "stride", "padding", "dilation"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UnitFamily":
        d = dict(d)
        for k in ("kernel", "stride", "padding", "dilation"):
            d[k] = tuple(d[k])
        return cls(**d)


@dataclass
class UnitUse:
    """One layer of a model as a unit: its family, full widths and the groups that set them."""

    layer: str
    family: UnitFamily
    cin: int
    cout: int
    gin: Optional[str]  # channel group controlling cin (None: fixed)
    gout: Optional[str]

    def widths(self, widths: dict[str, int]) -> tuple[int, int]:
        """(cin, cout) of this unit under a width assignment (missing groups = full width)."""
        cin = widths.get(self.gin, self.cin) if self.gin else self.cin
        cout = widths.get(self.gout, self.cout) if self.gout else self.cout
        if self.family.tied:
            cin = cout = (cout if self.gout else cin)
        return int(cin), int(cout)

    def to_dict(self) -> dict:
        return {"layer": self.layer, "family": self.family.key, "cin": self.cin, "cout": self.cout,
                "gin": self.gin, "gout": self.gout}


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _onnx_fusions(model: nn.Module, x: torch.Tensor, convs: list[str]) -> dict[str, tuple[str, bool]]:
    """Per conv layer name: (activation, residual add) as fused by the runtime, read from the
    model's ONNX export. Conv nodes are matched to modules in execution order and checked by
    weight shape; if anything disagrees, no fusion is assumed (conv-only units)."""
    import onnx

    from ..export import onnx_bytes

    try:
        g = onnx.load_from_string(onnx_bytes(model, x)).graph
    except Exception:
        return {}
    inits = {i.name: tuple(i.dims) for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    conv_nodes = [n for n in g.node if n.op_type == "Conv"]
    if len(conv_nodes) != len(convs):
        return {}
    mods = dict(model.named_modules())
    out = {}

    def single(name):
        c = consumers.get(name, [])
        return c[0] if len(c) == 1 else None

    producer = {o: n for n in g.node for o in n.output}

    def conv_chain(name) -> bool:
        """Could ORT fuse an Add into the conv producing ``name``: a Conv output (possibly through
        a BatchNormalization) used by nothing else?"""
        if len(consumers.get(name, [])) != 1:
            return False
        n = producer.get(name)
        if n is not None and n.op_type == "BatchNormalization":
            if len(consumers.get(n.input[0], [])) != 1:
                return False
            n = producer.get(n.input[0])
        return n is not None and n.op_type == "Conv"

    for node, layer in zip(conv_nodes, convs):
        wshape = inits.get(node.input[1])
        if wshape is not None and tuple(wshape) != tuple(mods[layer].weight.shape):
            return {}
        act, add = "none", False
        src = node.output[0]
        nxt = single(src)
        if nxt is not None and nxt.op_type == "BatchNormalization":
            src = nxt.output[0]
            nxt = single(src)
        if nxt is not None and nxt.op_type == "Add":
            other = [i for i in nxt.input if i != src]
            if list(nxt.input).index(src) == 1 and other and conv_chain(other[0]):
                # both Add inputs are convs that could take the add (a ResNet block with a
                # downsample): ORT fuses the add and activation into the conv feeding input 0
                # only (checked on resnet18/50 with ORT 1.31); this one runs bare
                out[layer] = ("none", False)
                continue
            add = True
            nxt = single(nxt.output[0])
        if nxt is not None:
            act = {"Relu": "relu", "Clip": "relu6", "HardSwish": "hardswish", "Sigmoid": "sigmoid"}.get(nxt.op_type, "none")
        out[layer] = (act, add)
    return out


def extract_units(graph, dtype: str = "fp32", fuse: bool = True) -> list[UnitUse]:
    """The units of ``graph.model`` at ``graph.example_input``: every Conv2d and Linear that runs,
    with real input shapes and the channel groups controlling its widths."""
    model, x = graph.model, graph.example_input
    calls: list[tuple[str, nn.Module, tuple]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []
    for m in model.modules():
        if type(m) in (nn.Conv2d, nn.Linear):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out: calls.append((names[mod], mod, tuple(inp[0].shape)))))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    seen, ordered = set(), []
    for name, mod, shape in calls:
        if name not in seen:  # a module called twice is one unit per call in the runtime; keep first shape
            seen.add(name)
            ordered.append((name, mod, shape))
    convs = [n for n, m, _ in ordered if isinstance(m, nn.Conv2d)]
    fusions = _onnx_fusions(model, x, convs) if fuse else {}
    lg = graph.layer_groups()
    batch = int(x.shape[0])
    units = []
    for name, mod, shape in ordered:
        gin, gout = lg.get(name, (None, None))
        gin_n = gin.name if gin is not None and gin.prunable else None
        gout_n = gout.name if gout is not None and gout.prunable else None
        if isinstance(mod, nn.Conv2d):
            act, add = fusions.get(name, ("none", False))
            dw = mod.groups > 1 and mod.groups == mod.in_channels
            if dw:
                fam = UnitFamily("dwconv", int(shape[2]), int(shape[3]), _pair(mod.kernel_size), _pair(mod.stride),
                                 _pair(mod.padding), _pair(mod.dilation), 1, act, add, True, batch, dtype)
                ctl = gout_n or gin_n
                units.append(UnitUse(name, fam, mod.in_channels, mod.out_channels, ctl, ctl))
                continue
            tied = gin_n is not None and gin_n == gout_n
            fam = UnitFamily("conv", int(shape[2]), int(shape[3]), _pair(mod.kernel_size), _pair(mod.stride),
                             _pair(mod.padding), _pair(mod.dilation), int(mod.groups), act, add, tied, batch, dtype)
            units.append(UnitUse(name, fam, mod.in_channels, mod.out_channels, gin_n, gout_n))
        else:
            tokens = 1
            for d in shape[1:-1]:
                tokens *= int(d)
            tied = gin_n is not None and gin_n == gout_n
            fam = UnitFamily("linear", tokens, 1, tied=tied, batch=batch, dtype=dtype)
            units.append(UnitUse(name, fam, mod.in_features, mod.out_features, gin_n, gout_n))
    return units


def model_key(graph) -> str:
    """A structural fingerprint of the (unpruned) model + input shape: which table record holds
    its remainder. Two instances of the same architecture at the same input share it."""
    desc = [list(graph.example_input.shape)]
    for name, m in graph.model.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor):
            desc.append([name, type(m).__name__, list(w.shape)])
    return hashlib.sha1(json.dumps(desc).encode()).hexdigest()[:16]


def with_dtype(family: UnitFamily, dtype: str) -> UnitFamily:
    return replace(family, dtype=dtype)
