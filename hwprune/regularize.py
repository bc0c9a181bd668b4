"""Regularise, then cut (issue #18 item 3): decide the widths first, train the *unpruned* model
with a penalty on exactly the channels the plan will remove, then cut them with
:func:`hwprune.plan.apply`. By the time they go, they carry (almost) nothing, so the cut barely
changes the network.

Any strategy and any budget decide the plan; the regulariser only reads ``plan.kept`` (kept channel
indices per :class:`~hwprune.graph.ChannelGroup`). Each group's channels are mapped to the layer
slices they own through the channel graph (Torch-Pruning's group items, the same map the cut uses):
output rows (and bias) of Conv/Linear layers, BatchNorm/LayerNorm/GroupNorm affine entries, and
input columns of the layers that read the group.

Three regularisers (``make_regularizer(name, ...)``), all acting on to-be-removed channels only:

- ``slimming`` -- network slimming, Liu et al., "Learning Efficient Convolutional Networks through
  Network Slimming" (ICCV 2017); the seed (Plan, cut, fine-tune) puts it as "if a filter's output
  ends up multiplied by a γ near 0, its contribution to later layers is also near 0 ... an L1
  penalty is added to γ during training". Penalty ``λ Σ_{c removed} |γ_c|`` over every BatchNorm
  on the channel, constant ``λ = 1e-4`` (the paper's default; :data:`SLIMMING_STRENGTH`). The paper
  penalises every γ to *find* the channels to cut; here the plan already chose them, so only theirs.
- ``tpp`` -- Trainability Preserving Pruning, Wang & Fu (ICLR 2023), the seed's Eqs. (3), (5), (6).
  Per Conv/Linear layer whose output channels are in a group, with ``W`` its filters flattened one
  per row and ``m`` the 0/1 mask of kept rows: ``L_gram = ||W Wᵀ ⊙ (1 − m mᵀ)||_F²`` -- "in the
  target gram matrix, all the entries associated with the pruned filters are zero; all the other
  entries stay as they are", i.e. the kept-pruned off-blocks and the pruned-pruned block (so the
  pruned filters' own norms too); the kept-kept block is free ("we propose not to impose any
  regularization on the correlation entries of kept filters"). Plus the BN term "regularize both
  the γ and β of pruned feature map channels to zero": ``L_bn = Σ_{c removed} γ_c² + β_c²``.
  Total ``λ/2 (L_gram + L_bn)``, where "the coefficient λ grows by a predefined constant Δ per K_u
  iterations (up to a ceiling τ)": the seed's Tab. 6 defaults Δ = 1e-4 ("regularization
  granularity"), τ = 1 ("ceiling") and K_u = 10 iterations ("update interval"; 5 on ImageNet), so
  ``λ(t) = min(τ, Δ ⌊t / K_u⌋)``, starting at 0 (:class:`GrowingSchedule`). ``strength`` sets Δ.
  (The seed's equation images are not in its text; the form above is the paper's, and matches the
  authors' code -- masked gram target, growing L2 on the pruned γ and β.) Grouped/depthwise convs
  get the BN term only: their filters read different inputs, so their gram is not a correlation.
- ``group-lasso`` -- group lasso (Yuan & Lin 2006; Wen et al. 2016 for channels), named in the
  seed's overview of regularisation-based pruning: ``λ Σ_{c removed} ||θ_c||₂`` where ``θ_c`` is
  every parameter of the group that belongs to channel ``c`` (filter rows and biases of the layers
  producing it, its norm-layer γ and β, input columns of the layers reading it). ``λ`` *grows* on
  TPP's schedule (:class:`GrowingSchedule`, same Δ, τ, K_u; growing regularisation as in Wang et
  al. ICLR 2021, which TPP follows), so the channels end "rather close to zero" without a large
  penalty on a still-trained network at the start; ``strength`` sets Δ.

:meth:`Regularizer.removed_norm` is the L2 norm of every parameter the cut will remove (all the
slices above), the number that says how much the cut will take away.

:func:`regularize_then_cut` trains through the one training loop (:func:`hwprune.train.train`,
whose ``extra_loss`` hook adds the penalty each step; one step = one schedule iteration) and
returns the cut model and a history (per-epoch penalty, unweighted term, coefficient and removed
norm; the relative change of the outputs the cut causes; accuracy before/after the cut with an
evaluator).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from torch import nn

from . import tp_compat
from .errors import ConfigError, PlanMismatchError
from .graph import ChannelGraph
from .plan import PruningPlan, apply, example_input as plan_example_input

__all__ = ["REGULARIZERS", "SLIMMING_STRENGTH", "TPP_CEILING", "TPP_GRANULARITY", "TPP_INTERVAL", "GrowingSchedule",
           "Regularizer", "check_regularizer", "make_regularizer", "output_change",
           "regularize_then_cut"]

REGULARIZERS = ("slimming", "tpp", "group-lasso")
#: network slimming's λ (Liu et al. 2017)
SLIMMING_STRENGTH = 1e-4
#: TPP Tab. 6: regularization granularity Δ, ceiling τ, update interval K_u (iterations)
TPP_GRANULARITY = 1e-4
TPP_CEILING = 1.0
TPP_INTERVAL = 10

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORM = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@dataclass(frozen=True)
class GrowingSchedule:
    """``λ(t) = min(ceiling, granularity * (t // interval))``: TPP's (and GReg's) growing
    regularisation, from 0 at iteration 0 up to the ceiling, then held there."""

    granularity: float = TPP_GRANULARITY
    ceiling: float = TPP_CEILING
    interval: int = TPP_INTERVAL

    def at(self, iteration: int) -> float:
        return min(self.ceiling, self.granularity * (max(0, int(iteration)) // self.interval))


@dataclass(frozen=True)
class _Slice:
    """Entries of one parameter that belong to removed channels of one group: ``param`` of module
    ``module`` along ``dim`` (0: output rows / norm entries, 1: input columns) at ``index``;
    ``channel`` holds the group channel each index belongs to. ``role``: filter | bias | norm | input."""

    group: str
    module: str
    param: str
    dim: int
    role: str
    index: torch.Tensor
    channel: torch.Tensor
    width: int


def _ints(xs) -> list[int]:
    return [int(getattr(i, "idx", i)) for i in xs]


def _removed_slices(model: nn.Module, plan: PruningPlan, x: torch.Tensor) -> tuple[list[_Slice], dict[str, int]]:
    """Every parameter slice the plan's cut removes, and the removed-channel count per group.
    Reached: Conv/Linear output rows, biases and input columns (grouped convs: rows only), and the
    affine entries of BatchNorm/LayerNorm/GroupNorm. Not reached (left to the cut alone):
    MultiheadAttention's packed projections, handler-cut units and free parameters such as a ViT's
    position embedding."""
    graph = ChannelGraph(model, x, ignore=plan.ignore)
    name_of = {m: n for n, m in model.named_modules()}
    slices: list[_Slice] = []
    removed_count: dict[str, int] = {}
    for gname, keep in plan.kept.items():
        g = graph.group(gname)  # PlanMismatchError names a group the model lacks
        if plan.widths_before.get(gname, g.width) != g.width:
            raise PlanMismatchError(f"group {gname!r} has width {g.width} in this model but "
                                    f"{plan.widths_before[gname]} in the plan; the plan was made for another model")
        removed = sorted(set(range(g.width)) - {int(i) for i in keep})
        if not removed:
            continue
        removed_count[gname] = len(removed)
        # a heads group's units are whole heads: its slices are the heads' channels, each counted
        # under its head
        per = g.head_dim if g.kind == "heads" else 1
        rset = set(graph.head_channels(g, removed)) if g.kind == "heads" else set(removed)
        seen: set[tuple[str, str]] = set()
        for item in graph.tp_group(gname):
            mod = item.dep.target.module
            if not isinstance(mod, nn.Module) or mod not in name_of:
                continue
            side = tp_compat.dep_side(item.dep)
            key = (name_of[mod], side)
            if key in seen:
                continue
            seen.add(key)
            local, roots = _ints(item.idxs), _ints(getattr(item, "root_idxs", None) or item.idxs)
            pairs = [(li, r) for li, r in zip(local, roots) if r in rset]
            if not pairs:
                continue
            idx = torch.tensor([p[0] for p in pairs], dtype=torch.long)
            ch = torch.tensor([p[1] // per for p in pairs], dtype=torch.long)

            def mk(param: str, dim: int, role: str, mname: str = name_of[mod]) -> _Slice:
                return _Slice(gname, mname, param, dim, role, idx, ch, g.width)

            if isinstance(mod, (*_CONV, nn.Linear)):
                if side == "out":
                    slices.append(mk("weight", 0, "filter"))
                    if mod.bias is not None:
                        slices.append(mk("bias", 0, "bias"))
                elif getattr(mod, "groups", 1) == 1:  # a grouped conv's input channels are its output rows' business
                    slices.append(mk("weight", 1, "input"))
            elif isinstance(mod, _NORM) and side == "out" and getattr(mod, "weight", None) is not None \
                    and mod.weight.dim() == 1:
                slices.append(mk("weight", 0, "norm"))
                if mod.bias is not None:
                    slices.append(mk("bias", 0, "norm"))
    return slices, removed_count


def _take(model: nn.Module, s: _Slice) -> torch.Tensor:
    p = getattr(model.get_submodule(s.module), s.param)
    return p.index_select(s.dim, s.index.to(p.device))


def _per_index_sq(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sum of squares per index along ``dim`` (one value per channel entry)."""
    return t.pow(2).transpose(0, dim).reshape(t.shape[dim], -1).sum(1)


class Regularizer:
    """A penalty on the channels a plan will cut. ``penalty(model)`` is the differentiable scalar
    added to the loss (current coefficient times :meth:`term`); ``step(iteration)`` advances a
    growing coefficient; ``removed_norm(model)`` is the L2 norm of everything the cut removes."""

    name = "regularizer"

    def __init__(self, slices: list[_Slice], removed: dict[str, int], strength: float,
                 schedule: Optional[GrowingSchedule] = None) -> None:
        self.slices, self.removed, self.strength, self.schedule = slices, removed, float(strength), schedule
        self.coefficient = self.strength if schedule is None else schedule.at(0)
        self.unreached: list[str] = []  # groups with removed channels it has no parameter of

    def step(self, iteration: int) -> float:
        """Set the coefficient for ``iteration`` (a no-op for a constant one); returns it."""
        if self.schedule is not None:
            self.coefficient = self.schedule.at(iteration)
        return self.coefficient

    def term(self, model: nn.Module) -> torch.Tensor:
        """The regulariser without its coefficient (differentiable scalar)."""
        raise NotImplementedError

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return self.coefficient * self.term(model)

    def removed_norm(self, model: nn.Module) -> float:
        with torch.no_grad():
            return math.sqrt(sum(float(_take(model, s).pow(2).sum()) for s in self.slices))

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "strength": self.strength,
                             "removed_channels": sum(self.removed.values())}
        if self.schedule is not None:
            d["schedule"] = {"granularity": self.schedule.granularity, "ceiling": self.schedule.ceiling,
                             "interval": self.schedule.interval}
        return d

    @staticmethod
    def _zero(model: nn.Module) -> torch.Tensor:
        p = next(model.parameters(), None)
        return torch.zeros((), device=p.device if p is not None else None)


class SlimmingRegularizer(Regularizer):
    """Liu et al. 2017: ``λ Σ |γ_c|`` over the BatchNorm scales of removed channels (constant λ)."""

    name = "slimming"

    def __init__(self, slices, removed, strength, bn_modules: frozenset = frozenset()) -> None:
        super().__init__(slices, removed, strength)
        self._gammas = [s for s in slices if s.role == "norm" and s.param == "weight" and s.module in bn_modules]

    def term(self, model: nn.Module) -> torch.Tensor:
        total = self._zero(model)
        for s in self._gammas:
            total = total + _take(model, s).abs().sum()
        return total


class TPPRegularizer(Regularizer):
    """TPP (Wang & Fu): ``λ/2 (||W Wᵀ ⊙ (1 − m mᵀ)||_F² + Σ_removed γ² + β²)``, λ growing."""

    name = "tpp"

    def __init__(self, slices, removed, strength, schedule=None, bn_modules: frozenset = frozenset(),
                 grouped: frozenset = frozenset()) -> None:
        super().__init__(slices, removed, strength, schedule)
        rows: dict[str, set[int]] = {}
        for s in slices:
            if s.role == "filter" and s.module not in grouped:
                rows.setdefault(s.module, set()).update(s.index.tolist())
        self._pruned_rows = {m: torch.tensor(sorted(r), dtype=torch.long) for m, r in rows.items()}
        self._bn = [s for s in slices if s.role == "norm" and s.module in bn_modules]

    def term(self, model: nn.Module) -> torch.Tensor:
        total = self._zero(model)
        for mname, rows in self._pruned_rows.items():
            w = model.get_submodule(mname).weight
            w = w.reshape(w.shape[0], -1)
            r = rows.to(w.device)
            g_r = w.index_select(0, r) @ w.t()  # rows of W Wᵀ at pruned filters (|R| x n)
            # entries in a pruned row or column: both off-blocks once each, the pruned block once
            total = total + 2 * g_r.pow(2).sum() - g_r.index_select(1, r).pow(2).sum()
        for s in self._bn:
            total = total + _take(model, s).pow(2).sum()
        return total

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return 0.5 * self.coefficient * self.term(model)


class GroupLassoRegularizer(Regularizer):
    """``λ Σ_{c removed} ||θ_c||₂``, θ_c every parameter of channel c in its group; λ growing."""

    name = "group-lasso"

    def term(self, model: nn.Module) -> torch.Tensor:
        sq: dict[str, torch.Tensor] = {}
        for s in self.slices:
            v = _per_index_sq(_take(model, s), s.dim)
            acc = sq.get(s.group)
            if acc is None:
                acc = torch.zeros(s.width, device=v.device, dtype=v.dtype)
            sq[s.group] = acc.index_add(0, s.channel.to(v.device), v)
        total = self._zero(model)
        for acc in sq.values():  # only removed channels have entries; one exactly 0 adds 0 (and no inf gradient)
            total = total + acc[acc > 0].sqrt().sum()
        return total


def check_regularizer(name: str, strength: Optional[float] = None) -> None:
    """ConfigError for an unknown regulariser name (listing the valid ones) or a negative strength."""
    if name not in REGULARIZERS:
        raise ConfigError(f"unknown regulariser {name!r}; choose one of {', '.join(REGULARIZERS)}")
    if strength is not None and (not isinstance(strength, (int, float)) or not math.isfinite(strength)
                                 or strength < 0):
        raise ConfigError(f"regularisation strength {strength!r} must be a finite number >= 0 "
                          f"(default: {SLIMMING_STRENGTH} for slimming, Δ = {TPP_GRANULARITY} per {TPP_INTERVAL} "
                          "steps for tpp and group-lasso)")


def make_regularizer(name: str, model: nn.Module, plan: PruningPlan, example_input: Optional[torch.Tensor] = None,
                     strength: Optional[float] = None) -> Regularizer:
    """Regulariser ``name`` (one of :data:`REGULARIZERS`) on the channels ``plan`` removes from
    ``model``. ``strength``: slimming's constant λ (default 1e-4), or the growth Δ per K_u = 10
    steps of tpp's and group-lasso's λ (default 1e-4, ceiling 1). Raises ConfigError for an
    unknown name, a negative strength, or a plan whose removed channels the regulariser cannot reach."""
    check_regularizer(name, strength)
    x = example_input if example_input is not None else plan_example_input(plan.input_shape)
    was = model.training
    try:
        slices, removed = _removed_slices(model, plan, x)
    finally:
        model.train(was)
    bn = frozenset(n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    grouped = frozenset(n for n, m in model.named_modules() if isinstance(m, _CONV) and m.groups > 1)
    if name == "slimming":
        reg: Regularizer = SlimmingRegularizer(slices, removed, SLIMMING_STRENGTH if strength is None else strength,
                                               bn_modules=bn)
        reached = {s.group for s in reg._gammas}
        what = "a BatchNorm over them (slimming penalises BN γ)"
    else:
        sched = GrowingSchedule(granularity=TPP_GRANULARITY if strength is None else float(strength))
        if name == "tpp":
            reg = TPPRegularizer(slices, removed, sched.granularity, sched, bn_modules=bn, grouped=grouped)
            reached = {s.group for s in slices if (s.role == "filter" and s.module not in grouped)
                       or (s.role == "norm" and s.module in bn)}
            what = "a Conv/Linear producing them or a BatchNorm over them"
        else:
            reg = GroupLassoRegularizer(slices, removed, sched.granularity, sched)
            reached = {s.group for s in slices}
            what = "a Conv, Linear or norm-layer parameter"
    missed = sorted(set(removed) - reached)
    if missed and not reached:
        raise ConfigError(f"{name} cannot act on the channels this plan cuts: none of the groups "
                          f"{', '.join(missed[:4])}{' ...' if len(missed) > 4 else ''} has {what}; "
                          f"use {'group-lasso' if name != 'group-lasso' else 'another plan'}")
    reg.unreached = missed
    return reg


def _first_batch(data) -> Optional[torch.Tensor]:
    """A fixed batch of inputs (calibration split first: no augmentation) to compare outputs on."""
    for split in ("calib", "val"):
        loader = getattr(data, split, None)
        if loader is not None:
            try:
                return next(iter(loader))[0]
            except StopIteration:
                continue
    return None


def output_change(before: nn.Module, after: nn.Module, x: torch.Tensor) -> float:
    """``||f_after(x) − f_before(x)|| / ||f_before(x)||`` in eval mode: how much a cut moved the outputs."""
    before.eval()
    after.eval()
    with torch.no_grad():
        a, b = before(x), after(x)
    return float((b - a).norm() / a.norm().clamp_min(1e-12))


def regularize_then_cut(loaded, plan: PruningPlan, data, name: str, epochs: int = 1, strength: Optional[float] = None,
                        lr: float = 0.01, seed: int = 0, progress: bool = True,
                        evaluator: Optional[Callable[[nn.Module], float]] = None) -> tuple[nn.Module, dict[str, Any]]:
    """Train a copy of the *unpruned* model (``loaded.model``, or an ``nn.Module``) on ``data`` for
    ``epochs`` epochs with CE + regulariser ``name`` on the channels ``plan`` removes, then cut:
    returns ``(hwprune.plan.apply(trained, plan), history)``. ``loaded`` itself is not changed.

    ``lr`` is the one-cycle peak of :func:`hwprune.train.train` (hwprune's fine-tune default 0.01;
    TPP's own pruning phase holds a fixed 1e-3 for far more iterations). ``history``: the
    regulariser's settings, per-epoch ``penalty`` (mean of what was added to the loss), and at the
    start and after each epoch ``term`` (unweighted), ``coefficient`` and ``removed_norm``;
    ``output_change`` (relative change of the outputs the cut causes, on a fixed batch) and, with
    ``evaluator(model) -> accuracy``, ``accuracy`` ``{before_cut, after_cut}``."""
    from .train import train

    check_regularizer(name, strength)
    if data is None or getattr(data, "train", data) is None:
        raise ConfigError(f"regularising with {name} trains the model: pass --data synthetic (or imagefolder:PATH ...)")
    if not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"--reg-epochs {epochs!r} must be an integer >= 1")
    if getattr(getattr(loaded, "plan", None), "kept", None):
        raise ConfigError("this checkpoint is already pruned; regularise-then-cut starts from the unpruned model")
    model = copy.deepcopy(getattr(loaded, "model", loaded))
    reg = make_regularizer(name, model, plan, plan_example_input(plan.input_shape), strength)
    loader = getattr(data, "train", data)
    per_epoch = len(loader)

    def snapshot(m: nn.Module) -> None:
        with torch.no_grad():
            hist["term"].append(float(reg.term(m)))
        hist["coefficient"].append(reg.coefficient)
        hist["removed_norm"].append(reg.removed_norm(m))

    hist: dict[str, Any] = {**reg.describe(), "epochs": epochs, "lr": lr, "unreached_groups": reg.unreached,
                            "penalty": [], "term": [], "coefficient": [], "removed_norm": []}
    snapshot(model)
    state = {"step": 0, "sum": 0.0}

    def extra_loss(m: nn.Module) -> torch.Tensor:
        it = state["step"]
        if it and it % per_epoch == 0:  # the first step of an epoch: the last one's end state
            hist["penalty"].append(state["sum"] / per_epoch)
            state["sum"] = 0.0
            snapshot(m)
        reg.step(it)
        p = reg.penalty(m)
        state["step"], state["sum"] = it + 1, state["sum"] + float(p.detach())
        return p

    out = train(model, data, epochs=epochs, lr=lr, seed=seed, progress=progress, extra_loss=extra_loss)
    hist["penalty"].append(state["sum"] / max(1, state["step"] - per_epoch * (epochs - 1)))
    snapshot(model)
    hist["train_loss"] = out.get("loss", [])
    model.eval()
    pruned = apply(model, plan)
    x = _first_batch(data)
    if x is not None:
        hist["output_change"] = output_change(model, pruned, x)
    if evaluator is not None:
        hist["accuracy"] = {"before_cut": float(evaluator(model)), "after_cut": float(evaluator(pruned))}
    return pruned, hist
