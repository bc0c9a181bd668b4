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

from ..graph import kept_channels

ACTS = ("none", "relu", "relu6", "hardswish", "sigmoid", "hardsigmoid", "silu")


@dataclass(frozen=True)
class UnitFamily:
    """A unit shape with (cin, cout) left free: all models sharing it share measurements.

    ``tied``: cin and cout move together (depthwise conv), so only the diagonal is measured.
    ``h, w``: spatial size of the *input* (tokens x 1 for linear layers).
    """

    kind: str  # conv | dwconv | linear | attn | se
    # attn: the attention products (softmax(q k^T / sqrt(d)) v) of ``h`` tokens, heads of ``w``
    # channels; cin = cout = the head count (tied)
    # se: what a squeeze-and-excitation gate runs besides its two FCs (those are conv/linear units
    # of their own): the global pooling of a ``h x w`` map, the gate (``act``: sigmoid or
    # hardsigmoid) and the channel-wise multiply; cin = cout = the map's channels (tied)
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
        if self.kind in ("linear", "attn", "se"):
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
    """One layer of a model as a unit: its family, full widths and the groups that set them.

    ``ins``/``outs``: (group, group's full width, multiplicity) per group feeding that side (see
    :class:`hwprune.graph.LayerIO`): cin = full cin - sum(mult * (full width - kept width)). Several
    ``ins`` = a concatenation of groups (Inception, DenseNet, SqueezeNet); a multiplicity above 1 =
    a Linear reading a flattened map (VGG, AlexNet), q/k/v outputs, patch merging. ``gin``/``gout``
    name the first group of each side (for display; the only source in tables written before
    ``ins``/``outs`` existed, where they set the width directly)."""

    layer: str
    family: UnitFamily
    cin: int
    cout: int
    gin: Optional[str]  # (first) channel group controlling cin (None: fixed)
    gout: Optional[str]
    ins: tuple = ()
    outs: tuple = ()

    def widths(self, widths: dict[str, int]) -> tuple[int, int]:
        """(cin, cout) of this unit under a width assignment (missing groups = full width)."""
        if self.ins or self.outs:
            cin, cout = kept_channels(self.cin, self.ins, widths), kept_channels(self.cout, self.outs, widths)
        else:  # a table written before ins/outs: the group's width is the unit's
            cin = widths.get(self.gin, self.cin) if self.gin else self.cin
            cout = widths.get(self.gout, self.cout) if self.gout else self.cout
        if self.family.tied:
            cin = cout = (cout if self.gout else cin)
        return int(cin), int(cout)

    def groups(self) -> set:
        """Names of every group this unit's size depends on."""
        return {g for g, _, _ in self.ins + self.outs} | {g for g in (self.gin, self.gout) if g}

    def axis_values(self, side: str, candidates: dict[str, list[int]]) -> set:
        """Every width this unit's ``side`` ('in'/'out') takes when each of its groups takes any of
        ``candidates[group]`` (its grid widths): one group's grid, or the sums a concatenation of
        several grids makes."""
        pairs, full = (self.ins, self.cin) if side == "in" else (self.outs, self.cout)
        if not pairs:  # legacy record
            g = self.gin if side == "in" else self.gout
            return set(candidates[g]) if g else {full}
        cut = {0}
        for g, w, m in pairs:
            cut = {c + m * (w - k) for c in cut for k in candidates[g]}
        return {full - c for c in cut}

    def to_dict(self) -> dict:
        d = {"layer": self.layer, "family": self.family.key, "cin": self.cin, "cout": self.cout,
             "gin": self.gin, "gout": self.gout}
        if self.ins or self.outs:
            d["ins"], d["outs"] = [list(p) for p in self.ins], [list(p) for p in self.outs]
        return d

    @classmethod
    def from_dict(cls, d: dict, family: UnitFamily) -> "UnitUse":
        return cls(d["layer"], family, d["cin"], d["cout"], d.get("gin"), d.get("gout"),
                   tuple((str(g), int(w), int(m)) for g, w, m in d.get("ins") or ()),
                   tuple((str(g), int(w), int(m)) for g, w, m in d.get("outs") or ()))


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v), int(v))


