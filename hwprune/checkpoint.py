"""Pruned-model checkpoints: plan + state_dict, no pickled classes.

Loading rebuilds the base network from the plan's model id, applies the plan (so the module
structure is recreated by the same code path that pruned it) and loads the weights with
``weights_only=True``. A round trip gives identical outputs.
"""
from __future__ import annotations

import io
import os
from typing import Any

import torch
from torch import nn

from .errors import ModelLoadError
from .jsonio import atomic_write_bytes

CKPT_FORMAT = "hwprune-checkpoint"
CKPT_VERSION = 1


def save_checkpoint(path: str, model: nn.Module, plan, meta: dict[str, Any] | None = None) -> None:
    """Write ``{format, version, plan, meta, state_dict}`` (+ ``sparsity``: the model's 2:4 masks,
    bit-packed, when it carries them) atomically with torch.save."""
    from .sparsity import masks_of

    obj = {
        "format": CKPT_FORMAT,
        "version": CKPT_VERSION,
        "plan": plan.to_dict(),
        "meta": dict(meta or {}),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if (masks := masks_of(model)) is not None:  # 2:4 masks (hwprune.sparsity): training keeps them fixed
        obj["sparsity"] = masks.to_dict()
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _read_or_why(path: str) -> tuple[dict[str, Any] | None, str]:
    """(the checkpoint dict, "") or (None, why ``path`` is not one)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        return None, f"torch.load cannot read it ({type(e).__name__}: {first}); is it truncated or not a torch file?"
    if isinstance(obj, dict) and obj.get("format") == CKPT_FORMAT:
        return obj, ""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return None, ("it holds a plain state_dict, not a pruned model: pass the architecture as --model NAME "
                      "and this file as --weights")
    return None, f"it holds {type(obj).__name__} without the {CKPT_FORMAT!r} format tag"


def _read(path: str) -> dict[str, Any] | None:
    return _read_or_why(path)[0]


def is_checkpoint(path: str) -> bool:
    return path.endswith((".pt", ".pth")) and os.path.isfile(path) and _read(path) is not None


def load_checkpoint(path: str):
    """Rebuild the pruned model saved at ``path``; returns a :class:`LoadedModel`."""
    from .base_model import LoadedModel, build_from_id
    from .plan import PruningPlan, apply

    obj, why = _read_or_why(path)
    if obj is None:
        raise ModelLoadError(f"{path!r} is not a readable hwprune checkpoint: {why} (`hwprune prune` and `hwprune "
                             "run` write one as OUT/pruned.pt)")
    if obj.get("version") != CKPT_VERSION:
        raise ModelLoadError(f"checkpoint {path!r} has version {obj.get('version')}; this hwprune reads {CKPT_VERSION}")
    plan = PruningPlan.from_dict(obj["plan"])
    base, _ = build_from_id(plan.model_id, source=f"checkpoint {path!r}")
    model = apply(base, plan, inplace=True)
    try:
        model.load_state_dict(obj["state_dict"], strict=True)
    except RuntimeError as e:
        raise ModelLoadError(f"checkpoint {path!r} weights do not fit its plan: {e}") from e
    if obj.get("sparsity"):
        from .sparsity import NMMasks, attach

        attach(model, NMMasks.from_dict(obj["sparsity"]))
    model.eval()
    return LoadedModel(model=model, model_id=plan.model_id, input_size=int(plan.input_shape[-1]),
                       plan=plan, meta=obj.get("meta", {}))
