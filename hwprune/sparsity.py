"""2:4 semi-structured sparsity: NVIDIA's ASP recipe (prune once by magnitude, fine-tune with the masks fixed).

Mishra et al., "Accelerating Sparse Deep Neural Networks" (arXiv:2104.08378, 2021), and its code,
NVIDIA apex ``apex.contrib.sparsity`` (ASP, "Automatic SParsity"). Ampere-and-later sparse tensor
cores skip the zeros of weights in which every group of ``m = 4`` consecutive values along the
*input* (reduction) dimension holds at most ``n = 2`` non-zeros, for up to 2x the math throughput.
The recipe (paper Sec. 3, "2:4 recipe"):

1. train the network dense (hwprune: the model you pass);
2. prune once, by magnitude: in every group of 4 consecutive input weights keep the 2 of largest
   ``|w|`` (ASP's ``m4n2_1d``: of the 6 valid 2:4 patterns, the one with the largest ``sum |w|``
   kept, which is the top-2 by magnitude);
3. retrain with the masks fixed: ASP masks the gradients before every optimizer step
   (``grad *= mask``) and the weights after it (``w *= mask``). The paper retrains for as long as
   the dense training; a short fine-tune recovers most of the loss on small tasks
   (docs/sparsity.md has what it recovers here).

Which layers (ASP's defaults, ``ASP.init_model_for_pruning``): the whitelist ``Linear``,
``Conv1d/2d/3d`` and ``MultiheadAttention`` (its ``in_proj_weight`` / ``q,k,v_proj_weight``); a
weight is left dense unless ``size(0) % 8 == 0 and size(1) % 16 == 0`` (the fp16 tensor-core tile;
for a conv ``size(1)`` is ``in_channels / groups``, the dimension masked). So a stem conv on RGB,
a depthwise conv and a 10-class head stay dense. Conv masks group along the input channels at
every kernel position and output channel (ASP permutes (K, C, R, S) to (R, S, K, C) before
masking), which is where TensorRT's sparse conv kernels want the zeros.

Here: :func:`sparsify` computes the masks, zeroes the weights and attaches an :class:`NMMasks`
store to the model (attribute ``hwprune_sparsity``, carried by ``copy.deepcopy``);
:func:`keep_masks` (called by :func:`hwprune.recover.fit`, the one training loop) adds ASP's two
optimizer hooks; :mod:`hwprune.checkpoint` saves the store with the weights (bit-packed) and
re-attaches it on load, so ``hwprune train`` keeps the masks; :func:`onnx_nm_weights` reads an
exported ONNX's weight initializers to say which keep the pattern. The ``hwprune prune
--sparsity 2:4`` verb built on these is :mod:`hwprune.sparsify`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ModelLoadError, UnsupportedModelError

#: the N:M patterns hwprune can produce (the one sparse tensor cores accelerate)
PATTERNS = ("2:4",)
#: attribute of a model that carries its masks
ATTR = "hwprune_sparsity"
#: ASP's tensor-core rule: a weight (out, in, ...) is sparsified only when out % 8 == 0 and in % 16 == 0
ASP_OUT_MULTIPLE, ASP_IN_MULTIPLE = 8, 16
_MHA_WEIGHTS = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")


def parse_pattern(text: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``; anything else is a :class:`ConfigError` naming the valid values."""
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if m is None or f"{int(m.group(1))}:{int(m.group(2))}" not in PATTERNS:
        why = "is malformed (write N:M)" if m is None else "is not a pattern sparse tensor cores run"
        raise ConfigError(f"--sparsity {text!r} {why}; valid values: {', '.join(PATTERNS)} (NVIDIA 2:4: 2 of every "
                          "4 consecutive input weights kept)")
    return int(m.group(1)), int(m.group(2))


