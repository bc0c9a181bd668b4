"""Unstructured accuracy baselines (``hwprune baseline``): one-shot magnitude pruning and the
lottery ticket with weight rewinding. They zero single weights and keep every tensor's shape, so
they buy **no latency** on a dense backend: their report measures the sparse model side by side
with the unpruned one and says so. They are here to answer "how accurate could a network of this
size be", the comparison the seeds' overview draws (../shared/seeds/pruning-overview-plan-cut-finetune.txt).

- :func:`magnitude_prune` -- one-shot global magnitude pruning (Han et al., "Learning both Weights
  and Connections", NeurIPS 2015): the ``sparsity`` fraction of smallest-|w| weights over every
  Conv/Linear weight is masked at once, then fine-tuned with the masks fixed.
- :func:`lottery_ticket` -- iterative magnitude pruning with rewinding (Frankle & Carbin, "The
  Lottery Ticket Hypothesis", ICLR 2019; rewinding to an early iterate: Frankle et al., "Stabilizing
  the Lottery Ticket Hypothesis" / "Linear Mode Connectivity and the LTH", 2019-2020). Train from a
  fresh initialisation; keep the weights ``theta_k`` after ``rewind_steps`` steps; train to the end;
  then for each of ``rounds`` rounds prune ``1 - (1 - sparsity) ** (1 / rounds)`` of the weights
  still alive by global magnitude (the overview: "to reach p%, do n rounds cutting p^(1/n) each"),
  *rewind* the survivors to ``theta_k`` and train again from step k with the same schedule.

Training is :func:`hwprune.recover.fit` (the one loop): the first ``rewind_steps`` steps are a
warm-up phase of their own (its end is ``theta_k``), the rest one schedule that every round
replays from ``theta_k``. Masks are PyTorch's ``torch.nn.utils.prune`` reparametrisation
(``weight = weight_orig * weight_mask``), so a masked weight stays exactly zero through any
optimizer step; :func:`finalize` folds them in before the model is saved or exported.
"""
from __future__ import annotations

import copy
from typing import Any, Callable, Optional

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from .errors import ConfigError

Evaluator = Callable[[nn.Module], float]


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """Every Conv/Linear weight (the tensors LTH and Han et al. prune); BN and biases stay dense."""
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))]


def _check_sparsity(sparsity: float) -> None:
    if not 0.0 < sparsity < 1.0:
        raise ConfigError(f"sparsity {sparsity} must be a fraction of weights to zero in (0, 1), e.g. 0.5")


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """name -> the current 0/1 mask of every masked weight (a copy)."""
    return {n: b.detach().clone() for n, b in model.named_buffers() if n.endswith("weight_mask")}


def sparsity_of(model: nn.Module) -> dict[str, Any]:
    """Zeros among the prunable weights (effective weights: masked ones count as zero)."""
    total = zeros = 0
    for m, name in prunable_weights(model):
        w = getattr(m, name)
        total += w.numel()
        zeros += int((w == 0).sum())
    return {"weights": total, "zeros": zeros, "sparsity": zeros / max(total, 1)}


def global_magnitude_(model: nn.Module, amount: float) -> None:
    """Mask ``amount`` of the weights still alive, smallest |w| over all prunable weights at once
    (masks already there are kept: pruned weights have |w| = 0 and are taken first)."""
    tprune.global_unstructured(prunable_weights(model), pruning_method=tprune.L1Unstructured, amount=float(amount))


