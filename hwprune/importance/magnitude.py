"""Data-free magnitude criteria."""
from __future__ import annotations

import torch



def _group_norm(graph, group, p: int) -> torch.Tensor:
    """Sum over the group's layers of each channel's weight p-norm (Li et al., ICLR 2017).

    Uses Torch-Pruning's group magnitude importance underneath, which reduces over every coupled
    layer (both the layers whose outputs and whose inputs the channel indexes).
    """
    from ..tp_compat import torch_pruning

    tp = torch_pruning()

    imp = tp.importance.GroupMagnitudeImportance(p=p, group_reduction="sum", normalizer=None)
    scores = imp(graph.tp_group(group.name))
    if scores is None:  # group has no weights TP can score (e.g. only norms)
        return torch.zeros(group.width)
    return scores.detach().float().cpu()


def l1(graph, group, calib=None) -> torch.Tensor:
    """L1 norm of each filter, summed over coupled layers (Li et al., 'Pruning Filters for Efficient ConvNets')."""
    return _group_norm(graph, group, 1)


def l2(graph, group, calib=None) -> torch.Tensor:
    """L2 norm of each filter, summed over coupled layers."""
    return _group_norm(graph, group, 2)


def random(graph, group, calib=None, seed: int = 0) -> torch.Tensor:
    """Uniform random scores (a baseline; deterministic per group name and seed)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + sum(map(ord, group.name)))
    return torch.rand(group.width, generator=gen)


def _tp_scores(graph, group, imp) -> torch.Tensor:
    scores = imp(graph.tp_group(group.name))
    if scores is None:
        return torch.zeros(group.width)
    return scores.detach().float().cpu()


def fpgm(graph, group, calib=None) -> torch.Tensor:
    """Filter Pruning via Geometric Median (He et al., CVPR 2019).

    A filter close to the geometric median of its layer's filters is the most replaceable by the
    others, so its score is its summed L2 distance to all other filters of the layer (far = keep),
    summed over the group's output-side Conv/Linear layers. Unlike a norm, this ranks a
    *duplicated* filter low even when its norm is large. Computed directly (Torch-Pruning's
    FPGMImportance also reduces over input-side layers, which blurs the geometric argument).
    Groups with no output-side Conv/Linear fall back to the L2 norm.
    """
    total = None
    for ref in group.members:
        if ref.side != "out" or not (ref.type.startswith("Conv") or ref.type == "Linear"):
            continue
        w = graph.module(ref.module).weight.detach().float()
        if w.shape[0] != group.width:
            continue
        flat = w.reshape(w.shape[0], -1)
        d = torch.cdist(flat, flat).sum(1)
        total = d if total is None else total + d
    return l2(graph, group) if total is None else total.cpu()


def bn_gamma(graph, group, calib=None) -> torch.Tensor:
    """Network slimming (Liu et al., ICCV 2017): a channel's BatchNorm scale |gamma| says how much
    it contributes after normalisation; summed over the group's BN layers. Groups without a BN
    (e.g. transformer embeddings) fall back to the L1 norm so every group still gets a ranking."""
    from ..tp_compat import torch_pruning

    tp = torch_pruning()

    has_bn = any("BatchNorm" in m.type for m in group.members)
    if not has_bn:
        return l1(graph, group)
    return _tp_scores(graph, group, tp.importance.BNScaleImportance(group_reduction="sum", normalizer=None))