# ---------------------------------------------------------------------------------- the masks
def nm_mask(weight: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """Boolean mask keeping the ``n`` largest-|w| of every ``m`` consecutive weights along dim 1
    (the input dimension of a Linear or conv weight), at every other index."""
    w = weight.detach().float().movedim(1, -1)  # (..., in): groups run along the last axis
    blocks = w.abs().reshape(-1, w.shape[-1] // m, m)
    drop = blocks.topk(m - n, dim=-1, largest=False).indices
    mask = torch.ones_like(blocks, dtype=torch.bool).scatter_(-1, drop, False)
    return mask.reshape(w.shape).movedim(-1, 1).contiguous()


def is_nm(weight, n: int = 2, m: int = 4, axis: int = 1) -> bool:
    """True when every group of ``m`` consecutive values along ``axis`` has at most ``n`` non-zeros."""
    a = np.moveaxis(np.asarray(weight.detach().cpu() if isinstance(weight, torch.Tensor) else weight), axis, -1)
    if a.ndim < 2 or a.shape[-1] % m:
        return False
    return bool(((a.reshape(-1, m) != 0).sum(-1) <= n).all())


def _candidates(model: nn.Module):
    """(parameter name, layer name, weight) of every weight in ASP's default whitelist."""
    for name, mod in model.named_modules():
        prefix = f"{name}." if name else ""
        if isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            yield prefix + "weight", name, mod.weight
        elif isinstance(mod, nn.MultiheadAttention):
            for p in _MHA_WEIGHTS:
                w = getattr(mod, p, None)
                if isinstance(w, torch.Tensor):
                    yield prefix + p, name, w


def eligible(model: nn.Module, m: int = 4) -> tuple[dict[str, nn.Parameter], dict[str, str]]:
    """ASP's rule: ({parameter name: weight} to sparsify, {parameter name: why it stays dense})."""
    keep: dict[str, nn.Parameter] = {}
    skipped: dict[str, str] = {}
    for pname, _, w in _candidates(model):
        if w is None or not w.requires_grad:
            skipped[pname] = "frozen (requires_grad False)"
        elif w.dim() < 2 or w.shape[0] % ASP_OUT_MULTIPLE or w.shape[1] % max(ASP_IN_MULTIPLE, m):
            skipped[pname] = (f"shape {tuple(w.shape)}: ASP sparsifies (out, in, ...) with out % {ASP_OUT_MULTIPLE} "
                              f"== 0 and in % {ASP_IN_MULTIPLE} == 0")
        else:
            keep[pname] = w
    return keep, skipped


@dataclass
class NMMasks:
    """The fixed masks of a model: parameter name -> bool tensor (True = kept), plus the weights
    left dense and why. Saved in checkpoints as packed bits (:meth:`to_dict`)."""

    n: int
    m: int
    masks: dict[str, torch.Tensor]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def pattern(self) -> str:
        return f"{self.n}:{self.m}"

    def apply_(self, model: nn.Module) -> None:
        """Zero every masked weight of ``model`` in place."""
        params = _params(model, self.masks)
        with torch.no_grad():
            for name, mask in self.masks.items():
                params[name].mul_(mask.to(params[name].device))

    def summary(self, model: nn.Module) -> dict[str, Any]:
        """What report.json says: pattern, layers, weights masked and the fraction of all weights."""
        masked = sum(int((~mk).sum()) for mk in self.masks.values())
        in_layers = sum(int(mk.numel()) for mk in self.masks.values())
        total = sum(int(p.numel()) for _, p in model.named_parameters() if p.dim() > 1)
        params = _params(model, self.masks)
        return {"pattern": self.pattern, "recipe": "ASP (Mishra et al. 2021): magnitude 2:4 masks along the input "
                                                   "dimension, fine-tuned with the masks fixed",
                "layers": len(self.masks), "weights_masked": masked, "weights_in_sparse_layers": in_layers,
                "fraction_masked_of_all_weights": masked / max(total, 1),
                "holds": all(is_nm(params[k], self.n, self.m) for k in self.masks),
                "sparse": sorted(self.masks), "dense": dict(sorted(self.skipped.items()))}

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "skipped": dict(self.skipped),
                "masks": {k: {"shape": list(v.shape), "bits": torch.from_numpy(np.packbits(v.cpu().numpy().ravel()))}
                          for k, v in self.masks.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NMMasks":
        n, m = parse_pattern(d["pattern"])
        masks = {}
        for k, v in d["masks"].items():
            count = int(np.prod(v["shape"]))
            bits = np.unpackbits(v["bits"].numpy(), count=count).astype(bool)
            masks[k] = torch.from_numpy(bits.reshape(v["shape"]))
        return cls(n=n, m=m, masks=masks, skipped=dict(d.get("skipped", {})))


def _params(model: nn.Module, names) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    missing = [k for k in names if k not in params]
    if missing:
        raise ModelLoadError(f"2:4 masks name weights the model does not have: {', '.join(missing[:4])}")
    return params


def masks_of(model: nn.Module) -> Optional[NMMasks]:
    """The masks ``model`` carries, or None for a dense model."""
    return getattr(model, ATTR, None)


def attach(model: nn.Module, masks: NMMasks) -> NMMasks:
    """Give ``model`` these masks (checked against its weights' shapes) and zero its masked weights."""
    params = _params(model, masks.masks)
    bad = [f"{k} {tuple(v.shape)} vs {tuple(params[k].shape)}" for k, v in masks.masks.items()
           if tuple(v.shape) != tuple(params[k].shape)]
    if bad:
        raise ModelLoadError(f"2:4 masks do not fit the model's weights: {'; '.join(bad[:3])}")
    object.__setattr__(model, ATTR, masks)  # a plain attribute, not a buffer: the state_dict is unchanged
    masks.apply_(model)
    return masks


def sparsify(model: nn.Module, pattern: str = "2:4") -> NMMasks:
    """ASP step 2: magnitude ``pattern`` masks on every eligible weight of ``model``, applied in
    place and attached (:func:`masks_of`). Raises :class:`UnsupportedModelError` when no weight
    is eligible."""
    n, m = parse_pattern(pattern)
    keep, skipped = eligible(model, m)
    if not keep:
        seen = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:4]) or "none"
        raise UnsupportedModelError(
            f"{type(model).__name__} has no weight that 2:4 sparsity applies to: ASP sparsifies Linear, Conv1d/2d/3d "
            f"and MultiheadAttention weights (out, in, ...) with out % {ASP_OUT_MULTIPLE} == 0 and in % "
            f"{ASP_IN_MULTIPLE} == 0 (per group for grouped convs); found: {seen}. Use a model with such layers, or "
            "prune without --sparsity")
    masks = NMMasks(n=n, m=m, masks={k: nm_mask(w, n, m) for k, w in keep.items()}, skipped=skipped)
    return attach(model, masks)


def keep_masks(model: nn.Module, optimizer: torch.optim.Optimizer) -> Optional[list]:
    """ASP step 3 (``init_optimizer_for_pruning``): when ``model`` carries masks, zero its masked
    weights now, mask their gradients before every ``optimizer.step()`` and the weights after it.
    Returns the hook handles (None for a dense model)."""
    masks = masks_of(model)
    if masks is None:
        return None
    masks.apply_(model)
    params = _params(model, masks.masks)
    pairs = [(params[k], v.to(params[k].device)) for k, v in masks.masks.items()]

    def mask_grads(opt, args, kwargs):
        for p, mk in pairs:
            if p.grad is not None:
                p.grad.mul_(mk)

    def mask_weights(opt, args, kwargs):
        with torch.no_grad():
            for p, mk in pairs:
                p.mul_(mk)

    return [optimizer.register_step_pre_hook(mask_grads), optimizer.register_step_post_hook(mask_weights)]


# ------------------------------------------------------------------------------------ in ONNX
def onnx_nm_weights(model_or_bytes, n: int = 2, m: int = 4) -> dict[str, bool]:
    """For the weight initializer of every Conv, Gemm and MatMul node of an ONNX model (bytes, path
    or ModelProto): whether it keeps ``n:m`` along its input dimension (Conv (K, C, ...): axis 1;
    Gemm: axis 1 with transB, else 0; MatMul (in, out): axis 0). Weights too small for the
    pattern (input dimension not a multiple of ``m``) are left out."""
    import onnx
    from onnx import numpy_helper

    proto = model_or_bytes
    if isinstance(proto, (bytes, bytearray)):
        proto = onnx.load_from_string(bytes(proto))
    elif isinstance(proto, str):
        proto = onnx.load(proto)
    inits = {i.name: i for i in proto.graph.initializer}
    out: dict[str, bool] = {}
    for node in proto.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2 or node.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[node.input[1]])
        if w.ndim < 2:
            continue
        if node.op_type == "Gemm":
            axis = 1 if any(a.name == "transB" and a.i for a in node.attribute) else 0
        else:
            axis = 1 if node.op_type == "Conv" else w.ndim - 2
        if w.shape[axis] % m == 0:
            out[node.input[1]] = is_nm(w, n, m, axis)
    return out
