"""The strategy registry, in a module of its own: the strategy modules register into it and the
package ``__init__`` imports them to fill it, so neither imports the other (an import cycle)."""
from __future__ import annotations

from typing import Callable

from ..registry import Registry

STRATEGIES: Registry[Callable] = Registry("strategy")


def list_strategies() -> list[str]:
    return STRATEGIES.list()
