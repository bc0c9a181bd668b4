"""Data-driven criteria: scores from activations and gradients on calibration batches.

All of them come from ONE pass over ``calib`` per graph (forward with hooks + one backward per
batch), cached on the graph, so scoring every group costs the same as scoring one.

Which activation: for each group we probe its output-side layers. Where the group has output-side
BatchNorm layers we hook those and take ``relu(BN output)`` as the post-activation map (the
ReLU that follows BN in CNNs; in a residual block the ReLU follows the addition, so this is the
branch's own contribution); otherwise the output of its output-side Conv/Linear layers, as is.
Several probes (a residual group touches several BNs) are averaged. A group with no probe whose
output has the group's width (e.g. attention q/k/v) falls back to the L1 norm.

Gradients come from the summed cross-entropy on the calibration labels, with the model in eval
mode (BN uses running statistics, so per-sample gradients are exact and the model's state is not
touched; the pass runs on a deep copy).
"""
from __future__ import annotations

import copy
import itertools
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .magnitude import l1

CALIB_BATCHES = 4
HRANK_BATCHES = 1


def _need_calib(name: str, calib) -> None:
    if calib is None:
        raise ConfigError(f"criterion {name!r} needs calibration data: pass --data synthetic (or imagefolder:PATH "
                          "...), or use a data-free criterion (l1, l2, fpgm, bn-gamma)")


def _probes(graph, group) -> list[str]:
    out = [m for m in group.members if m.side == "out"]
    bns = [m.module for m in out if "BatchNorm" in m.type]
    return bns or [m.module for m in out if m.type in ("Conv2d", "Conv1d", "Linear")]


def _as_channels(t: torch.Tensor) -> torch.Tensor:
    """(N, C, ...) conv maps or (N, ..., C) token features -> (N, C, positions)."""
    if t.dim() == 4:
        return t.flatten(2)
    if t.dim() == 2:
        return t.unsqueeze(-1)
    return t.reshape(t.shape[0], -1, t.shape[-1]).transpose(1, 2)


class _Stats:
    def __init__(self, post_relu: bool):
        self.post_relu = post_relu
        self.n = 0  # samples
        self.m = 0  # elements per channel
        self.sum = self.sumsq = self.zeros = self.fisher = self.rank = 0
        self.rank_n = 0


def _collect(graph, calib, batches: int = CALIB_BATCHES) -> dict[str, Any]:
    """One pass: per probe layer, activation statistics, Fisher sums and HRank ranks; per
    parameter name, accumulated gradients (for Taylor)."""
    cache = graph.__dict__.setdefault("_hwprune_calib_stats", {})
    key = (id(calib), batches)
    if key in cache:
        return cache[key]
    model = copy.deepcopy(graph.model).eval()
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    probes = sorted({p for g in graph.groups for p in _probes(graph, g)})
    mods = dict(model.named_modules())
    stats = {p: _Stats("BatchNorm" in type(mods[p]).__name__) for p in probes if p in mods}
    acts: dict[str, torch.Tensor] = {}
    grads: dict[str, torch.Tensor] = {}
    first = {"on": True}

    def hook(name):
        def fn(mod, inp, out):
            if not isinstance(out, torch.Tensor):
                return
            acts[name] = out.detach()
            if out.requires_grad:
                out.register_hook(lambda g: grads.__setitem__(name, g.detach()))
        return fn

    handles = [mods[p].register_forward_hook(hook(p)) for p in stats]
    params = dict(model.named_parameters())
    pgrads = {k: torch.zeros_like(v) for k, v in params.items()}
    seen = 0
    try:
        for batch in itertools.islice(iter(calib), batches):
            xb, yb = batch[0], batch[1]
            acts.clear(), grads.clear()
            model.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb, reduction="sum")
            loss.backward()
            for k, v in params.items():
                if v.grad is not None:
                    pgrads[k] += v.grad
            for name, s in stats.items():
                if name not in acts:
                    continue
                a = _as_channels(acts[name])
                post = a.clamp_min(0) if s.post_relu else a
                s.n += a.shape[0]
                s.m += a.shape[0] * a.shape[2]
                s.sum = s.sum + post.sum((0, 2))
                s.sumsq = s.sumsq + (post * post).sum((0, 2))
                s.zeros = s.zeros + (post <= 0).sum((0, 2)).float()
                if name in grads:
                    g = _as_channels(grads[name])
                    s.fisher = s.fisher + ((a * g).sum(2) ** 2).sum(0)
                raw = acts[name]
                if first["on"] and raw.dim() == 4 and min(raw.shape[-2:]) > 1:
                    pr = raw.clamp_min(0) if s.post_relu else raw
                    s.rank = s.rank + torch.linalg.matrix_rank(pr.double()).float().sum(0)
                    s.rank_n += raw.shape[0]
            seen += 1
            if seen >= HRANK_BATCHES:
                first["on"] = False
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise ConfigError("the calibration loader yielded no batches; check --data")
    res = {"stats": stats, "grads": pgrads, "batches": seen}
    cache[key] = res
    return res


