"""The strategy registry, in a module of its own and free of PyTorch: the built-in strategies are
declared at the bottom by lazy path with their options (:mod:`.options`), so listing them and their
options -- ``hwprune prune --help`` -- imports no search; a search's module is imported the first
time it runs.

Each entry is a :class:`StrategySpec`: the search function (or its ``"module:function"`` path),
its typed options (a :class:`StrategyOptions` dataclass the function reads as ``ctx.options``) and
whether it needs an evaluator and a budget. :func:`check_options` validates a
``PruneConfig.options`` dict against it.
"""
from __future__ import annotations

import difflib
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Union

from ..errors import ConfigError
from ..registry import Registry, resolve
from ._options import StrategyOptions
from .options import AmcOptions, EvolutionOptions, HalpOptions, NetAdaptOptions, SensitivityOptions


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy: its search function (or ``"module:function"``, imported on first
    use), its options class and what it needs. Calling the spec runs the search
    (``STRATEGIES.get(name)(ctx)``)."""

    name: str
    target: Union[Callable, str]
    options: type[StrategyOptions]
    needs_evaluator: bool
    needs_budget: bool

    @property
    def fn(self) -> Callable:
        """The search function (its module imported now if the target is a path)."""
        return resolve(self.target)

    def __call__(self, ctx) -> dict[str, int]:
        return self.fn(ctx)


STRATEGIES: Registry[StrategySpec] = Registry("strategy")


def register_strategy(name: str, options: type[StrategyOptions] = StrategyOptions, needs_evaluator: bool = False,
                      needs_budget: bool = False, target: Optional[str] = None):
    """Register a search function under ``name`` with its options class. As a decorator it returns
    the function unchanged (so strategies can call each other, as evolution seeds from uniform);
    with ``target`` (``"package.module:function"``, imported the first time the search runs) it
    registers directly, as the built-ins below are."""

    def deco(fn: Union[Callable, str]):
        STRATEGIES.add(name, StrategySpec(name, fn, options, needs_evaluator, needs_budget))
        return fn

    return deco if target is None else deco(target)


def get_strategy_spec(name: str) -> StrategySpec:
    """The spec registered as ``name`` (ConfigError listing the strategies for an unknown one); a
    bare function put in with ``STRATEGIES.register`` reads as a strategy without options."""
    item = STRATEGIES.get(name)
    return item if isinstance(item, StrategySpec) else StrategySpec(name, item, StrategyOptions, False, False)


def list_strategies() -> list[str]:
    return STRATEGIES.list()


def option_owners() -> dict[str, str]:
    """Option name -> the strategy that declares it."""
    return {o: name for name in list_strategies() for o in get_strategy_spec(name).options.names()}


def _valid_text(spec: StrategySpec) -> str:
    names = spec.options.names()
    if not names:
        return f"strategy {spec.name!r} takes no options"
    return f"options of {spec.name}: {', '.join(names)} (`hwprune prune --help` lists their defaults)"


def check_options(strategy: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``options`` (as given to :class:`hwprune.prune.PruneConfig`) for ``strategy``.

    The strategy's own options are coerced to their types and range-checked; an option of another
    strategy is kept but ignored (one options dict can drive several strategies, as benchmarks do);
    a name no strategy declares (a typo) is a ConfigError listing the valid ones. Returns the dict
    with the strategy's own values coerced."""
    spec = get_strategy_spec(strategy)
    if options is None:
        options = {}
    if not isinstance(options, Mapping):
        raise ConfigError(f"options must be a dict of strategy options, e.g. {{'halp_steps': 4}}, not {options!r}")
    own = set(spec.options.names())
    owners = option_owners()
    for k in options:
        if not isinstance(k, str):
            raise ConfigError(f"option name {k!r} must be a string, e.g. {{'halp_steps': 4}}")
        if k not in own and k not in owners:
            close = difflib.get_close_matches(k, list(owners), n=3)
            hint = (" Did you mean " + ", ".join(f"{c!r} (an option of {owners[c]})" for c in close) + "?"
                    if close else "")
            raise ConfigError(f"unknown option {k!r} for strategy {strategy!r}.{hint} {_valid_text(spec)}")
    typed = spec.options(**{k: v for k, v in options.items() if k in own})
    return {k: (getattr(typed, k) if k in own else v) for k, v in options.items()}


def strategy_options(strategy: str, options: Mapping[str, Any]) -> StrategyOptions:
    """``strategy``'s typed options from an options dict (other strategies' entries ignored)."""
    spec = get_strategy_spec(strategy)
    own = set(spec.options.names())
    return spec.options(**{k: v for k, v in options.items() if k in own})


def describe_strategies() -> str:
    """Every strategy, what it needs and its options with defaults and help (``hwprune prune --help``)."""
    lines = []
    for name in list_strategies():
        spec = get_strategy_spec(name)
        needs = ["needs --budget" if spec.needs_budget else "--ratio or --budget"]
        if spec.needs_evaluator:
            needs.append("evaluates candidates: --data, else a data-free stand-in")
        rows = spec.options.describe()
        lines.append(f"  {name} ({'; '.join(needs)})" + ("" if rows else ": no options"))
        for r in rows:
            head = f"    {r['name']}={r['default']}"
            lines += textwrap.wrap(r["help"], width=100, initial_indent=head.ljust(30) + " ",
                                   subsequent_indent=" " * 31, break_on_hyphens=False)
    return "\n".join(lines)


# The built-in strategies, one line each: a new one is its module, its options in .options and a
# line here (or a register_strategy decorator of its own, for a strategy that lives outside hwprune).
register_strategy("amc", AmcOptions, needs_evaluator=True, needs_budget=True, target="hwprune.strategies.amc:amc")
register_strategy("evolution", EvolutionOptions, needs_evaluator=True, needs_budget=True,
                  target="hwprune.strategies.evolution:evolution")
register_strategy("global", needs_budget=True, target="hwprune.strategies.global_threshold:global_threshold")
register_strategy("halp", HalpOptions, needs_budget=True, target="hwprune.strategies.halp:halp")
register_strategy("netadapt", NetAdaptOptions, needs_evaluator=True, needs_budget=True,
                  target="hwprune.strategies.netadapt:netadapt")
register_strategy("sensitivity", SensitivityOptions, needs_evaluator=True, needs_budget=True,
                  target="hwprune.strategies.sensitivity:sensitivity")
register_strategy("uniform", target="hwprune.strategies.uniform:uniform")
