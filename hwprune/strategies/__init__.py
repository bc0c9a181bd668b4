"""Width-search strategies: decide how many channels each group keeps.

A strategy is a callable ``(ctx: SearchContext) -> dict[group name, width]`` registered in
:data:`STRATEGIES` (:mod:`.registry`) with :func:`register_strategy`, together with its typed options
(a :class:`StrategyOptions` dataclass it reads as ``ctx.options``) and whether it needs an evaluator
and a budget. Which channels are kept is then decided by the importance criterion. The built-ins are
declared by lazy path (:mod:`.registry`): importing this package imports no search and no PyTorch.
"""
from __future__ import annotations

from ._options import StrategyOptions, option
from .registry import (STRATEGIES, StrategySpec, check_options, describe_strategies, get_strategy_spec,
                       list_strategies, option_owners, register_strategy, strategy_options)

__all__ = ["STRATEGIES", "StrategySpec", "StrategyOptions", "option", "register_strategy", "get_strategy_spec",
           "list_strategies", "option_owners", "check_options", "strategy_options", "describe_strategies"]