def copy_masked(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` of a masked model (the masked ``weight`` attribute the reparametrisation
    computes is not a leaf tensor, which deepcopy refuses; it is recomputed at the next forward)."""
    for m, name in prunable_weights(model):
        if hasattr(m, name + "_orig"):
            setattr(m, name, getattr(m, name).detach())
    return copy.deepcopy(model)


def finalize(model: nn.Module) -> nn.Module:
    """Fold the masks into the weights (``weight = weight_orig * mask``) and drop the
    reparametrisation: a plain dense module whose state_dict loads into the unpruned architecture."""
    for m, name in prunable_weights(model):
        if tprune.is_pruned(m) and hasattr(m, name + "_mask"):
            tprune.remove(m, name)
    return model


def magnitude_prune(model: nn.Module, sparsity: float, data=None, epochs: int = 0, lr: float = 0.01, seed: int = 0,
                    teacher: Optional[nn.Module] = None, progress: bool = True,
                    evaluator: Optional[Evaluator] = None) -> tuple[nn.Module, dict[str, Any]]:
    """One-shot global magnitude pruning of a copy of ``model`` to ``sparsity``, then ``epochs`` of
    fine-tuning with the masks fixed (KD from ``teacher`` when given). Returns (finalised model, history)."""
    from .recover import LoopSettings, fit

    _check_sparsity(sparsity)
    net = copy.deepcopy(model)
    global_magnitude_(net, sparsity)
    hist: dict[str, Any] = {"method": "unstructured", "sparsity_target": sparsity,
                            "reference": "Han et al. 2015: one-shot global magnitude pruning, fine-tuned with the "
                                         "masks fixed"}
    if evaluator is not None:
        hist["accuracy_after_mask"] = float(evaluator(copy_masked(net)))
    if epochs:
        if data is None:
            raise ConfigError("fine-tuning the masked model needs --data (or --epochs 0)")
        h = fit(net, data, LoopSettings(epochs=epochs, lr=lr, seed=seed, progress=progress), teacher=teacher)
        hist["finetune"] = {"epochs": epochs, "lr": lr, "loss": h["loss"], "distill": teacher is not None}
    hist["achieved"] = sparsity_of(net)
    return finalize(net), hist


def lottery_ticket(model: nn.Module, data, sparsity: float, rounds: int, epochs: int, rewind_steps: int = 100,
                   lr: float = 0.1, seed: int = 0, progress: bool = True, evaluator: Optional[Evaluator] = None,
                   on_rewind: Optional[Callable[[nn.Module, dict[str, torch.Tensor]], None]] = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Iterative magnitude pruning with rewinding (module doc) on ``model``'s *architecture* (its
    weights are re-initialised: a ticket is found by training). ``on_rewind(model, theta_k)`` is
    called right after every rewind (tests check that the survivors equal ``theta_k``).
    Returns (finalised model, history)."""
    from .recover import LoopSettings, fit
    from .scratch import reinitialize_

    _check_sparsity(sparsity)
    if rounds < 1:
        raise ConfigError(f"--rounds {rounds} must be >= 1")
    if epochs < 1 or rewind_steps < 0:
        raise ConfigError(f"--epochs {epochs} must be >= 1 and --rewind-steps {rewind_steps} >= 0")
    if data is None:
        raise ConfigError("the lottery ticket trains the network (from scratch, every round): pass --data")
    torch.manual_seed(seed)
    net = copy.deepcopy(model)
    reinitialize_(net)
    for m, name in prunable_weights(net):  # identity masks: every round trains the same parameter set
        tprune.identity(m, name)
    if rewind_steps:
        fit(net, data, LoopSettings(steps=rewind_steps, lr=lr, seed=seed, progress=progress))
    theta_k = {k: v.detach().clone() for k, v in net.state_dict().items() if not k.endswith("weight_mask")}
    main = LoopSettings(epochs=epochs, lr=lr, seed=seed + 1, progress=progress)
    per_round = 1.0 - (1.0 - sparsity) ** (1.0 / rounds)
    hist: dict[str, Any] = {"method": "lottery", "sparsity_target": sparsity, "rounds": rounds,
                            "per_round_of_alive": per_round, "epochs_per_round": epochs, "rewind_steps": rewind_steps,
                            "reference": "Frankle & Carbin 2019; rewinding to iteration k: Frankle et al. 2019",
                            "history": []}
    h = fit(net, data, main)
    hist["history"].append({"round": 0, "sparsity": 0.0, "loss": h["loss"],
                            **({"accuracy": float(evaluator(copy_masked(net)))} if evaluator else {})})
    for r in range(1, rounds + 1):
        global_magnitude_(net, per_round)
        mk = masks(net)
        with torch.no_grad():  # rewind the survivors (and BN) to theta_k; masks stay
            net.load_state_dict({**theta_k, **mk}, strict=True)
        if on_rewind is not None:
            on_rewind(net, theta_k)
        h = fit(net, data, main)
        row = {"round": r, "sparsity": sparsity_of(net)["sparsity"], "loss": h["loss"]}
        if evaluator is not None:
            row["accuracy"] = float(evaluator(copy_masked(net)))
        hist["history"].append(row)
    hist["achieved"] = sparsity_of(net)
    return finalize(net), hist


def measure_dense_latency(original: nn.Module, sparse: nn.Module, input_size: int, backend: str = "ort-cpu",
                          threads: int = 2) -> dict[str, Any]:
    """The sparse model measured side by side with the unpruned one (the closed loop's estimator):
    same shapes, so the same latency within noise on a dense backend -- measured, not assumed."""
    from hwprune_deploy.runner import timing_ms

    from .latency.measure import measure_against_baseline

    x = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    t = measure_against_baseline(backend, {"baseline": original, "pruned": sparse}, x, threads, "fp32")
    b, p = timing_ms(t["baseline"]), timing_ms(t["pruned"])
    return {"backend": backend, "threads": threads, "baseline_ms": b, "measured_ms": p, "ratio": p / max(b, 1e-12),
            "note": f"dense shapes: the zeros are stored, not skipped, so {backend} runs the same work; measured "
                    f"{p:.3f} ms against the unpruned model's {b:.3f} ms side by side (ratio {p / max(b, 1e-12):.3f}): "
                    "no speedup"}
