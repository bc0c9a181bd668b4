"""Pruned-model checkpoints: plan + state_dict, no pickled classes.

Loading rebuilds the base network from the plan's model id, applies the plan (so the module
structure is recreated by the same code path that pruned it) and loads the weights with
``weights_only=True``. A round trip gives identical outputs.
"""
from __future__ import annotations

import io
import os
import re
from typing import Any

import torch
from torch import nn

from .errors import ModelLoadError
from .jsonio import atomic_write_bytes

CKPT_FORMAT = "hwprune-checkpoint"
CKPT_VERSION = 1
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict")  # where training scripts nest the weights


def torch_load_safe(path: str) -> Any:
    """``torch.load(path, weights_only=True)``; what it refuses is a ModelLoadError saying why and
    what to do (:func:`why_unloadable`)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ModelLoadError(f"{path!r}: {why_unloadable(path, e)}") from None


def why_unloadable(path: str, e: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``path`` (raising ``e``), and the fix. A file
    that pickles a whole model (``torch.save(model, path)``) is the common case: hwprune never
    unpickles classes (that runs whatever code the file names), so the message gives the one-line
    re-save of its weights, for a file the user trusts."""
    text = str(e)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        out = os.path.splitext(os.path.basename(path))[0] + "_weights.pt"
        return (f"it holds a pickled object ({found.group(1)}), not weights: it was saved with torch.save(model, "
                f"...), and hwprune does not unpickle classes (that runs code the file names). If you trust the file, "
                f"save its weights once -- python -c \"import torch; torch.save(torch.load('{path}', "
                f"weights_only=False).state_dict(), '{out}')\" -- and pass the architecture as --model NAME with "
                f"--weights {out}")
    cause = re.search(r"WeightsUnpickler error:\s*(.+)", text)  # torch's own cause, after its general advice
    first = (cause.group(1) if cause else (text.strip().splitlines() or [""])[0]).strip()[:200]
    return f"torch.load cannot read it ({type(e).__name__}: {first}); is it truncated or not a torch file?"


def nested_state_dict(obj: Any) -> tuple[dict | None, str | None]:
    """(the state_dict, the key it was under) of a loaded file: the file itself when it is one, or
    a training checkpoint's ``state_dict`` / ``model`` / ``model_state_dict`` entry; (None, None)
    otherwise."""
    def is_sd(d):
        return isinstance(d, dict) and bool(d) and all(isinstance(v, torch.Tensor) for v in d.values())

    if is_sd(obj):
        return obj, None
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            if is_sd(obj.get(key)):
                return obj[key], key
    return None, None


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
        return None, why_unloadable(path, e)
    if isinstance(obj, dict) and obj.get("format") == CKPT_FORMAT:
        return obj, ""
    sd, key = nested_state_dict(obj)
    if sd is not None:
        what = "a plain state_dict" if key is None else f"a training checkpoint (its state_dict under {key!r})"
        return None, (f"it holds {what}, not a pruned model: pass the architecture as --model NAME and this file "
                      "as --weights")
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
