"""Width-search strategies: decide how many channels each group keeps.

A strategy is a callable ``(ctx: SearchContext) -> dict[group name, width]`` registered in
:data:`STRATEGIES`. Which channels are kept is then decided by the importance criterion.
"""
from __future__ import annotations

from typing import Callable

from ..registry import Registry

STRATEGIES: Registry[Callable] = Registry("strategy")


def list_strategies() -> list[str]:
    return STRATEGIES.list()


from . import amc, evolution, global_threshold, halp, netadapt, sensitivity, uniform  # noqa: E402,F401
