"""FLOPs and parameter counts, via PyTorch's own FLOP counter (torch.utils.flop_counter).

FLOPs are counted as PyTorch counts them (a multiply-add = 2 FLOPs); MACs = FLOPs / 2.

Attention is counted through its plain operators: while counting, ``nn.MultiheadAttention``'s
inference fast path (one fused ``_native_multi_head_attention`` op the counter has no formula for)
is switched off and scaled-dot-product attention runs its math backend (bmm). Without that, ViT-B/16
counts 22.5 GFLOPs instead of its 35.1 (17.6 GMACs).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _countable_attention():
    """Route attention through operators the FLOP counter knows (restored on exit)."""
    mha = getattr(torch.backends, "mha", None)
    was_fast = mha.get_fastpath_enabled() if mha is not None else None
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        math = sdpa_kernel(SDPBackend.MATH)
    except ImportError:  # older torch: no backend selection; fused SDPA goes uncounted there
        math = contextlib.nullcontext()
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        with math:
            yield
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(was_fast)


def _run_counter(model: nn.Module, x: torch.Tensor) -> FlopCounterMode:
    counter = FlopCounterMode(display=False)
    was = model.training
    model.eval()
    # no parameter requires grad while counting: the counter's module tracker hooks every module
    # input that requires grad and fails on a parameter passed in as one (timm CaiT/PiT class tokens)
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in grads:
            p.requires_grad_(False)
        with torch.no_grad(), _countable_attention(), counter:
            model(x)
    finally:
        model.train(was)
        for p, g in grads:
            p.requires_grad_(g)
    return counter


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    return int(_run_counter(model, x).get_total_flops())


def own_flops_by_op(model: nn.Module, x: torch.Tensor) -> dict[str, dict[str, int]]:
    """Per module name (as in ``named_modules``): the FLOPs of the operators it runs itself, by
    operator (``"addmm"``, ``"bmm"``, ``"convolution"``...), its submodules' calls excluded.

    A leaf's own FLOPs are all of its FLOPs. A container's own FLOPs are what it computes
    functionally: Swin's window attention runs ``F.linear`` on its ``qkv``/``proj`` weights and
    the attention products itself, ``nn.MultiheadAttention`` its in/out projections and products.
    Every counted FLOP lands in exactly one module (the model's own forward included, under
    ``""``), so the values sum to :func:`count_flops`."""
    counts = _run_counter(model, x).get_flop_counts()
    root = type(model).__name__
    totals: dict[str, dict[str, int]] = {}
    for key, ops in counts.items():
        if key == "Global":
            continue
        name = "" if key == root else (key[len(root) + 1:] if key.startswith(root + ".") else None)
        if name is None:
            continue
        totals[name] = {str(getattr(op, "__name__", op)).split(".")[-1]: int(v) for op, v in ops.items()}
    own = {name: dict(ops) for name, ops in totals.items()}
    for name, ops in totals.items():
        if not name:
            continue
        parent = name  # the nearest counted ancestor (containers never called, e.g. ModuleList, have no entry)
        while parent:
            parent = parent.rpartition(".")[0]
            if parent in totals:
                break
        for op, v in ops.items():
            own[parent][op] = own[parent].get(op, 0) - v
    return {n: kept for n, ops in own.items() if (kept := {op: v for op, v in ops.items() if v > 0})}


def per_module_flops(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Own FLOPs per module name (see :func:`own_flops_by_op`): every leaf that computes, and every
    container that computes functionally (attention units)."""
    return {n: sum(ops.values()) for n, ops in own_flops_by_op(model, x).items()}


def summarize(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    flops = count_flops(model, x)
    return {"flops": flops, "macs": flops // 2, "params": count_params(model)}
