"""Helpers shared by the strategies: grid moves, stand-in evaluators, short fine-tunes."""
from __future__ import annotations

import itertools
from typing import Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn


def lower(grid: list[int], width: int) -> Optional[int]:
    """The next grid width below ``width`` (None at the bottom)."""
    below = [w for w in grid if w < width]
    return below[-1] if below else None


def snap_down(grid: list[int], width: float) -> int:
    """Largest grid width <= ``width`` (the smallest grid width if none)."""
    ok = [w for w in grid if w <= width + 1e-9]
    return ok[-1] if ok else grid[0]


def repair(ctx, widths: dict[str, int]) -> dict[str, int]:
    """Safety net: step groups down the grid (cheapest accuracy proxy: largest cost saving per
    removed channel) until the prediction meets the target. Strategies call it after rounding."""
    widths = dict(widths)
    while not ctx.meets(widths):
        best, best_gain = None, 0.0
        on = ctx.tightest(widths)  # several budgets: save on the one most over its budget
        cur = ctx.predict_on(on, widths)
        for g in ctx.graph.prunable:
            w = widths.get(g.name, g.width)
            nw = lower(ctx.grid(g), w)
            if nw is None:
                continue
            gain = (cur - ctx.predict_on(on, {**widths, g.name: nw})) / (w - nw)
            if best is None or gain > best_gain:
                best, best_gain = (g.name, nw), gain
        if best is None:
            break
        widths[best[0]] = best[1]
    return widths


def fidelity_evaluator(original: nn.Module, example_input: torch.Tensor, n: int = 64,
                       seed: int = 0) -> Callable[[nn.Module], float]:
    """A data-free stand-in evaluator: how well the pruned model reproduces the *pattern* of the
    unpruned model's logits on fixed random inputs -- per input, the cosine similarity of the two
    logit vectors centred across classes, clipped at 0 and averaged: in [0, 1], 1 = same ranking
    and proportions.

    Centring per input matters: a randomly initialised network (resnet18 in tools/bench_strategies
    --mode resnet18) puts almost all of its logit energy in a bias shared by every input, so a
    relative MSE against the variance across inputs scored every pruned candidate 0 and the
    search had nothing to rank. For tests and quick demos without a dataset; real runs use
    ``hwprune.evaluate.make_evaluator`` with held-out data (top-1 accuracy).
    """
    gen = torch.Generator().manual_seed(seed)
    xs = torch.randn(n, *example_input.shape[1:], generator=gen)
    original.eval()
    with torch.no_grad():
        ref = original(xs)
    ref = ref - ref.mean(1, keepdim=True)

    def evaluate(model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            out = model(xs)
        cos = torch.nn.functional.cosine_similarity(out - out.mean(1, keepdim=True), ref, dim=1)
        return float(cos.clamp(min=0).mean())

    return evaluate


def short_finetune(model: nn.Module, loader: Iterable, steps: int, lr: float = 0.01, seed: int = 0) -> nn.Module:
    """``steps`` SGD steps of cross-entropy (NetAdapt's short-term fine-tune). The images come from
    the loader's first ``steps`` batches, pooled, and each step draws a minibatch of the same size
    from the pool in an order shuffled by ``seed`` (NetAdapt fine-tunes on randomly drawn training
    images; before, every seed saw the same fixed batches, so a search's ``--seed`` changed nothing)."""
    if loader is None or steps <= 0:
        return model
    torch.manual_seed(seed)
    batches = list(itertools.islice(iter(loader), steps))
    if not batches:
        return model
    xs = torch.cat([b[0] for b in batches])
    ys = torch.cat([b[1] for b in batches])
    bs = len(batches[0][0])
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(xs), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    pos = 0
    for _ in range(steps):
        if pos + bs > len(order):
            order, pos = torch.randperm(len(xs), generator=gen), 0
        idx = order[pos:pos + bs]
        pos += bs
        opt.zero_grad()
        F.cross_entropy(model(xs[idx]), ys[idx]).backward()
        opt.step()
    model.eval()
    return model


def importance(ctx, name: str, group) -> torch.Tensor:
    """Scores from criterion ``name`` when it is registered and its data is there, else the
    configured criterion (recorded in ``ctx.artifacts['criterion_used']``)."""
    from ..importance import CRITERIA

    used = ctx.config.criterion
    if name in CRITERIA and ctx.calib is not None:
        key = f"{name}:{group.name}"
        cache = ctx.artifacts.setdefault("_scores", {})
        if key not in cache:
            try:
                cache[key] = CRITERIA.get(name)(ctx.graph, group, ctx.calib).detach().float().cpu()
            except Exception:
                cache[key] = None
        if cache[key] is not None:
            ctx.artifacts["criterion_used"] = name
            return cache[key]
    ctx.artifacts.setdefault("criterion_used", used)
    return ctx.scores(group)
