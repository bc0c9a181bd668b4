"""Data-free magnitude criteria."""
from __future__ import annotations

import torch

from . import CRITERIA


def _group_norm(graph, group, p: int) -> torch.Tensor:
    """Sum over the group's layers of each channel's weight p-norm (Li et al., ICLR 2017).

    Uses Torch-Pruning's group magnitude importance underneath, which reduces over every coupled
    layer (both the layers whose outputs and whose inputs the channel indexes).
    """
    import torch_pruning as tp

    imp = tp.importance.GroupMagnitudeImportance(p=p, group_reduction="sum", normalizer=None)
    scores = imp(graph.tp_group(group.name))
    if scores is None:  # group has no weights TP can score (e.g. only norms)
        return torch.zeros(group.width)
    return scores.detach().float().cpu()


@CRITERIA.register("l1")
def l1(graph, group, calib=None) -> torch.Tensor:
    """L1 norm of each filter, summed over coupled layers (Li et al., 'Pruning Filters for Efficient ConvNets')."""
    return _group_norm(graph, group, 1)


@CRITERIA.register("l2")
def l2(graph, group, calib=None) -> torch.Tensor:
    """L2 norm of each filter, summed over coupled layers."""
    return _group_norm(graph, group, 2)


@CRITERIA.register("random")
def random(graph, group, calib=None, seed: int = 0) -> torch.Tensor:
    """Uniform random scores (a baseline; deterministic per group name and seed)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + sum(map(ord, group.name)))
    return torch.rand(group.width, generator=gen)
