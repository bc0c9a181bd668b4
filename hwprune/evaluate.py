"""Evaluators (``callable(model) -> top-1 in [0, 1]``) and least-squares weight reconstruction.

``make_evaluator(name, data, **opts)`` builds one from :data:`EVALUATORS`:

- ``accuracy``: plain top-1 on ``data.val`` (``max_batches`` to cut it short).
- ``adaptive-bn``: EagleEye (Li et al., ECCV 2020): a pruned network's BatchNorm running
  statistics belong to the unpruned network, so plain evaluation under-rates good candidates.
  On a *deep copy* (the given model is never touched), reset every BN's running stats, forward
  ``bn_batches`` fixed training batches in train mode under ``no_grad`` with ``momentum=None``
  (cumulative average), then evaluate top-1.
- ``reconstruct``: least-squares reconstruction of the layers whose inputs were cut
  (:func:`reconstruct_`, needs ``original=`` the unpruned model), then adaptive-BN top-1.
- ``finetune``: ``steps`` SGD steps on a copy (NetAdapt's short-term fine-tune), then top-1.
- ``module:function``: a user's ``function(model, data) -> float``.

Batches used for recalibration/fine-tuning are drawn once at construction, so every candidate a
search compares is scored on the same data.
"""
from __future__ import annotations

import copy
import importlib
import itertools
from typing import Any, Callable, Iterable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .registry import Registry

Evaluator = Callable[[nn.Module], float]
EVALUATORS: Registry[Callable[..., Evaluator]] = Registry("evaluator")


def top1(model: nn.Module, loader: Iterable, max_batches: Optional[int] = None) -> float:
    """Top-1 accuracy of ``model`` (eval mode) over ``loader`` (first ``max_batches`` batches)."""
    model.eval()
    right = total = 0
    with torch.no_grad():
        for xb, yb in itertools.islice(iter(loader), max_batches):
            right += int((model(xb).argmax(1) == yb).sum())
            total += int(yb.numel())
    return right / max(total, 1)


def _fixed_batches(loader: Iterable, n: int) -> list:
    if loader is None:
        raise ConfigError("this evaluator needs training/calibration batches; pass --data synthetic (or another spec)")
    out = [b[:2] for b in itertools.islice(iter(loader), n)]
    if not out:
        raise ConfigError("the data loader yielded no batches; check --data")
    return out


