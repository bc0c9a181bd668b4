"""Cost models: what a width assignment costs, in one number a strategy can spend.

Every strategy talks to a :class:`CostModel`: ``predict(widths) -> cost``, where ``widths`` maps
group name -> kept width (missing groups stay full). The latency table provides one in ms; this
module provides FLOPs and parameter models so the same strategies can target ``50%flops`` and so
users can compare FLOPs-targeted with latency-targeted pruning side by side.
"""
from __future__ import annotations

from typing import Mapping, Protocol

import torch
from torch import nn

from .counting import count_params, per_module_flops
from .graph import ChannelGraph


class CostModel(Protocol):
    unit: str

    def predict(self, widths: Mapping[str, int]) -> float: ...


def layer_scales(graph: ChannelGraph, widths: Mapping[str, int]) -> dict[str, tuple[float, float, bool]]:
    """Per layer: (input keep fraction, output keep fraction, depthwise?) under ``widths``."""
    out = {}
    for layer, (gin, gout) in graph.layer_groups(expand_units=True).items():
        fin = widths.get(gin.name, gin.width) / gin.width if gin else 1.0
        fout = widths.get(gout.name, gout.width) / gout.width if gout else 1.0
        mod = graph.module(layer)
        dw = isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels
        out[layer] = (fin, fout, dw)
    return out


class FlopsCostModel:
    """FLOPs as a function of group widths: each layer's FLOPs scale with its kept input and
    output fractions (depthwise convs only with their channel fraction). Layers outside any
    group (e.g. pooling) count at their full cost."""

    unit = "flops"

    def __init__(self, graph: ChannelGraph, x: torch.Tensor):
        self.graph = graph
        self.per_layer = per_module_flops(graph.model, x)
        self.total = sum(self.per_layer.values())

    def predict(self, widths: Mapping[str, int]) -> float:
        total = float(self.total)
        for layer, (fin, fout, dw) in layer_scales(self.graph, widths).items():
            f = self.per_layer.get(layer, 0)
            total -= f * (1.0 - (fout if dw else fin * fout))
        return total


class ParamsCostModel:
    """Parameter count as a function of group widths (weights scale like FLOPs per layer)."""

    unit = "params"

    def __init__(self, graph: ChannelGraph):
        self.graph = graph
        self.per_layer = {n: sum(p.numel() for p in m.parameters(recurse=False))
                          for n, m in graph.model.named_modules()}
        self.total = count_params(graph.model)

    def predict(self, widths: Mapping[str, int]) -> float:
        total = float(self.total)
        for layer, (fin, fout, dw) in layer_scales(self.graph, widths).items():
            p = self.per_layer.get(layer, 0)
            total -= p * (1.0 - (fout if dw else fin * fout))
        return total
