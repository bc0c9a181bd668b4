"""``PruneConfig``: what ``hwprune prune`` searches and how it checks the result (a config
dataclass validated on construction, so bad values fail before any work)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import ConfigError


def check_max_prune(value: float) -> None:
    """``--max-prune``: a fraction in (0, 1] (ConfigError naming the value and the fix otherwise)."""
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"max-prune {value} is out of range; give the largest fraction of a group's channels a "
                          "search may remove, in (0, 1], e.g. 0.75 (default 1: only --min-width bounds it)")


@dataclass
class PruneConfig:
    """What to prune and how. Validated on construction so bad values fail before any work.

    ``options`` holds strategy knobs (``amc_episodes``, ``netadapt_decay``, ``evo_pop``, ...), checked
    against the strategy's options dataclass (:func:`hwprune.strategies.check_options`): its own are
    coerced and range-checked, another strategy's are kept but ignored, an unknown name is an error.
    """

    strategy: str = "uniform"
    ratio: Optional[float] = None
    criterion: str = "l1"
    # widths are multiples of this; None: the grid of the devices the budgets' tables describe, else this
    # machine's for ``backend``, else 8 (hwprune.search.with_default_align; the CLI's --align default)
    align: Optional[int] = None
    min_width: int = 8
    max_prune: float = 1.0  # no search removes more than this fraction of any group's channels
    batch: int = 1
    input_size: Optional[int] = None
    ignore: tuple[str, ...] = ()
    seed: int = 0
    budget: Optional[str] = None  # the first budget, BUDGET[@TABLE] (hwprune.budget.parse_bound_budget)
    more_budgets: tuple[str, ...] = ()  # further budgets, each on its own table/device: all are met (issue #20)
    options: dict[str, Any] = field(default_factory=dict)
    backend: Optional[str] = None  # closed loop: measure the result on this backend
    threads: int = 2
    closed_loop_rounds: int = 3  # re-searches with a tightened target at most this many times
    tolerance: float = 0.03  # measured latency may exceed the budget by this fraction
    # a result measured more than this fraction under its budget is searched again with the target
    # loosened, to spend the latency the user allowed (0: keep the first result that meets it)
    spend_band: float = 0.10
    finetune_epochs: int = 0
    finetune_lr: float = 0.01
    distill: bool = False
    iterative: int = 1  # reach the budget in this many cut + fine-tune steps (hwprune.iterative)
    iterative_epochs: int = 1  # fine-tune epochs between iterative steps
    sparsity: Optional[str] = None  # "2:4": ASP masks after the channel cut, kept fixed in fine-tuning (hwprune.sparsity)
    progress: bool = True
    executor: str = "local"  # where independent candidates are evaluated: local | ray (hwprune.executor)
    ray_address: Optional[str] = None  # ray: auto | HOST:PORT (None: join a running ray.init or start one here)
    worker_threads: int = 1  # torch threads per executor worker (ray), so workers do not fight over cores
    precision: str = "fp32"  # int8: spend an int8 table, measure the quantized result (hwprune.int8_budget)
    budget_ref: str = "fp32"  # int8: a relative budget is a share of the fp32 (default) or int8 unpruned model

    def __post_init__(self):
        if self.ratio is not None and not (0.0 <= self.ratio < 1.0):
            raise ConfigError(f"ratio {self.ratio} is out of range; use a fraction of channels to remove in [0, 1), e.g. 0.5")
        if self.align is not None and self.align < 1:
            raise ConfigError(f"align {self.align} must be >= 1 (8 suits tensor cores and SIMD)")
        if self.min_width < 1:
            raise ConfigError(f"min-width {self.min_width} must be >= 1")
        check_max_prune(self.max_prune)
        if self.batch < 1:
            raise ConfigError(f"batch {self.batch} must be >= 1")
        if self.budget is not None:
            self.more_budgets = tuple(self.more_budgets)
            self.budget_list()  # malformed -> ConfigError now, not after loading the model
            if self.ratio is not None:
                raise ConfigError("give either --ratio or --budget, not both")
        elif self.more_budgets:
            raise ConfigError("more_budgets without a first budget: put the first one in budget")
        if self.executor not in ("local", "ray"):
            raise ConfigError(f"executor {self.executor!r} is unknown; use local (default) or ray")
        if self.ray_address is not None and self.executor != "ray":
            raise ConfigError(f"--ray-address {self.ray_address} is given but the executor is {self.executor}; "
                              "add --executor ray")
        if self.worker_threads < 1:
            raise ConfigError(f"worker threads {self.worker_threads} must be >= 1")
        if self.sparsity is not None:
            from .sparsity import parse_pattern

            parse_pattern(self.sparsity)  # 3:4, "2-4" -> ConfigError naming the valid values
            if self.iterative > 1:
                raise ConfigError(f"--sparsity {self.sparsity} with --iterative {self.iterative}: the iterative steps "
                                  "fine-tune dense; prune iteratively first, then run hwprune prune --model "
                                  f"OUT/pruned.pt --sparsity {self.sparsity} --finetune-epochs E")
        if self.threads < 1:
            raise ConfigError(f"threads {self.threads} must be >= 1")
        from .int8_budget import check_precision

        check_precision(self.precision, self.backend, self.budget_ref)
        if self.precision == "int8" and (self.more_budgets or (self.budget and "@" in self.budget)):
            raise ConfigError("--precision int8 takes one budget without @TABLE (the int8 table is found or profiled); "
                              "for one model on several devices, some of them int8, leave --precision out and bind "
                              "each device's table: --budget 0.5x@FP32_TABLE --budget 4ms@INT8_TABLE (or --budget-ref "
                              "int8 for shares of the int8 unpruned model)")
        if self.closed_loop_rounds < 0:
            raise ConfigError(f"closed-loop rounds {self.closed_loop_rounds} must be >= 0")
        if not (0 <= self.spend_band < 1):
            raise ConfigError(f"spend band {self.spend_band} must be a fraction in [0, 1), e.g. 0.10 (0 disables it)")
        if not (0 <= self.tolerance < 1):
            raise ConfigError(f"tolerance {self.tolerance} must be a fraction in [0, 1), e.g. 0.03")
        if self.iterative < 1:
            raise ConfigError(f"--iterative {self.iterative} must be >= 1 (1: one-shot, the default)")
        if self.iterative > 1 and self.budget is None:
            raise ConfigError(f"--iterative {self.iterative} spreads a budget over steps: pass --budget (e.g. 0.5x, "
                              "50%flops) instead of --ratio")
        if self.iterative_epochs < 1:
            raise ConfigError(f"--iterative-epochs {self.iterative_epochs} must be >= 1")
        if self.iterative > 1 and self.precision == "int8":
            raise ConfigError(f"--precision int8 with --iterative {self.iterative}: the iterative steps would search "
                              "fp32 costs; prune iteratively in fp32 (drop --precision), then export the result with "
                              "`hwprune export --precision int8`")
        if self.finetune_epochs < 0:
            raise ConfigError(f"finetune-epochs {self.finetune_epochs} must be >= 0")
        self.ignore = tuple(self.ignore)
        from .strategies import check_options

        self.options = check_options(self.strategy, self.options)  # also rejects an unknown strategy

    def budget_list(self) -> list:
        """Every budget as a typed list of :class:`hwprune.budget.BoundBudget` (first: ``budget``)."""
        from .budget import parse_budgets

        return parse_budgets([self.budget, *self.more_budgets]) if self.budget is not None else []