def _reduce(graph, group, calib, name: str, fn) -> torch.Tensor:
    _need_calib(name, calib)
    st = _collect(graph, calib)["stats"]
    vals = []
    for p in _probes(graph, group):
        s = st.get(p)
        if s is None or s.n == 0:
            continue
        v = fn(s)
        if v is not None and torch.is_tensor(v) and v.numel() == group.width:
            vals.append(v.float())
    if not vals:
        return l1(graph, group)
    return torch.stack(vals).mean(0)


def act_mean(graph, group, calib=None) -> torch.Tensor:
    """Mean post-activation value per channel (Distiller's activation-mean ranking): a channel
    that is rarely and weakly active contributes little."""
    return _reduce(graph, group, calib, "act-mean", lambda s: s.sum / s.m)


def act_std(graph, group, calib=None) -> torch.Tensor:
    """Standard deviation of the post-activation values per channel (Distiller): a channel that is
    nearly constant carries no information the next layer's bias could not absorb."""
    return _reduce(graph, group, calib, "act-std",
                   lambda s: (s.sumsq / s.m - (s.sum / s.m) ** 2).clamp_min(0).sqrt())


def apoz(graph, group, calib=None) -> torch.Tensor:
    """Average Percentage of Zeros (Hu et al., 2016): the fraction of a channel's post-ReLU outputs
    that are zero; a channel that is almost always zero is pruned first. Score = 1 - APoZ."""
    return _reduce(graph, group, calib, "apoz", lambda s: 1.0 - s.zeros / s.m)


def fisher(graph, group, calib=None) -> torch.Tensor:
    """Fisher pruning (Theis et al., 2018): the loss increase from masking channel c is estimated as
    ``1/(2N) * sum_n (sum_hw a_nchw * g_nchw)^2``, with a the activation and g dLoss/da per sample."""
    return _reduce(graph, group, calib, "fisher",
                   lambda s: s.fisher / (2 * s.n) if torch.is_tensor(s.fisher) else None)


def hrank(graph, group, calib=None) -> torch.Tensor:
    """HRank (Lin et al., CVPR 2020): the average matrix rank of a channel's feature maps over
    calibration images; low-rank maps carry less information. Computed on the first batch
    (HRank shows the average rank is stable over a few images). Non-spatial groups fall back to L1."""
    return _reduce(graph, group, calib, "hrank",
                   lambda s: s.rank / s.rank_n if s.rank_n else None)


def taylor(graph, group, calib=None) -> torch.Tensor:
    """First-order Taylor importance (Molchanov et al., CVPR 2019): ``|w * dL/dw|`` summed over each
    channel's parameters in every coupled layer (Torch-Pruning's TaylorImportance on gradients
    accumulated over the calibration batches; the model's own ``.grad`` is restored afterwards)."""
    from ..tp_compat import torch_pruning

    tp = torch_pruning()

    _need_calib("taylor", calib)
    grads = _collect(graph, calib)["grads"]
    params = dict(graph.model.named_parameters())
    saved = {k: p.grad for k, p in params.items()}
    try:
        for k, p in params.items():
            if k in grads:
                p.grad = grads[k]
        scores = tp.importance.TaylorImportance(group_reduction="sum", normalizer=None)(graph.tp_group(group.name))
    finally:
        for k, p in params.items():
            p.grad = saved[k]
    if scores is None:
        return torch.zeros(group.width)
    return scores.detach().float().cpu()
