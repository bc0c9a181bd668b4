"""The criterion registry, in a module of its own and free of PyTorch: the built-in criteria are
declared here by lazy path (imported when a search first asks for one), so listing them -- as
``hwprune prune --help`` does -- imports nothing heavy. A criterion of your own registers with
``@CRITERIA.register("name")`` or ``CRITERIA.add("name", "pkg.module:function")``."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ..registry import Registry

if TYPE_CHECKING:
    import torch

Criterion = Callable[..., "torch.Tensor"]
CRITERIA: Registry[Criterion] = Registry("importance criterion")


def list_criteria() -> list[str]:
    return CRITERIA.list()


def get_criterion(name: str) -> Criterion:
    return CRITERIA.get(name)


# The built-in criteria (name -> "module:function"): data-free magnitude criteria, then the
# data-driven ones that need a calibration loader.
for _name, _target in (("l1", "magnitude:l1"), ("l2", "magnitude:l2"), ("random", "magnitude:random"),
                       ("fpgm", "magnitude:fpgm"), ("bn-gamma", "magnitude:bn_gamma"),
                       ("act-mean", "data_driven:act_mean"), ("act-std", "data_driven:act_std"),
                       ("apoz", "data_driven:apoz"), ("fisher", "data_driven:fisher"),
                       ("hrank", "data_driven:hrank"), ("taylor", "data_driven:taylor")):
    CRITERIA.add(_name, f"hwprune.importance.{_target}")
del _name, _target
