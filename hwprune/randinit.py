"""Give a random-init model outputs with spread, so checks on its outputs can fail.

torchvision initialises its classifiers for training, not for being looked at untrained: in eval
mode every BatchNorm divides by its initial running variance 1, and the kaiming fan-out init of a
depthwise conv scales its output by about 1/sqrt(width). Through the depthwise blocks of
EfficientNet, MobileNetV2/V3 and MNASNet the activations shrink stage by stage, and a random
efficientnet_b0 at 64x64 outputs logits of ~1e-14 (ViT goes further: its zero-initialised head
outputs exactly 0). An ONNX parity check (or any output comparison) on such a model proves
nothing. :func:`give_spread_` fixes the model, not the check: it re-estimates BatchNorm running
statistics on random inputs (EagleEye's adaptive BN, :func:`hwprune.evaluate.recalibrate_bn_`),
so each BatchNorm again outputs ~unit variance, and re-initialises the classifier if the output
still has no spread. The weights of every conv and linear layer but that classifier are kept.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import nn

DEFAULT_MIN_SPREAD = 1e-2  # output std a random-init model is given (a trained classifier's logits: ~1..10)


def output_spread(out) -> float:
    """Spread of an output: the standard deviation of all its elements (float64)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    a = out.detach().double().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, dtype=np.float64)
    return float(a.std()) if a.size else 0.0


def final_linear(model: nn.Module, x: torch.Tensor) -> tuple[Optional[str], Optional[torch.Tensor]]:
    """(name, input) of the ``nn.Linear`` whose output *is* the model's output (the classifier),
    or (None, None) when the model does not end in one (SqueezeNet's conv head, post-processing)."""
    calls: list = []
    hooks = [m.register_forward_hook(lambda mod, i, o, n=n: calls.append((n, i[0], o)))
             for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            out = model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    if isinstance(out, (tuple, list)):
        out = out[0]
    if calls and calls[-1][2] is out:
        return calls[-1][0], calls[-1][1]
    return None, None


def give_spread_(model: nn.Module, input_size: int, min_spread: float = DEFAULT_MIN_SPREAD, batch: int = 8,
                 batches: int = 2, seed: int = 0) -> dict:
    """Make a random-init ``model`` output logits with a standard deviation >= ``min_spread`` on
    random ``input_size`` inputs, in place; a model that already has it is left untouched.

    Steps, each only while the spread is still short: 1. re-estimate every BatchNorm's running
    statistics on ``batches`` random batches of ``batch`` images; 2. re-initialise the final
    classifier ``nn.Linear`` (normal, std 1/sqrt(in_features), zero bias). Returns what was done
    (``spread_before``, ``spread_after``, ``bn_recalibrated``, ``head_reinit``), for reports."""
    from .evaluate import recalibrate_bn_

    g = torch.Generator().manual_seed(seed)
    probe = torch.randn(2, 3, input_size, input_size, generator=g)

    def spread() -> float:
        with torch.no_grad():
            return output_spread(model.eval()(probe))

    done = {"spread_before": spread(), "bn_recalibrated": 0, "head_reinit": None}
    if done["spread_before"] < min_spread:
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if bns:
            data = [(torch.randn(batch, 3, input_size, input_size, generator=g), None) for _ in range(batches)]
            recalibrate_bn_(model, data)
            done["bn_recalibrated"] = len(bns)
    if spread() < min_spread:
        name, _ = final_linear(model, probe)
        if name is not None:
            head = model.get_submodule(name)
            with torch.no_grad():
                head.weight.normal_(0.0, 1.0 / math.sqrt(head.in_features), generator=g)
                if head.bias is not None:
                    head.bias.zero_()
            done["head_reinit"] = name
    model.eval()
    done["spread_after"] = spread()
    return done
