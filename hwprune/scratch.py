"""Training a pruned architecture from scratch: Liu et al., "Rethinking the Value of Network
Pruning" (ICLR 2019).

Their finding: for structured pruning, the pruned *architecture* trained from a fresh random
init often matches or beats fine-tuning the weights it inherited, provided it is trained for the
same *computation* budget as the large model. :func:`reinitialize_` gives the fresh init (each
layer's own ``reset_parameters()`` at its pruned shape, BN statistics reset); Scratch-B (their
Sec. 4) is :func:`scratch_b_epochs`: ``round(base_epochs * FLOPs(unpruned) / FLOPs(pruned))``,
with ``base_epochs`` the unpruned model's training length (:func:`base_train_epochs`).
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import nn

from .base_model import LoadedModel
from .errors import ConfigError

#: epochs the shipped trained models were trained for (``python tools/train_default.py``, --epochs 3):
#: the Scratch-B budget of a checkpoint pruned from them
KNOWN_TRAIN_EPOCHS = {"tiny_resnet_synthetic": 3}


def reinitialize_(model: nn.Module) -> list[str]:
    """Re-draw every parameter and reset every BatchNorm statistic, in place (the "scratch" of
    Liu et al., ICLR 2019): each module's own ``reset_parameters()`` (``_reset_parameters()`` for
    MultiheadAttention) and ``reset_running_stats()``, so each layer gets its usual init at its
    pruned shape. Parameters no module resets (a ViT's class token and position embedding) are
    drawn from N(0, 0.02); their names are returned. Draws from torch's global generator."""
    covered: set[int] = set()
    for m in model.modules():
        reset = getattr(m, "reset_parameters", None) or getattr(m, "_reset_parameters", None)
        if callable(reset):
            reset()
            covered.update(id(p) for p in m.parameters(recurse=False))
        stats = getattr(m, "reset_running_stats", None)
        if callable(stats):
            stats()
    fallback = []
    with torch.no_grad():
        for name, p in model.named_parameters():
            if id(p) not in covered:
                nn.init.normal_(p, std=0.02)
                fallback.append(name)
    return fallback


def base_train_epochs(loaded: LoadedModel, given: Optional[int] = None) -> tuple[int, str]:
    """(epochs the *unpruned* model was trained for, where that number came from) for Scratch-B:
    ``given`` (--base-epochs), the checkpoint's ``base_train_epochs`` meta, the shipped models'
    known recipe, or an unpruned checkpoint's own ``train_epochs``."""
    if given is not None:
        return int(given), "--base-epochs"
    meta = loaded.meta or {}
    if meta.get("base_train_epochs"):
        return int(meta["base_train_epochs"]), "checkpoint meta base_train_epochs"
    spec = (loaded.plan.model_id if loaded.plan is not None else loaded.model_id or {}).get("spec")
    if spec in KNOWN_TRAIN_EPOCHS:
        return KNOWN_TRAIN_EPOCHS[spec], f"{spec} was trained for {KNOWN_TRAIN_EPOCHS[spec]} epochs"
    unpruned = loaded.plan is None or not loaded.plan.kept
    if unpruned and meta.get("train_epochs"):
        return int(meta["train_epochs"]), "checkpoint meta train_epochs"
    raise ConfigError(f"--scratch-b needs the epochs the unpruned model {spec or '(unnamed)'} was trained for, and "
                      "neither the checkpoint (meta base_train_epochs) nor a known recipe records them: pass "
                      "--base-epochs N (or --epochs E for a fixed budget)")


def scratch_b_epochs(loaded: LoadedModel, base_epochs: int, input_size: int) -> tuple[int, dict[str, Any]]:
    """Scratch-B (Liu et al. 2019, Sec. 4): ``round(base_epochs * FLOPs(unpruned) / FLOPs(pruned))``,
    at least 1; the unpruned network is rebuilt from the plan's model id. Returns (epochs, the numbers)."""
    from .base_model import build_from_id
    from .counting import summarize

    x = torch.zeros(1, 3, input_size, input_size)
    pruned = summarize(loaded.model, x)["flops"]
    if loaded.plan is not None and loaded.plan.kept:
        base_model, _ = build_from_id(loaded.plan.model_id, source="this checkpoint")
        base = summarize(base_model.eval(), x)["flops"]
    else:
        base = pruned
    ratio = base / max(pruned, 1)
    epochs = max(1, int(round(base_epochs * ratio)))
    return epochs, {"base_epochs": base_epochs, "flops_unpruned": int(base), "flops_pruned": int(pruned),
                    "flops_ratio": ratio}
