"""Cost models: what a width assignment costs, in one number a strategy can spend.

Every strategy talks to a :class:`CostModel`: ``predict(widths) -> cost``, where ``widths`` maps
group name -> kept width (missing groups stay full). The latency table provides one in ms; this
module provides FLOPs and parameter models so the same strategies can target ``50%flops`` and so
users can compare FLOPs-targeted with latency-targeted pruning side by side.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import torch

from .counting import count_params, own_flops_by_op
from .graph import HEAD_PROJECTIONS, ChannelGraph, LayerIO


class CostModel(Protocol):
    unit: str

    def predict(self, widths: Mapping[str, int]) -> float: ...


def layer_scales(io: Mapping[str, LayerIO], widths: Mapping[str, int]) -> dict[str, tuple[float, float, bool]]:
    """Per layer of ``io`` (``ChannelGraph.layer_io(expand_units=True)``, computed once per cost
    model: searches call ``predict`` thousands of times): (input keep fraction, output keep
    fraction, depthwise?) under ``widths``. An input fed by several groups (a concatenation)
    keeps the channel-weighted fraction."""
    out = {}
    for layer, io in io.items():
        fin, fout = io.fractions(widths)
        out[layer] = (fin, fout, io.depthwise)
    return out


_LINEAR_OPS = ("addmm", "mm", "convolution", "_convolution", "linear")


def _head_projections(container: str, inside: list[str]) -> list[str]:
    """The layers of ``container`` that are, or sit inside, a projection into its heads: a name
    of :data:`HEAD_PROJECTIONS` anywhere on the path below the container (``qkv``; ``qkv.conv``
    where the projection is a conv-norm block, as in timm's EfficientViT)."""
    def rel(lay: str) -> list[str]:  # the container itself by its own name
        return (lay.rsplit(".", 1)[-1] if lay == container else lay[len(container) + 1:]).lower().split(".")

    return [lay for lay in inside if any(part in HEAD_PROJECTIONS for part in rel(lay))]


class FlopsCostModel:
    """FLOPs as a function of group widths: each layer's FLOPs scale with its kept input and
    output fractions (depthwise convs only with their channel fraction). Layers outside any
    group (e.g. pooling) count at their full cost.

    FLOPs a container computes itself (Swin's window attention and ``nn.MultiheadAttention`` run
    their projections functionally, see :func:`hwprune.counting.own_flops_by_op`) follow the layers
    of that container the graph scales: projections (matmuls) with their mean input x output
    fraction, attention products (bmm) with their mean output fraction -- heads stay, ``head_dim``
    shrinks, so q.k and attn.v shrink linearly. The products' fraction is that of the projections
    into the heads where the container names them (``qkv``, ``q``/``k``/``v``, or a layer inside a
    child so named: EfficientViT's ``qkv.conv``), not of its output projection, which only reads
    the products."""

    unit = "flops"

    def __init__(self, graph: ChannelGraph, x: torch.Tensor):
        self.graph = graph
        own = own_flops_by_op(graph.model, x)
        self.total = sum(sum(ops.values()) for ops in own.values())
        self.io = graph.layer_io(expand_units=True)
        layers = list(self.io)
        modules = dict(graph.model.named_modules())
        self.per_layer: dict[str, int] = {}  # leaf layer -> its FLOPs
        # container -> (matmul FLOPs, other FLOPs, the scaled layers it is or holds, those of them
        # that project into its heads)
        self.functional: dict[str, tuple[int, int, list[str], list[str]]] = {}
        for name, ops in own.items():
            mod = modules.get(name)
            if mod is None or not name:
                continue
            if not any(True for _ in mod.children()):
                self.per_layer[name] = sum(ops.values())
                continue
            inside = [lay for lay in layers if lay == name or lay.startswith(name + ".")]
            if inside:
                mm = sum(v for op, v in ops.items() if op in _LINEAR_OPS)
                self.functional[name] = (mm, sum(ops.values()) - mm, inside, _head_projections(name, inside))

    def predict(self, widths: Mapping[str, int]) -> float:
        total = float(self.total)
        scales = layer_scales(self.io, widths)
        for layer, f in self.per_layer.items():
            if layer in scales:
                fin, fout, dw = scales[layer]
                total -= f * (1.0 - (fout if dw else fin * fout))
        for mm, other, inside, into_heads in self.functional.values():
            s = [scales[lay] for lay in inside]
            total -= mm * (1.0 - sum(a * b for a, b, _ in s) / len(s))
            # attention products follow head_dim: the output of the projections into the heads
            # where the container names them (q/k/v, qkv), else every layer it holds
            heads = [scales[lay] for lay in into_heads] or s
            total -= other * (1.0 - sum(b for _, b, _ in heads) / len(heads))
        return total


class ParamsCostModel:
    """Parameter count as a function of group widths: per layer, weight matrices/kernels scale with
    the kept input x output fractions (depthwise kernels with the channel fraction), vectors
    (biases, norm scales, and one value per output channel stored as (out, 1, 1, 1): timm's
    ScaledStdConv2d ``gain``) with the output fraction, parameters outside any layer (ViT's class
    token and position embedding) with their group."""

    unit = "params"

    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self.io = graph.layer_io(expand_units=True)
        self.per_layer = {}  # layer -> (matrix params, vector params)
        for n, m in graph.model.named_modules():
            ps = list(m.parameters(recurse=False))
            vec = [p.dim() < 2 or p.numel() == p.shape[0] for p in ps]  # one value per output channel
            self.per_layer[n] = (sum(p.numel() for p, v in zip(ps, vec) if not v),
                                 sum(p.numel() for p, v in zip(ps, vec) if v))
        self.total = count_params(graph.model)

    def predict(self, widths: Mapping[str, int]) -> float:
        total = float(self.total)
        for layer, (fin, fout, dw) in layer_scales(self.io, widths).items():
            mat, vec = self.per_layer.get(layer, (0, 0))
            total -= mat * (1.0 - (fout if dw else fin * fout)) + vec * (1.0 - fout)
        for g in self.graph.groups:  # parameters outside any layer (ViT's class token, position embedding)
            for _, per_channel in g.free_params:
                total -= per_channel * (g.width - int(widths.get(g.name, g.width)))
        return total
