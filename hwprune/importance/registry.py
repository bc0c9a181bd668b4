"""The criterion registry, in a module of its own: the criterion modules register into it and the
package ``__init__`` imports them to fill it, so neither imports the other (an import cycle)."""
from __future__ import annotations

from typing import Callable

import torch

from ..registry import Registry

Criterion = Callable[..., torch.Tensor]
CRITERIA: Registry[Criterion] = Registry("importance criterion")


def list_criteria() -> list[str]:
    return CRITERIA.list()


def get_criterion(name: str) -> Criterion:
    return CRITERIA.get(name)
