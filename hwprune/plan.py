"""Pruning plans (what to keep) and ``apply`` (physically remove the rest).

A plan is plain JSON: per channel group the kept channel indices, plus the model id, the input
shape it was traced with and provenance (strategy, budget, table, seed). ``apply`` returns a new,
smaller dense ``nn.Module``; the input model is left untouched.
"""
from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .errors import PlanMismatchError
from .graph import ChannelGraph
from .jsonio import write_json

PLAN_FORMAT = "hwprune-plan"
PLAN_VERSION = 1


@dataclass
class PruningPlan:
    model_id: dict[str, Any]
    input_shape: list[int]
    kept: dict[str, list[int]]
    widths_before: dict[str, int] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)

    @property
    def widths(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.kept.items()}

    def to_dict(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "version": PLAN_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PruningPlan":
        if d.get("format") != PLAN_FORMAT:
            raise PlanMismatchError(f"not an hwprune plan (format={d.get('format')!r})")
        if d.get("version") != PLAN_VERSION:
            raise PlanMismatchError(f"plan version {d.get('version')} is not supported (expected {PLAN_VERSION})")
        return cls(model_id=d["model_id"], input_shape=list(d["input_shape"]),
                   kept={k: [int(i) for i in v] for k, v in d["kept"].items()},
                   widths_before={k: int(v) for k, v in d.get("widths_before", {}).items()},
                   provenance=d.get("provenance", {}), ignore=list(d.get("ignore", [])))

    def save(self, path: str) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str) -> "PruningPlan":
        try:
            with open(path) as f:
                return cls.from_dict(json.load(f))
        except (OSError, ValueError, KeyError) as e:
            raise PlanMismatchError(f"cannot read plan {path!r}: {e}") from e


def example_input(input_shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    return torch.randn(*input_shape)


def apply(model: nn.Module, plan: PruningPlan, inplace: bool = False) -> nn.Module:
    """Return a copy of ``model`` with every channel not kept by ``plan`` removed.

    Raises :class:`PlanMismatchError` when the plan names groups the model lacks or widths differ
    from the plan's recorded ``widths_before`` (the plan was made for another model).
    """
    target = model if inplace else copy.deepcopy(model)
    graph = ChannelGraph(target, example_input(plan.input_shape), ignore=plan.ignore)
    names = {g.name: g for g in graph.groups}
    unknown = [k for k in plan.kept if k not in names]
    if unknown:
        raise PlanMismatchError(
            f"plan names {len(unknown)} channel groups the model lacks (e.g. {unknown[:3]}); "
            f"was it made for model {plan.model_id.get('spec')!r}?"
        )
    for k, w in plan.widths_before.items():
        if k in names and names[k].width != w:
            raise PlanMismatchError(
                f"group {k!r} has width {names[k].width} in this model but {w} in the plan; "
                "the plan was made for a different model or input"
            )
    graph.prune_(plan.kept)
    target.eval()
    return target
