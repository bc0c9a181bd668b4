"""Importance criteria: callables ``(graph, group, calib) -> 1-D scores`` (higher = keep).

Registered by name in :data:`CRITERIA` (:mod:`.registry`, which declares the built-ins by lazy
path: importing this package imports neither PyTorch nor the criteria). Data-free criteria ignore ``calib``;
data-driven ones (taylor, fisher, apoz, act-mean, act-std, hrank) need a calibration loader and
raise a ConfigError naming the fix when it is missing.
"""
from __future__ import annotations

from .registry import CRITERIA, Criterion, get_criterion, list_criteria

__all__ = ["CRITERIA", "Criterion", "get_criterion", "list_criteria"]
