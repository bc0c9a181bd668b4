"""Training and fine-tuning (with optional knowledge distillation), and the shipped default model.

``train`` and ``finetune`` are thin wrappers over :func:`hwprune.recover.fit`, the one training
loop (``hwprune train`` adds scratch re-initialisation, Scratch-B budgets and resumable runs on
top of it in :func:`hwprune.recover.recover`). ``train`` is plain SGD (momentum 0.9, Nesterov,
weight decay 5e-4) with a one-cycle learning-rate schedule (Smith & Topin 2019: short warm-up
then cosine decay), the recipe that trains the CIFAR-style ResNets fastest on a small budget.
With a ``teacher`` the loss is Hinton et al. (2015) distillation:
``(1 - alpha) * CE + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``, the usual way to recover a
pruned network's accuracy from its unpruned self.

``load_default_model()`` loads ``hwprune/assets/tiny_resnet_synthetic.pt`` (a plain state_dict of
``hwprune.zoo.tiny_resnet`` trained on ``make_data("synthetic")``), made by
``python tools/train_default.py``.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import torch
from torch import nn

from .recover import LoopSettings, check_num_classes, fit, model_outputs
from .zoo import TRAINED_ASSET

__all__ = ["DEFAULT_ASSET", "check_num_classes", "clone", "finetune", "load_default_model", "model_outputs", "train",
           "train_default_model"]

DEFAULT_ASSET = TRAINED_ASSET


def train(model: nn.Module, data, epochs: int = 1, lr: float = 0.05, teacher: Optional[nn.Module] = None,
          kd_alpha: float = 0.5, kd_temperature: float = 4.0, steps: Optional[int] = None, seed: int = 0,
          progress: bool = True, weight_decay: float = 5e-4,
          extra_loss: Optional[Callable[[nn.Module], torch.Tensor]] = None) -> dict[str, Any]:
    """Train ``model`` in place on ``data.train`` (a DataBundle or a loader) for ``epochs`` epochs
    (or exactly ``steps`` steps). Returns ``{"loss": [per-epoch mean], "steps", "epochs", "seconds"}``.
    The loop is :func:`hwprune.recover.fit` (one-cycle schedule); ``extra_loss(model)`` is added to
    the loss at every step (a regulariser, see :mod:`hwprune.regularize`)."""
    settings = LoopSettings(epochs=epochs, lr=lr, kd_alpha=kd_alpha, kd_temperature=kd_temperature, steps=steps,
                            seed=seed, progress=progress, weight_decay=weight_decay)
    return fit(model, data, settings, teacher=teacher, extra_loss=extra_loss)


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
