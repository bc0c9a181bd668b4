"""``hwprune prune --sparsity 2:4``: NVIDIA's ASP recipe as a step of the prune verb.

ASP (Mishra et al. 2021, "Accelerating Sparse Deep Neural Networks"; the masks, the layer rule and
the fixed-mask training are :mod:`hwprune.sparsity`): take a trained dense model, mask it to 2:4 by
magnitude once, then fine-tune with the masks fixed. Two ways in:

- ``--sparsity 2:4`` alone (no ``--ratio``/``--budget``): :func:`sparsify_loaded` masks the model as
  it is (a model spec, or a checkpoint of ``hwprune prune``/``train``, whose channel plan is kept),
  scores it (dense, masked) and fine-tunes it with ``--finetune-epochs``;
- on top of channel pruning: :func:`hwprune.prune.prune` cuts channels first, then calls
  :func:`apply_sparsity` on the smaller dense model, then fine-tunes (masks fixed).

Either way ``pruned.pt`` carries the masks, ``hwprune train`` keeps them, and the exported ONNX
holds the 2:4 zeros in its weights. On a CPU backend 2:4 does not change latency (ONNX Runtime has
no sparse kernels): the speed comes from TensorRT's sparse-weights flag on an Ampere+ GPU
(``hwprune export --format tensorrt --sparse``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional

from torch import nn

from .base_model import LoadedModel
from .errors import ConfigError
from .sparsity import masks_of, parse_pattern, sparsify

Evaluator = Callable[[nn.Module], float]


def apply_sparsity(model: nn.Module, pattern: str, evaluator: Optional[Evaluator] = None,
                   accuracy: Optional[dict[str, float]] = None) -> dict[str, Any]:
    """ASP step 2 on ``model`` in place; with an ``evaluator`` adds ``after_sparsity`` (the masked
    model's score, before any fine-tune) to ``accuracy``. Returns the report's ``sparsity`` part."""
    t0 = time.perf_counter()
    masks = sparsify(model, pattern)
    summary = masks.summary(model)
    summary["seconds"] = time.perf_counter() - t0
    if evaluator is not None and accuracy is not None:
        accuracy["after_sparsity"] = float(evaluator(model))
        masks.apply_(model)  # an evaluator scores a copy; this is a guard, a no-op when it did
    return summary


@dataclass
class SparsityReport:
    """report.json of a ``--sparsity`` run without channel pruning."""

    model: dict[str, Any]
    sparsity: dict[str, Any]
    input_shape: list[int]
    seed: int
    accuracy: Optional[dict[str, float]] = None
    finetune: Optional[dict[str, Any]] = None
    evaluator: Optional[str] = None
    plan: str = "kept: the channels are those of the model given (no channel pruning)"
    latency: Optional[dict[str, Any]] = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class SparsityResult:
    model: nn.Module
    plan: Any  # PruningPlan
    report: SparsityReport
    artifacts: dict[str, Any] = field(default_factory=dict)


def sparsify_loaded(loaded: LoadedModel, pattern: str, evaluator: Optional[Evaluator] = None, data=None,
                    finetune_epochs: int = 0, finetune_lr: float = 0.01, distill: bool = False, seed: int = 0,
                    input_size: Optional[int] = None, progress: bool = True) -> SparsityResult:
    """The ASP recipe on a copy of ``loaded.model``: mask, score (dense, masked), fine-tune with the
    masks fixed for ``finetune_epochs`` (distilling from the dense model with ``distill``), score."""
    from .plan import PruningPlan
    from .recover import seed_everything
    from .train import train

    parse_pattern(pattern)
    if finetune_epochs < 0:
        raise ConfigError(f"--finetune-epochs {finetune_epochs} must be >= 0")
    if finetune_epochs and data is None:
        raise ConfigError("--finetune-epochs needs training data: pass --data synthetic (or imagefolder:PATH ...)")
    seed_everything(seed)
    size = input_size or loaded.input_size
    dense = loaded.model.eval()
    model = copy.deepcopy(dense)
    accuracy = {"before": float(evaluator(copy.deepcopy(dense)))} if evaluator is not None else None
    summary = apply_sparsity(model, pattern, evaluator, accuracy)
    finetune = None
    if finetune_epochs:
        t1 = time.perf_counter()
        hist = train(model, data, epochs=finetune_epochs, lr=finetune_lr, teacher=dense if distill else None,
                     seed=seed, progress=progress)
        model.eval()
        finetune = {"epochs": finetune_epochs, "lr": finetune_lr, "distill": distill, "masks": "fixed",
                    "loss": [float(v) for v in hist["loss"]], "seconds": time.perf_counter() - t1}
        if accuracy is not None:
            accuracy["after_finetune"] = float(evaluator(model))
        summary["holds"] = masks_of(model).summary(model)["holds"]
    plan = loaded.plan
    if plan is None:
        plan = PruningPlan(model_id=loaded.model_id, input_shape=[1, 3, size, size], kept={},
                           provenance={"note": "unpruned: every channel kept", "sparsity": pattern,
                                       "written_by": "hwprune prune --sparsity"})
    report = SparsityReport(model=loaded.model_id, sparsity=summary, input_shape=[1, 3, size, size], seed=seed,
                            accuracy=accuracy, finetune=finetune,
                            notes=["2:4 does not change latency on ONNX Runtime CPU (no sparse kernels); it runs "
                                   "faster on an Ampere+ GPU through `hwprune export --format tensorrt --sparse`"])
    return SparsityResult(model=model, plan=plan, report=report)
