"""FLOPs and parameter counts, via PyTorch's own FLOP counter (torch.utils.flop_counter).

FLOPs are counted as PyTorch counts them (a multiply-add = 2 FLOPs); MACs = FLOPs / 2.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _run_counter(model: nn.Module, x: torch.Tensor) -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was)
    return counter


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    return int(_run_counter(model, x).get_total_flops())


def per_module_flops(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """FLOPs per leaf module name (as in ``named_modules``)."""
    counts = _run_counter(model, x).get_flop_counts()
    leaves = {n for n, m in model.named_modules() if not any(True for _ in m.children())}
    root = type(model).__name__
    out: dict[str, int] = {}
    for key, ops in counts.items():
        name = key[len(root) + 1:] if key.startswith(root + ".") else key
        if name in leaves:
            out[name] = int(sum(ops.values()))
    return out


def summarize(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    flops = count_flops(model, x)
    return {"flops": flops, "macs": flops // 2, "params": count_params(model)}