def recalibrate_bn_(model: nn.Module, batches: list) -> nn.Module:
    """Reset BN running statistics and re-estimate them as a cumulative average over ``batches``
    (EagleEye's adaptive BN). In place; returns ``model`` in eval mode."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    with torch.no_grad():
        for xb, _ in batches:
            model(xb)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


@EVALUATORS.register("accuracy")
def accuracy_evaluator(data, max_batches: Optional[int] = None, **_: Any) -> Evaluator:
    def evaluate(model: nn.Module) -> float:
        return top1(model, data.val, max_batches)

    return evaluate


@EVALUATORS.register("adaptive-bn")
def adaptive_bn_evaluator(data, bn_batches: int = 8, max_batches: Optional[int] = None, **_: Any) -> Evaluator:
    batches = _fixed_batches(data.train if data.train is not None else data.calib, bn_batches)

    def evaluate(model: nn.Module) -> float:
        m = recalibrate_bn_(copy.deepcopy(model), batches)
        return top1(m, data.val, max_batches)

    return evaluate


@EVALUATORS.register("reconstruct")
def reconstruct_evaluator(data, original: Optional[nn.Module] = None, recon_batches: int = 4, bn_batches: int = 8,
                          max_batches: Optional[int] = None, **_: Any) -> Evaluator:
    if original is None:
        raise ConfigError("evaluator 'reconstruct' needs the unpruned model: make_evaluator('reconstruct', data, "
                          "original=model) (the CLI passes it), or use --evaluator adaptive-bn")
    calib = _fixed_batches(data.calib if data.calib is not None else data.train, recon_batches)
    bn = _fixed_batches(data.train if data.train is not None else data.calib, bn_batches)

    def evaluate(model: nn.Module) -> float:
        m = copy.deepcopy(model)
        reconstruct_(m, original, calib, recon_batches)
        return top1(recalibrate_bn_(m, bn), data.val, max_batches)

    return evaluate


@EVALUATORS.register("finetune")
def finetune_evaluator(data, steps: int = 20, lr: float = 0.01, seed: int = 0,
                       max_batches: Optional[int] = None, **_: Any) -> Evaluator:
    batches = _fixed_batches(data.train, steps)

    def evaluate(model: nn.Module) -> float:
        m = copy.deepcopy(model)
        torch.manual_seed(seed)
        opt = torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        m.train()
        for xb, yb in itertools.islice(itertools.cycle(batches), steps):
            opt.zero_grad()
            F.cross_entropy(m(xb), yb).backward()
            opt.step()
        return top1(m, data.val, max_batches)

    return evaluate


def make_evaluator(name: str, data, **opts: Any) -> Evaluator:
    """Build evaluator ``name`` (see module doc) on ``data`` (a :class:`hwprune.data.DataBundle`)."""
    if data is None:
        raise ConfigError(f"evaluator {name!r} needs data: pass --data synthetic (or imagefolder:PATH ...)")
    if ":" in name and name not in EVALUATORS:
        mod, _, attr = name.rpartition(":")
        try:
            fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"cannot load evaluator {name!r} ({e}); give package.module:function with "
                              "function(model, data) -> accuracy") from None
        return lambda model: float(fn(model, data))
    return EVALUATORS.get(name)(data, **opts)


# ---------------------------------------------------------------------------------------------
# Least-squares reconstruction (He et al., ICCV 2017 "Channel Pruning"; ThiNet; EAPruning)
def _kept_rows(pruned_w: torch.Tensor, orig_w: torch.Tensor) -> Optional[torch.Tensor]:
    """Indices of ``orig_w``'s output rows that ``pruned_w`` kept (pruning copies weights, so each
    kept kernel appears verbatim in the original). None when they cannot be matched."""
    if pruned_w.shape[0] == orig_w.shape[0]:
        return torch.arange(orig_w.shape[0])
    if orig_w.shape[0] * orig_w.shape[1] > 4_000_000:
        return None
    o = orig_w.detach().reshape(orig_w.shape[0], orig_w.shape[1], -1)
    index = {}
    for i in range(o.shape[0]):
        for j, k in enumerate(o[i]):
            index.setdefault(k.numpy().tobytes(), i)
    p = pruned_w.detach().reshape(pruned_w.shape[0], pruned_w.shape[1], -1)
    rows = []
    for r in range(p.shape[0]):
        votes = [index.get(p[r, j].numpy().tobytes()) for j in range(min(p.shape[1], 16))]
        votes = [v for v in votes if v is not None]
        if not votes:
            return None
        rows.append(max(set(votes), key=votes.count))
    rows_t = torch.tensor(rows)
    if len(set(rows)) != len(rows) or not bool((rows_t[1:] > rows_t[:-1]).all()):
        return None
    return rows_t


def _design(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Rows of the layer's linear map: im2col patches for a conv, features for a linear."""
    if isinstance(layer, nn.Conv2d):
        cols = F.unfold(x, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def _target(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return y.flatten(2).transpose(1, 2).reshape(-1, y.shape[1])
    return y.reshape(-1, y.shape[-1])


def _fit_(layer: nn.Module, gram: torch.Tensor, cross: torch.Tensor, ridge: float) -> None:
    d = gram.shape[0]
    lam = ridge * float(gram.diagonal().mean()) + 1e-12
    theta = torch.linalg.solve(gram + lam * torch.eye(d, dtype=gram.dtype), cross)  # (d, out)
    has_bias = layer.bias is not None
    w = theta[:-1] if has_bias else theta
    with torch.no_grad():
        layer.weight.copy_(w.T.reshape(layer.weight.shape).to(layer.weight.dtype))
        if has_bias:
            layer.bias.copy_(theta[-1].to(layer.bias.dtype))


def reconstruct_(pruned: nn.Module, original: nn.Module, calib: Iterable, max_batches: int = 4,
                 max_rows: int = 8192, ridge: float = 1e-6, seed: int = 0,
                 layers: Optional[Iterable[str]] = None) -> list[str]:
    """Refit, in place, every Conv2d/Linear of ``pruned`` whose input channels were cut.

    For such a layer, find W', b' minimising ``|| X' W'^T + b' - Y ||^2 + ridge`` where X' are its
    inputs in the pruned model and Y the same-named layer's outputs in the original model (kept
    output channels only), on up to ``max_batches`` calibration batches, as in He et al. (ICCV
    2017) / ThiNet / EAPruning. Convs go through im2col (``F.unfold``); up to ``max_rows`` sampled
    positions per batch; normal equations accumulated in float64 and solved with a small ridge.
    Layers are fitted one after another in module order, each on the inputs produced by the
    already-refitted layers before it; every capture forward stops at the layer, so the cost is
    about one forward pass per refitted layer and batch. Grouped convs are skipped.
    ``layers`` refits exactly those names, cut or not (a layer with nothing cut is recovered).
    Returns the names of the refitted layers.
    """
    if calib is None:
        raise ConfigError("reconstruction needs calibration data: pass --data")
    orig_mods = dict(original.named_modules())
    layers = set(layers) if layers is not None else None
    targets: dict[str, tuple[nn.Module, nn.Module, torch.Tensor]] = {}
    for name, m in pruned.named_modules():
        o = orig_mods.get(name)
        if not isinstance(m, (nn.Conv2d, nn.Linear)) or type(o) is not type(m):
            continue
        if isinstance(m, nn.Conv2d) and (m.groups != 1 or o.groups != 1):
            continue
        if (name not in layers) if layers is not None else m.weight.shape[1] >= o.weight.shape[1]:
            continue  # inputs not cut: the layer already computes the original function
        rows = _kept_rows(m.weight, o.weight)
        if rows is not None:
            targets[name] = (m, o, rows)
    if not targets:
        return []
    gen = torch.Generator().manual_seed(seed)
    was = pruned.training, original.training
    pruned.eval(), original.eval()
    batches = [b[0] for b in itertools.islice(iter(calib), max_batches)]
    done = []
    try:
        # sequential, in module order: each layer is fitted on the inputs produced by the layers
        # already refitted before it, so errors do not compound (He et al. 2017, Sec. 3.3)
        for name, (m, o, rows) in targets.items():
            gram = cross = None
            for xb in batches:
                x_in = _capture(pruned, m, xb, want_input=True)
                y = _capture(original, o, xb, want_input=False)
                a = _design(m, x_in)
                y = _target(o, y)[:, rows]
                if a.shape[0] > max_rows:
                    pick = torch.randperm(a.shape[0], generator=gen)[:max_rows]
                    a, y = a[pick], y[pick]
                if m.bias is not None:
                    a = torch.cat([a, torch.ones(a.shape[0], 1)], 1)
                a, y = a.double(), y.double()
                gram = a.T @ a if gram is None else gram + a.T @ a
                cross = a.T @ y if cross is None else cross + a.T @ y
            if gram is not None:
                _fit_(m, gram, cross, ridge)
                done.append(name)
    finally:
        pruned.train(was[0]), original.train(was[1])
    return done


class _Stop(Exception):
    pass


def _capture(model: nn.Module, layer: nn.Module, xb: torch.Tensor, want_input: bool) -> torch.Tensor:
    """Input (or output) of ``layer`` when ``model`` runs on ``xb``; the forward stops there."""
    box = {}

    def hook(mod, inp, out):
        box["t"] = (inp[0] if want_input else out).detach().clone()
        raise _Stop

    h = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(xb)
    except _Stop:
        pass
    finally:
        h.remove()
    if "t" not in box:
        raise ConfigError(f"layer {type(layer).__name__} was not used in the forward pass; cannot reconstruct it")
    return box["t"]
