"""Training and fine-tuning (with optional knowledge distillation), and the shipped default model.

``train`` is plain SGD (momentum 0.9, Nesterov, weight decay 5e-4) with a one-cycle learning-rate
schedule (Smith & Topin 2019: short warm-up then cosine decay), the recipe that trains the
CIFAR-style ResNets fastest on a small budget. With a ``teacher`` the loss is Hinton et al.
(2015) distillation: ``(1 - alpha) * CE + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``,
the usual way to recover a pruned network's accuracy from its unpruned self.

``load_default_model()`` loads ``hwprune/assets/tiny_resnet_synthetic.pt`` (a plain state_dict of
``hwprune.zoo.tiny_resnet`` trained on ``make_data("synthetic")``), made by
``python tools/train_default.py``.
"""
from __future__ import annotations

import copy
import itertools
import os
import sys
import time
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError
from .zoo import TRAINED_ASSET

DEFAULT_ASSET = TRAINED_ASSET


def _loader(data):
    return getattr(data, "train", data)


def model_outputs(model: nn.Module, x: torch.Tensor) -> Optional[int]:
    """How many logits ``model`` gives per image (None when its output is not (N, K) logits)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            y = model(x[:1])
    finally:
        model.train(was)
    return int(y.shape[1]) if isinstance(y, torch.Tensor) and y.dim() == 2 else None


def check_num_classes(model: nn.Module, data, input_size: Optional[int] = None) -> None:
    """Refuse, before any work, data whose labels go beyond the model's outputs: they would reach
    ``cross_entropy`` as an index error deep in training (and score as always wrong in accuracy).
    ``data`` is a DataBundle (others are not checked); one forward pass of one image."""
    n = getattr(data, "num_classes", None)
    if not n:
        return
    size = input_size or getattr(data, "input_size", None)
    if size:
        x = torch.zeros(1, 3, size, size)
    else:
        try:
            x = next(iter(_loader(data)))[0]
        except Exception:
            return
    k = model_outputs(model, x)
    if k is not None and k < n:
        spec = getattr(data, "spec", "") or ""
        raise ConfigError(f"the data{' ' + spec if spec else ''} has {n} classes but the model gives {k} outputs: "
                          f"labels {k}..{n - 1} have no logit; pass --num-classes {n} (with weights made for {n} "
                          f"classes, or none), or use data with at most {k} classes")


def train(model: nn.Module, data, epochs: int = 1, lr: float = 0.05, teacher: Optional[nn.Module] = None,
          kd_alpha: float = 0.5, kd_temperature: float = 4.0, steps: Optional[int] = None, seed: int = 0,
          progress: bool = True, weight_decay: float = 5e-4) -> dict[str, Any]:
    """Train ``model`` in place on ``data.train`` (a DataBundle or a loader) for ``epochs`` epochs
    (or exactly ``steps`` steps). Returns ``{"loss": [per-epoch mean], "steps", "seconds"}``."""
    if epochs < 0 or (steps is not None and steps < 1):
        raise ConfigError(f"epochs {epochs} / steps {steps} must be >= 0 / >= 1")
    if lr <= 0:
        raise ConfigError(f"learning rate {lr} must be > 0")
    if not 0.0 <= kd_alpha <= 1.0:
        raise ConfigError(f"kd_alpha {kd_alpha} must be in [0, 1]")
    loader = _loader(data)
    if loader is None:
        raise ConfigError("training needs data: pass --data synthetic (or imagefolder:PATH ...)")
    check_num_classes(model, data)
    try:
        per_epoch = len(loader)
    except TypeError:
        per_epoch = None
    total = steps if steps is not None else (per_epoch or 0) * epochs
    if total <= 0:
        return {"loss": [], "steps": 0, "seconds": 0.0}
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15,
                                                anneal_strategy="cos", cycle_momentum=False)
    if teacher is not None:
        teacher = teacher.eval()
    from tqdm import tqdm

    bar = tqdm(total=total, desc="train", file=sys.stderr, disable=not progress, dynamic_ncols=True, leave=False)
    hist: dict[str, Any] = {"loss": []}
    t0, done = time.perf_counter(), 0
    model.train()
    while done < total:
        run, n = 0.0, 0
        for xb, yb in itertools.islice(iter(loader), total - done):
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            if teacher is not None:
                with torch.no_grad():
                    t_logits = teacher(xb)
                T = kd_temperature
                kd = F.kl_div(F.log_softmax(logits / T, 1), F.softmax(t_logits / T, 1), reduction="batchmean") * T * T
                loss = (1 - kd_alpha) * loss + kd_alpha * kd
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            done += 1
            run, n = run + float(loss.detach()), n + 1
            bar.update(1)
            bar.set_postfix(loss=f"{run / n:.3f}")
        if n == 0:
            break
        hist["loss"].append(run / n)
    bar.close()
    model.eval()
    hist.update(steps=done, seconds=time.perf_counter() - t0)
    return hist


def finetune(model: nn.Module, data, epochs: int = 1, seed: int = 0, teacher: Optional[nn.Module] = None,
             progress: bool = True, lr: float = 0.01, **kw: Any) -> dict[str, Any]:
    """Fine-tune a pruned model (lower learning rate than training from scratch; distillation
    from ``teacher``, typically the unpruned model, when given)."""
    return train(model, data, epochs=epochs, lr=lr, teacher=teacher, seed=seed, progress=progress, **kw)


def train_default_model(epochs: int = 3, seed: int = 0, progress: bool = True, n_train: int = 5000):
    """tiny_resnet trained on ``make_data("synthetic")``: returns ``(model, top-1 on synthetic val)``."""
    from .data import make_data
    from .evaluate import top1
    from .zoo import tiny_resnet

    torch.manual_seed(seed)
    data = make_data("synthetic", input_size=32, batch_size=64, seed=seed, n_train=n_train)
    model = tiny_resnet()
    train(model, data, epochs=epochs, lr=0.1, seed=seed, progress=progress)
    return model, top1(model, data.val)


def load_default_model(path: Optional[str] = None) -> nn.Module:
    """The shipped tiny_resnet trained on the synthetic data (eval mode): the model
    ``--model tiny_resnet_synthetic`` names.

    Raises FileNotFoundError when the asset is missing (make it with ``python tools/train_default.py``).
    """
    from .zoo import tiny_resnet_synthetic  # noqa: PLC0415

    return tiny_resnet_synthetic(path or DEFAULT_ASSET)


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)
