"""Importance criteria: callables ``(graph, group, calib) -> 1-D scores`` (higher = keep).

Registered by name in :data:`CRITERIA`. Data-free criteria ignore ``calib``; data-driven ones
(taylor, fisher, apoz, act-mean, act-std, hrank) need a calibration loader and raise a
ConfigError naming the fix when it is missing.
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import torch

from ..registry import Registry

Criterion = Callable[..., torch.Tensor]
CRITERIA: Registry[Criterion] = Registry("importance criterion")


def list_criteria() -> list[str]:
    return CRITERIA.list()


def get_criterion(name: str) -> Criterion:
    return CRITERIA.get(name)


from . import data_driven, magnitude  # noqa: E402,F401  (registers the built-in criteria)
