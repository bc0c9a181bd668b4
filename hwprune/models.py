"""Resolve ``--model`` specs into modules, without any hub download.

A spec is one of:
- a built-in name from :mod:`hwprune.zoo` (``tiny_resnet``);
- a torchvision classification model name (``resnet50``), built with random init;
- ``package.module:factory`` or ``path/to/file.py:factory`` for a user's own network;
- a saved hwprune checkpoint (``.pt`` written by :func:`hwprune.checkpoint.save_checkpoint`).

The resolved model carries a ``model_id`` (spec + constructor kwargs) that is stored in plans and
checkpoints so the same base network can be rebuilt later. For ``file.py:factory`` the spec is
stored with the file's absolute path and its sha256 (``model_id["file"]``), so a checkpoint
rebuilds from any folder, and refuses (:class:`ModelSourceError`) when the file is gone or edited.
Building the base network lives in :mod:`hwprune.base_model` (checkpoints rebuild with it too).
"""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from .base_model import (LoadedModel, ModelSourceError, build_from_id, build_model, file_sha256, make_model_id,
                         torchvision_classifiers)
from .errors import ModelLoadError

__all__ = ["LoadedModel", "ModelSourceError", "build_from_id", "build_model", "file_sha256", "load_model",
           "load_state_dict_file", "make_model_id", "torchvision_classifiers"]


def load_state_dict_file(model: nn.Module, path: str) -> None:
    """Load user weights: a state_dict, or a training checkpoint holding one under 'state_dict',
    'model' or 'model_state_dict' (keys of a DataParallel model lose their 'module.' prefix)."""
    from .checkpoint import CKPT_FORMAT, STATE_DICT_KEYS, nested_state_dict, torch_load_safe

    if not os.path.isfile(path):
        raise ModelLoadError(f"weights file {path!r} does not exist")
    obj = torch_load_safe(path)
    if isinstance(obj, dict) and obj.get("format") == CKPT_FORMAT:
        raise ModelLoadError(f"weights file {path!r} is a pruned hwprune checkpoint: pass it as --model {path} "
                             "(it rebuilds its own architecture), without --weights")
    sd, _ = nested_state_dict(obj)
    if sd is None:
        keys = f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else ""
        raise ModelLoadError(f"weights file {path!r} holds {type(obj).__name__}{keys}, not a state_dict (nor one "
                             f"under {', '.join(map(repr, STATE_DICT_KEYS))}); save it with "
                             "torch.save(model.state_dict(), path)")
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        first = str(e).strip().splitlines()[1:2]
        raise ModelLoadError(f"weights {path!r} do not fit the model: {first[0].strip() if first else e}. "
                             "Check --model and --num-classes.") from None
    if missing or unexpected:
        raise ModelLoadError(
            f"weights {path!r} do not fit the model: {len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:3]}). Check --model and --num-classes."
        )


def load_model(spec: str, weights: str | None = None, kwargs: dict[str, Any] | None = None) -> LoadedModel:
    """Resolve a spec (see module doc) into a :class:`LoadedModel` in eval mode."""
    from .checkpoint import load_checkpoint

    if spec.endswith((".pt", ".pth")):  # a checkpoint, never a model name: say what is wrong with the file
        if not os.path.isfile(spec):
            raise ModelLoadError(f"model checkpoint {spec!r} does not exist (looked in {os.getcwd()}); pass the path "
                                 "of a pruned.pt that `hwprune prune` or `hwprune run` wrote (OUT/pruned.pt)")
        loaded = load_checkpoint(spec)
        if weights:
            load_state_dict_file(loaded.model, weights)
        return loaded
    if spec.endswith((".onnx", ".pt2", ".engine")):  # an exported artefact: no PyTorch module to cut or rebuild
        raise ModelLoadError(f"{spec!r} is an exported file, not a PyTorch model: prune, train and export start from "
                             "the checkpoint or model it was exported from (e.g. OUT/pruned.pt); time exported files "
                             "with `hwprune bench --model FILE` (.onnx and .pt2)")
    model, size = build_model(spec, kwargs)
    if weights:
        load_state_dict_file(model, weights)
    model.eval()
    return LoadedModel(model=model, model_id=make_model_id(spec, kwargs), input_size=size)
