"""Module-type handlers: how to cut a layer type the channel graph does not know natively.

Torch-Pruning's tracer knows convolutions, linears, norms and the like. Anything else -- Swin's
and MaxViT's attention blocks, Swin's patch merging, a user's own layer -- gets a
:class:`ModuleHandler`, registered by module type and matched with ``isinstance`` (a subclass
uses its nearest registered base's handler)::

    @register_handler(ChannelScale)
    class ChannelScaleHandler(ModuleHandler):
        tied = True  # one width in and out: the scale's channels follow the layer before it

        def prune_out_channels(self, module, idxs):
            keep = [i for i in range(module.weight.numel()) if i not in set(idxs)]
            module.weight = nn.Parameter(module.weight.data[keep])
            return module

        def out_channels(self, module):
            return module.weight.numel()

A handler that overrides :meth:`ModuleHandler.prune_out_channels` *cuts* its module (the graph
hands it to Torch-Pruning as a custom pruner, see :mod:`hwprune.tp_compat`); one that does not
only vouches that the type's own parameters are mapped to channels by the tracer (ViT's class
token, ConvNeXt's layer scale) and may fix width attributes after a cut.

The built-in handlers are for torchvision classes, registered by dotted name and resolved once
their module has been imported (a model built from them has imported it), so importing hwprune
does not import torchvision's model zoo; a handler a user registers for the same type wins.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch
from torch import nn

H = TypeVar("H")


@dataclass(frozen=True)
class LeafLayer:
    """A layer inside a composite module whose size the module's groups scale (for FLOPs and
    parameter counts): child ``name``, full ``cin``/``cout``, and which of the module's sides
    ('in' or 'out') feeds each of its sides."""

    name: str
    cin: int
    cout: int
    cin_side: str = "in"
    cout_side: str = "out"


class ModuleHandler:
    """How hwprune treats one module type; override what the type needs (defaults: nothing)."""

    #: traced as one edge from its (single tensor) input to its output: for modules whose
    #: internals (windowing, position tables, head reshapes) the tracer cannot follow
    opaque: bool = False
    #: input and output channels are one width, cut together (an attention block's embedding)
    tied: bool = False
    #: the kind of a group through it ('embed' for attention: per-head blocks, see ChannelGroup)
    group_kind: str | None = None

    @property
    def cuts(self) -> bool:
        """Whether this handler removes channels itself (overrides :meth:`prune_out_channels`)."""
        return type(self).prune_out_channels is not ModuleHandler.prune_out_channels

    def prune_out_channels(self, module: nn.Module, idxs: Sequence[int]) -> nn.Module:
        """Remove output channels ``idxs`` in place; return the module."""
        raise NotImplementedError

    def prune_in_channels(self, module: nn.Module, idxs: Sequence[int]) -> nn.Module:
        """Remove input channels ``idxs`` in place (a tied handler's are its output channels)."""
        if self.tied:
            return self.prune_out_channels(module, idxs)
        raise NotImplementedError

    def out_channels(self, module: nn.Module) -> int:
        raise NotImplementedError

    def in_channels(self, module: nn.Module) -> int:
        if self.tied:
            return self.out_channels(module)
        raise NotImplementedError

    def blocks(self, module: nn.Module) -> int:
        """Equal contiguous blocks its channels form (attention heads): each keeps the same count."""
        return 1

    def leaf_layers(self, module: nn.Module) -> list[LeafLayer] | None:
        """The layers cost models should count in its place (None: the module itself)."""
        return None

    def fix_widths(self, module: nn.Module) -> None:
        """Update width attributes after a cut so the pruned model runs and exports."""

    def unsupported(self, module: nn.Module) -> str:
        """Why hwprune refuses a model holding this module ('' when it does not): checked before
        tracing, so the refusal names the module instead of a trace that fails or never ends."""
        return ""

    def frozen(self, module: nn.Module) -> str:
        """Why the channels through this module cannot be cut ('' when they can): every group the
        module is in is then frozen with this reason (shown by ``hwprune inspect``)."""
        return ""


_HANDLERS: dict[type, ModuleHandler] = {}
# built-ins: (module, class name) -> handler, registered as types once the module is imported
_BUILTIN: dict[tuple[str, str], ModuleHandler] = {}


def register_handler(module_type: type) -> Callable[[H], H]:
    """Decorator registering a :class:`ModuleHandler` (class or instance) for ``module_type``
    and its subclasses; returns the handler unchanged. Overwriting a registration warns."""
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register_handler takes an nn.Module subclass, not {module_type!r}")

    def deco(handler: H) -> H:
        obj = handler() if isinstance(handler, type) else handler
        if not isinstance(obj, ModuleHandler):
            raise TypeError(f"{handler!r} is not a ModuleHandler")
        _resolve_builtins()
        if module_type in _HANDLERS:
            warnings.warn(f"overwriting the module handler for {_name(module_type)}", stacklevel=2)
        _HANDLERS[module_type] = obj
        return handler

    return deco


def _name(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def _resolve_builtins() -> None:
    for (mod_name, cls_name), handler in list(_BUILTIN.items()):
        owner = sys.modules.get(mod_name)
        if owner is None:
            continue
        cls = getattr(owner, cls_name, None)
        if isinstance(cls, type):
            _HANDLERS.setdefault(cls, handler)  # a user's handler for the same type stays
        del _BUILTIN[(mod_name, cls_name)]


def handler_for(module: nn.Module) -> ModuleHandler | None:
    """The handler of ``module``'s type or its nearest registered base type, or None."""
    if _BUILTIN:
        _resolve_builtins()
    for t in type(module).__mro__:
        h = _HANDLERS.get(t)
        if h is not None:
            return h
    return None


def list_handlers() -> list[str]:
    """Dotted names of the module types with a handler (built-ins whether imported yet or not)."""
    _resolve_builtins()
    return sorted([_name(t) for t in _HANDLERS] + [f"{m}.{c}" for m, c in _BUILTIN])


# ---------------------------------------------------------------------------------- built-ins
class AttentionUnitHandler(ModuleHandler):
    """Swin/MaxViT attention: input width, inner q/k/v width and output width are one coupled
    group split into ``heads`` equal blocks (head_dim shrinks; the number of heads and the
    per-head position tables stay). ``qkv``/``out``: the q/k/v and output Linear children;
    ``heads``/``head_dim``: the attributes holding the head count and head size (None: none)."""

    opaque, tied, group_kind = True, True, "embed"

    def __init__(self, qkv: str, out: str, heads: str, head_dim: str | None = None):
        self.qkv, self.out, self.heads, self.head_dim = qkv, out, heads, head_dim

    def prune_out_channels(self, module, idxs):
        qkv, out = getattr(module, self.qkv), getattr(module, self.out)
        d = out.out_features
        keep = sorted(set(range(d)) - set(int(i) for i in idxs))
        rows = torch.tensor(keep + [d + i for i in keep] + [2 * d + i for i in keep])
        k = torch.tensor(keep)
        qkv.weight = nn.Parameter(qkv.weight.data[rows][:, k])
        if qkv.bias is not None:
            qkv.bias = nn.Parameter(qkv.bias.data[rows])
        qkv.in_features, qkv.out_features = len(keep), 3 * len(keep)
        out.weight = nn.Parameter(out.weight.data[k][:, k])
        if out.bias is not None:
            out.bias = nn.Parameter(out.bias.data[k])
        out.in_features = out.out_features = len(keep)
        if self.head_dim:
            setattr(module, self.head_dim, len(keep) // getattr(module, self.heads))
        return module

    def out_channels(self, module):
        return getattr(module, self.out).out_features

    def blocks(self, module):
        return getattr(module, self.heads)

    def leaf_layers(self, module):
        # its own parameters (per-head position tables) keep their size; q/k/v: 3 outputs per channel
        return [LeafLayer(child, lin.in_features, lin.out_features)
                for child in (self.qkv, self.out) for lin in [module.get_submodule(child)]]


def _cut(param: torch.Tensor, idx: list[int], dim: int) -> nn.Parameter:
    return nn.Parameter(torch.index_select(param.data, dim, torch.tensor(idx)))


class PatchMergingHandler(ModuleHandler):
    """Swin's patch merging concatenates four strided spatial slices of its input on the channel
    axis (LayerNorm(4C) -> Linear(4C, 2C)); the tracer misreads the slices, so it is opaque:
    input width C (cut in all four copies) and output width 2C are separate groups.
    ``norm_on_input``: v1 normalises the 4C input, v2 the 2C output."""

    opaque = True

    def __init__(self, norm_on_input: bool):
        self.norm_on_input = norm_on_input

    def prune_in_channels(self, module, idxs):
        red, c = module.reduction, module.reduction.in_features // 4
        keep = sorted(set(range(c)) - set(int(i) for i in idxs))
        cols = [j * c + i for j in range(4) for i in keep]
        red.weight = _cut(red.weight, cols, 1)
        red.in_features = len(cols)
        if self.norm_on_input:
            module.norm.weight, module.norm.bias = _cut(module.norm.weight, cols, 0), _cut(module.norm.bias, cols, 0)
            module.norm.normalized_shape = (len(cols),)
        module.dim = len(keep)
        return module

    def prune_out_channels(self, module, idxs):
        red = module.reduction
        keep = sorted(set(range(red.out_features)) - set(int(i) for i in idxs))
        red.weight = _cut(red.weight, keep, 0)
        if red.bias is not None:
            red.bias = _cut(red.bias, keep, 0)
        red.out_features = len(keep)
        if not self.norm_on_input:
            module.norm.weight, module.norm.bias = _cut(module.norm.weight, keep, 0), _cut(module.norm.bias, keep, 0)
            module.norm.normalized_shape = (len(keep),)
        return module

    def in_channels(self, module):
        return module.reduction.in_features // 4

    def out_channels(self, module):
        return module.reduction.out_features

    def leaf_layers(self, module):
        red = module.reduction  # Linear(4C, 2C): each input channel is read in four copies
        norm = (LeafLayer("norm", red.in_features, red.in_features, "in", "in") if self.norm_on_input
                else LeafLayer("norm", red.out_features, red.out_features, "out", "out"))
        return [LeafLayer("reduction", red.in_features, red.out_features), norm]


class ParameterOwner(ModuleHandler):
    """Its own parameters (ViT's class token and position embedding, ConvNeXt's layer scale,
    relative position tables) are plain tensors the tracer maps to channels itself."""


class VisionTransformerHandler(ParameterOwner):
    def fix_widths(self, module):
        if hasattr(module, "conv_proj"):
            module.hidden_dim = module.conv_proj.out_channels


_SWIN, _MAXVIT = "torchvision.models.swin_transformer", "torchvision.models.maxvit"
_BUILTIN.update({
    (_SWIN, "ShiftedWindowAttention"): AttentionUnitHandler("qkv", "proj", "num_heads"),
    (_SWIN, "ShiftedWindowAttentionV2"): AttentionUnitHandler("qkv", "proj", "num_heads"),
    (_MAXVIT, "RelativePositionalMultiHeadAttention"): AttentionUnitHandler("to_qkv", "merge", "n_heads", "head_dim"),
    (_SWIN, "PatchMerging"): PatchMergingHandler(norm_on_input=True),
    (_SWIN, "PatchMergingV2"): PatchMergingHandler(norm_on_input=False),
    ("torchvision.models.vision_transformer", "VisionTransformer"): VisionTransformerHandler(),
    ("torchvision.models.vision_transformer", "Encoder"): ParameterOwner(),
    (_MAXVIT, "PartitionAttentionLayer"): ParameterOwner(),
    (_MAXVIT, "MaxVitLayer"): ParameterOwner(),
    ("torchvision.models.convnext", "CNBlock"): ParameterOwner(),
    ("torchvision.models.convnext", "LayerNorm2d"): ParameterOwner(),
})

# timm's layer types are registered by hwprune.timm_handlers (imported by hwprune.graph), which
# imports this module: never the other way round (no import cycle)
