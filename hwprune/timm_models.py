"""``--model timm:NAME``: a timm architecture as a model source (the optional ``hwprune[timm]`` extra).

The network is built with ``timm.create_model(NAME, pretrained=False, ...)``: random init, or the
user's own weights from a local file with ``--weights``; never a download. Hub specs
(``timm:hf-hub:...``) are refused, and the hub is switched offline while the model is built, so
no code path inside timm can reach the network either.

The default input size is the one timm's pretrained config for the architecture names
(``pretrained_cfg['input_size']``, e.g. 224 for ``resnet18``, 256 for ``mobilevit_xxs``). An
``img_size`` constructor argument (what ``--input-size`` becomes for a timm spec) is passed on
only to architectures whose config says their input size is fixed at construction (ViTs, Swin,
MaxViT...: position embeddings and window grids are built for one size); convolutional networks
take any size and are built as they are.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any

from torch import nn

from .errors import ModelLoadError

PREFIX = "timm:"
INSTALL_HINT = "pip install 'hwprune[timm]'"


def is_timm_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith(PREFIX)


def _timm():
    try:
        import timm
    except ImportError:
        raise ModelLoadError(f"timm is not installed: {INSTALL_HINT}") from None
    return timm


@contextlib.contextmanager
def _offline():
    """The Hugging Face hub offline while timm builds a model (pretrained=False should never
    reach it; this makes sure)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: "1" for k in keys})
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def timm_name(spec: str) -> str:
    """The architecture name of a ``timm:NAME`` spec, checked against timm's registry."""
    timm = _timm()
    name = spec[len(PREFIX):]
    if not name:
        raise ModelLoadError(f"model spec {spec!r} names no architecture; e.g. timm:resnet18 "
                             "(list them with python -c 'import timm; print(timm.list_models())')")
    if ":" in name:
        raise ModelLoadError(f"model spec {spec!r}: hub and local-dir timm specs are not supported (hwprune never "
                             "downloads); use timm:ARCH and pass the weights file with --weights")
    if not timm.is_model(name):
        import difflib

        arch = name.split(".", 1)[0]
        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f" Did you mean {', '.join('timm:' + c for c in close)}?" if close else ""
        raise ModelLoadError(f"timm has no architecture {name!r} (timm {timm.__version__}).{hint} "
                             "List them with: python -c 'import timm; print(timm.list_models())'")
    return name


def pretrained_cfg(name: str) -> dict[str, Any]:
    """timm's pretrained config for ``name`` (architecture or ``arch.tag``) as a dict; {} if none."""
    _timm()
    from timm.models import get_pretrained_cfg

    arch, _, tag = name.partition(".")
    cfg = get_pretrained_cfg(name) if tag else None
    if cfg is None:
        cfg = get_pretrained_cfg(arch)
    if cfg is None:
        return {}
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg.__dict__)


def default_input_size(name: str) -> int:
    """Square input size timm's config names for ``name`` (224 when it names none)."""
    size = pretrained_cfg(name).get("input_size") or (3, 224, 224)
    return int(size[-1])


def fixed_input_size(name: str) -> bool:
    """Whether the architecture is built for one input size (position embeddings, window grids)."""
    return bool(pretrained_cfg(name).get("fixed_input_size", False))


def build_timm(spec: str, kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, int]:
    """Build ``timm:NAME`` with random init; returns (module, default input size)."""
    timm = _timm()
    name = timm_name(spec)
    kw = dict(kwargs or {})
    size = default_input_size(name)
    img = kw.pop("img_size", None)
    if img is not None:
        if not isinstance(img, int) or img < 1:
            raise ModelLoadError(f"img_size {img!r} for {spec!r} is not a positive integer")
        size = int(img)
        if fixed_input_size(name):
            kw["img_size"] = size
    kw.pop("pretrained", None)
    try:
        with _offline():
            model = timm.create_model(name, pretrained=False, **kw)
    except Exception as e:
        raise ModelLoadError(f"building timm model {name!r} failed: {type(e).__name__}: {e}") from e
    return model, size
