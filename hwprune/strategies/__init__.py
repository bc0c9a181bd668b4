"""Width-search strategies: decide how many channels each group keeps.

A strategy is a callable ``(ctx: SearchContext) -> dict[group name, width]`` registered in
:data:`STRATEGIES` (:mod:`.registry`). Which channels are kept is then decided by the importance
criterion.
"""
from __future__ import annotations

from .registry import STRATEGIES, list_strategies
from . import amc, evolution, global_threshold, halp, netadapt, sensitivity, uniform  # noqa: F401  (register the built-ins)

__all__ = ["STRATEGIES", "list_strategies"]
