"""The unpruned base network a ``--model`` spec names: build it, and the id that rebuilds it.

Shared by :mod:`hwprune.models` (resolving a spec, which may be a checkpoint) and
:mod:`hwprune.checkpoint` (rebuilding a checkpoint's base network from its plan's model id), so
that neither has to import the other. Spec forms and the ``model_id`` contract are described in
:mod:`hwprune.models`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .errors import ModelLoadError
from .specs import load_attr, spec_file
from .zoo import ZOO

# torchvision models whose defaults need adjusting for pruning/export: the auxiliary heads of
# GoogLeNet/Inception are not traced in eval mode, so their input channels could not follow a cut.
_TV_KWARGS: dict[str, dict[str, Any]] = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}
_TV_INPUT_SIZE = {"inception_v3": 299}


class ModelSourceError(ModelLoadError):
    """The user file a checkpoint's base network was built from is missing or has changed."""


@dataclass
class LoadedModel:
    model: nn.Module
    model_id: dict[str, Any]
    input_size: int
    plan: Any = None  # PruningPlan when loaded from a pruned checkpoint
    meta: dict[str, Any] = field(default_factory=dict)


def file_sha256(path: str) -> str:
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def make_model_id(spec: str, kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a plan or checkpoint stores to rebuild the base network from any folder: a
    ``file.py:factory`` spec becomes absolute and carries the file's sha256."""
    path = spec_file(spec)
    if path is None or not os.path.isfile(path):
        return {"spec": spec, "kwargs": dict(kwargs or {})}
    return {"spec": f"{path}:{spec.rpartition(':')[2]}", "kwargs": dict(kwargs or {}),
            "file": {"path": path, "sha256": file_sha256(path), "spec_as_given": spec}}


def build_from_id(model_id: dict[str, Any], source: str = "this plan") -> tuple[nn.Module, int]:
    """:func:`build_model` for a stored ``model_id``; a user file must still be where it was,
    with the content it had (``source`` names what stored the id, for the message)."""
    f = model_id.get("file")
    if f:
        if not os.path.isfile(f["path"]):
            raise ModelSourceError(
                f"{source} was pruned from the model file {f['path']!r}, which no longer exists; put that file back "
                "at that path (the same content), or prune again from where the file is now")
        digest = file_sha256(f["path"])
        if digest != f["sha256"]:
            raise ModelSourceError(
                f"the model file {f['path']!r} changed since {source} was pruned from it (sha256 {digest[:12]}..., "
                f"was {f['sha256'][:12]}...): the saved weights may no longer fit; restore the version it was made "
                "from, or prune again from the edited file")
    return build_model(model_id["spec"], model_id.get("kwargs"))


def torchvision_classifiers() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


def build_model(spec: str, kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, int]:
    """Build the *unpruned* base network for ``spec``; returns (module, default input size)."""
    kwargs = dict(kwargs or {})
    if spec in ZOO:
        factory, size = ZOO[spec]
        return factory(**kwargs), size
    if spec.startswith("timm:"):
        from .timm_models import build_timm

        return build_timm(spec, kwargs)
    if ":" in spec and not os.path.exists(spec):
        factory = load_attr(spec, "model", ModelLoadError)
        try:
            model = factory(**kwargs)
        except Exception as e:
            raise ModelLoadError(f"factory {spec!r} failed: {type(e).__name__}: {e}") from e
        if not isinstance(model, nn.Module):
            raise ModelLoadError(f"factory {spec!r} returned {type(model).__name__}, not an nn.Module")
        return model, 224
    names = torchvision_classifiers()
    if spec in names:
        import torchvision

        kw = {**_TV_KWARGS.get(spec, {}), **kwargs}
        try:
            model = torchvision.models.get_model(spec, weights=None, **kw)
        except Exception as e:
            raise ModelLoadError(f"building torchvision model {spec!r} failed: {e}") from e
        return model, _TV_INPUT_SIZE.get(spec, 224)
    import difflib

    close = difflib.get_close_matches(spec, names + list(ZOO), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelLoadError(
        f"unknown model {spec!r}.{hint} Use a torchvision classifier name (see `hwprune inspect --list`), "
        "a built-in (tiny_resnet, tiny_mobilenet, tiny_vit), 'timm:NAME', 'module:factory', 'file.py:factory' or an hwprune checkpoint."
    )