def _padding(mod: nn.Conv2d) -> tuple[int, int]:
    """A conv's padding as two ints: ``'valid'`` is 0 and ``'same'`` (stride 1 only, in PyTorch) is
    ``dilation * (kernel - 1) // 2`` per side, the symmetric padding of the same output size (for an
    even kernel PyTorch pads one more pixel on one side; the unit is then one pixel smaller)."""
    if mod.padding == "valid":
        return (0, 0)
    if mod.padding == "same":
        k, d = _pair(mod.kernel_size), _pair(mod.dilation)
        return (d[0] * (k[0] - 1) // 2, d[1] * (k[1] - 1) // 2)
    return _pair(mod.padding)


def _onnx_fusions(model: nn.Module, x: torch.Tensor, convs: list[str]) -> dict[str, tuple[str, bool]]:
    """Per conv layer name: (activation, residual add) as fused by the runtime, read from the
    model's ONNX export. Conv nodes are matched to modules in execution order and checked by
    weight shape; if anything disagrees, no fusion is assumed (conv-only units)."""
    import onnx

    from ..onnx_export import onnx_bytes

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
        elif _silu(consumers.get(src, []), src):  # x * sigmoid(x): ORT runs it as one QuickGelu after the conv
            act = "silu"
        out[layer] = (act, add)
    return out


def _silu(users: list, src: str) -> bool:
    """Do the two ``users`` of ``src`` compute ``src * sigmoid(src)`` (nn.SiLU as exported)?"""
    if len(users) != 2 or sorted(n.op_type for n in users) != ["Mul", "Sigmoid"]:
        return False
    sig, mul = sorted(users, key=lambda n: n.op_type != "Sigmoid")
    return sorted(mul.input) == sorted([src, sig.output[0]])


class _Projection:
    """A projection an attention module runs with ``F.linear`` on its own weights: the runtime
    executes it as a MatMul like any Linear, so it is a linear unit."""

    def __init__(self, in_features: int, out_features: int):
        self.in_features, self.out_features = in_features, out_features


def _functional_projections(mod: nn.Module, name: str = "", args=(), kwargs=None):
    """For an attention module whose q/k/v and output projections are not module calls
    (``nn.MultiheadAttention``; torchvision Swin's window attention): None for any other module;
    else, given the call's arguments, its projections as (layer, projection, input shape with the
    tokens between batch and channels)."""
    kind = type(mod).__name__
    if isinstance(mod, nn.MultiheadAttention):
        if not mod._qkv_same_embed_dim:
            return None
    elif kind not in ("ShiftedWindowAttention", "ShiftedWindowAttentionV2"):
        return None
    if not args and not kwargs:
        return []
    q = args[0] if args else (kwargs or {}).get("query", (kwargs or {}).get("x"))
    shape = tuple(q.shape)
    if isinstance(mod, nn.MultiheadAttention):
        e = mod.embed_dim
        if q.dim() == 3 and not mod.batch_first:
            shape = (shape[1], shape[0], shape[2])
        return [(f"{name}.in_proj", _Projection(e, 3 * e), shape),
                (f"{name}.out_proj", mod.out_proj, shape)]
    b, h, w, c = shape  # Swin: (B, H, W, C), padded up to whole windows before the projections
    wh, ww = mod.window_size
    padded = (b, -(-h // wh) * wh, -(-w // ww) * ww, c)
    return [(f"{name}.qkv", mod.qkv, padded), (f"{name}.proj", mod.proj, padded)]


def _gate_act(mod: nn.Module) -> str:
    """The gate of a squeeze-and-excitation module: ``hardsigmoid`` (MobileNetV3, timm's
    ``hard_sigmoid``) or ``sigmoid`` (EfficientNet, RegNetY, SE-ResNet, and the default)."""
    for m in mod.modules():
        name = type(m).__name__.lower()
        if "hard" in name and "sigmoid" in name:
            return "hardsigmoid"
    return "sigmoid"


def _se_modules(model: nn.Module, maps: dict, calls: list) -> list[tuple[str, tuple, str]]:
    """Squeeze-and-excitation gates found by what they do, not by class name: a module whose
    input and output are the same (B, C, H, W) map with H x W > 1, and every Conv2d/Linear
    inside which ran (at least two: the squeeze and the excitation) on a pooled 1 x 1 map or a
    (B, C) vector. The innermost such module is taken. Returns (name, input shape, gate) each;
    torchvision's ``SqueezeExcitation``, timm's ``SqueezeExcite``/``SEModule`` and user-written
    SE blocks all match; a block that also holds a spatial conv does not."""
    fcs: dict[str, list[tuple]] = {}
    for name, mod, shape in calls:
        fcs.setdefault(name, []).append(shape)
    found = []
    for mname, (inp, out) in maps.items():
        if inp != out or len(inp) != 4 or inp[2] * inp[3] <= 1:
            continue
        inside = [s for n, ss in fcs.items() if n.startswith(mname + ".") for s in ss]
        pooled = all((len(s) == 4 and s[2] * s[3] == 1) or len(s) == 2 for s in inside)
        if len(inside) >= 2 and pooled:
            found.append(mname)
    inner = [n for n in found if not any(o != n and o.startswith(n + ".") for o in found)]
    mods = dict(model.named_modules())
    return [(n, maps[n][0], _gate_act(mods[n])) for n in inner]


def extract_units(graph, dtype: str = "fp32", fuse: bool = True) -> list[UnitUse]:
    """The units of ``graph.model`` at ``graph.example_input``: every Conv2d and Linear that runs,
    with real input shapes and the channel groups controlling its widths -- including the q/k/v
    and output projections attention modules run functionally (``nn.MultiheadAttention``'s
    ``in_proj``/``out_proj``, Swin's ``qkv``/``proj``) -- the attention products of a prunable
    heads group, and each squeeze-and-excitation gate's pooling, gate and multiply (an ``se``
    unit at the width of the map it scales: memory-bound work that shrinks with that width,
    which the full-width remainder priced as if it never did)."""
    model, x = graph.model, graph.example_input
    calls: list[tuple[str, nn.Module, tuple]] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = []
    heads = {g.attention: g for g in graph.groups if g.kind == "heads" and g.prunable}
    tokens_in: dict[str, tuple] = {}  # attention module -> its input shape (B, N, C)

    def _tokens(mod, args):  # returns None: a pre-hook's return value would replace the inputs
        if args and torch.is_tensor(args[0]):
            tokens_in.setdefault(names[mod], tuple(args[0].shape))

    maps: dict[str, tuple] = {}  # module -> (input shape, output shape) of its first 4-D call

    def _maps(mod, args, out):
        if args and torch.is_tensor(args[0]) and torch.is_tensor(out) and args[0].dim() == 4:
            maps.setdefault(names[mod], (tuple(args[0].shape), tuple(out.shape)))

    for a in heads:
        hooks.append(model.get_submodule(a).register_forward_pre_hook(_tokens))
    for m in model.modules():
        if m is not model and type(m) not in (nn.Conv2d, nn.Linear) and any(True for _ in m.children()):
            hooks.append(m.register_forward_hook(_maps))
        if type(m) in (nn.Conv2d, nn.Linear):
            hooks.append(m.register_forward_hook(
                lambda mod, inp, out: calls.append((names[mod], mod, tuple(inp[0].shape)))))
        elif _functional_projections(m) is not None:
            hooks.append(m.register_forward_pre_hook(
                lambda mod, args, kwargs: calls.extend(_functional_projections(mod, names[mod], args, kwargs)),
                with_kwargs=True))
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
    lio = graph.layer_io(expand_units=True)
    batch = int(x.shape[0])
    units = []
    for name, mod, shape in ordered:
        io = lio.get(name)
        ins = tuple((g.name, g.width, k) for g, k in (io.ins if io else ()) if g.prunable)
        outs = tuple((g.name, g.width, k) for g, k in (io.outs if io else ()) if g.prunable)
        gin_n, gout_n = (ins[0][0] if ins else None), (outs[0][0] if outs else None)
        # one group on both sides with the same map (a Linear inside attention): a 1-D family
        tied = bool(ins) and len(ins) == len(outs) == 1 and ins[0] == outs[0]
        if isinstance(mod, nn.Conv2d):
            act, add = fusions.get(name, ("none", False))
            dw = mod.groups > 1 and mod.groups == mod.in_channels == mod.out_channels  # a multiplier conv is a grouped conv unit
            if dw:
                fam = UnitFamily("dwconv", int(shape[2]), int(shape[3]), _pair(mod.kernel_size), _pair(mod.stride),
                                 _padding(mod), _pair(mod.dilation), 1, act, add, True, batch, dtype)
                ctl = outs or ins
                units.append(UnitUse(name, fam, mod.in_channels, mod.out_channels, gout_n or gin_n, gout_n or gin_n,
                                     ctl, ctl))
                continue
            fam = UnitFamily("conv", int(shape[2]), int(shape[3]), _pair(mod.kernel_size), _pair(mod.stride),
                             _padding(mod), _pair(mod.dilation), int(mod.groups), act, add, tied, batch, dtype)
            units.append(UnitUse(name, fam, mod.in_channels, mod.out_channels, gin_n, gout_n, ins, outs))
        else:
            tokens = 1
            for d in shape[1:-1]:
                tokens *= int(d)
            fam = UnitFamily("linear", tokens, 1, tied=tied, batch=batch, dtype=dtype)
            units.append(UnitUse(name, fam, mod.in_features, mod.out_features, gin_n, gout_n, ins, outs))
    for a, g in heads.items():  # the attention products of a heads group: they shrink with the head count
        shape = tokens_in.get(a)
        if shape is None or len(shape) != 3:
            continue
        fam = UnitFamily("attn", int(shape[1]), g.head_dim, tied=True, batch=batch, dtype=dtype)
        feed = ((g.name, g.width, 1),)
        units.append(UnitUse(f"{a}.products", fam, g.width, g.width, g.name, g.name, feed, feed))
    by_name = {u.layer: u for u in units}
    for mname, shape, gate in _se_modules(model, maps, calls):
        first = next((n for n, _, _ in ordered if n.startswith(mname + ".")), None)  # the squeeze FC
        feed = by_name[first].ins if first in by_name else ()
        g = feed[0][0] if feed else None
        fam = UnitFamily("se", int(shape[2]), int(shape[3]), act=gate, tied=True, batch=batch, dtype=dtype)
        units.append(UnitUse(f"{mname}.gate", fam, int(shape[1]), int(shape[1]), g, g, feed, feed))
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
