"""The built-in strategies' typed options, one :class:`StrategyOptions` dataclass per strategy.

They live apart from the searches (which import PyTorch) so that the registry can declare every
built-in strategy with its options without importing it, and ``hwprune prune --help`` lists them
instantly; each search reads its own as ``ctx.options`` (:mod:`.registry` pairs them).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ._options import StrategyOptions, option


# amc (hwprune.strategies.amc)
@dataclass
class AmcOptions(StrategyOptions):
    amc_episodes: int = option(40, "episodes (one pass of the agent over the groups each)", ge=1)
    amc_warmup: Optional[int] = option(None, "random episodes that fill the replay buffer before the agent acts "
                                             "(default: a quarter of amc_episodes, at least 1)",
                                       ge=0, default_text="episodes/4", example=10)
    amc_sigma: float = option(0.5, "exploration noise, relative to amc_max_prune", ge=0)
    amc_decay: float = option(0.95, "decay of the noise per episode after the warm-up", gt=0, le=1)
    amc_max_prune: float = option(0.9, "largest fraction of a group's channels the agent may remove", gt=0, le=1)


# evolution (hwprune.strategies.evolution)
@dataclass
class EvolutionOptions(StrategyOptions):
    evo_pop: int = option(16, "NSGA-III population (candidates per generation)", ge=4)
    evo_gens: int = option(8, "generations", ge=1)
    evo_reconstruct: bool = option(True, "least-squares reconstruction of each candidate's weights on the "
                                         "calibration batches before it is evaluated (only with --data)")
    evo_fill: bool = option(True, "spend the budget: grow the chosen member's widths, most important channels "
                                  "per unit of cost first, while it still meets the budget")


# halp (hwprune.strategies.halp)
@dataclass
class HalpOptions(StrategyOptions):
    halp_bins: int = option(2000, "latency bins of the knapsack DP (more: finer and slower)", ge=1)
    halp_steps: int = option(4, "progressively tighter steps toward the budget", ge=1)
    halp_batches: int = option(32, "minibatches the Taylor importance is averaged over (training data when "
                                   "given, else the calibration batches again)", ge=1)
    halp_momentum: float = option(0.9, "momentum of the importance's moving average over minibatches", ge=0, lt=1)
    halp_max_prune: float = option(0.625, "largest fraction of a group's channels halp removes while the budget is "
                                          "reachable with it (relaxed by 1/8 steps up to --max-prune when not; 1: "
                                          "no floor)", gt=0, le=1)


# netadapt (hwprune.strategies.netadapt)
@dataclass
class NetAdaptOptions(StrategyOptions):
    netadapt_initial: float = option(0.04, "first iteration's cost decrement, a fraction of the unpruned cost",
                                     gt=0, le=1)
    netadapt_decay: float = option(0.96, "decay of the decrement per iteration", gt=0, le=1)
    netadapt_ft_steps: int = option(0, "short fine-tune steps before each proposal is evaluated (needs --data)",
                                    ge=0)


# sensitivity (hwprune.strategies.sensitivity)
@dataclass
class SensitivityOptions(StrategyOptions):
    sens_points: int = option(5, "widths per group's accuracy curve (always the smallest and the full width)",
                              ge=2)
