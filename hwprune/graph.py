"""Channel groups: sets of channels that must be cut together.

Residual sums, concatenations, depthwise/grouped convolutions, normalisation layers, linear
heads, squeeze-excitation and ViT attention/MLP dimensions all couple channels across layers.
We find the coupling with Torch-Pruning's dependency graph (DepGraph, Fang et al. CVPR 2023) and
expose it as our own :class:`ChannelGroup`; nothing outside this module imports torch_pruning.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from .errors import ConfigError, PlanMismatchError, UnsupportedModelError

_ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.MultiheadAttention)
_SUPPORTED_LEAVES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear, nn.MultiheadAttention,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d,
    nn.PReLU, nn.Embedding, nn.LSTM,
)


@dataclass(frozen=True)
class LayerRef:
    """One layer touched by a group: ``side`` is 'out' (its output channels shrink) or 'in'."""

    module: str
    type: str
    side: str


@dataclass
class ChannelGroup:
    """A set of coupled channels; cutting channel *i* of the group cuts it in every member.

    ``blocks`` > 1 means the channels form that many equal contiguous blocks (attention heads)
    and every block must keep the same number of channels.
    """

    name: str
    width: int
    kind: str
    members: tuple[LayerRef, ...]
    blocks: int = 1
    prunable: bool = True
    reason: str = ""

    @property
    def layers(self) -> list[str]:
        """Names of the layers whose cost this group changes (both sides)."""
        return sorted({m.module for m in self.members})

    def step(self, align: int) -> int:
        """Width granularity: a multiple of ``align`` and of ``blocks`` where the width allows."""
        s = math.lcm(max(1, align), self.blocks)
        return s if s < self.width else self.blocks

    def candidate_widths(self, align: int = 8, min_width: int = 8) -> list[int]:
        """Widths on the hardware grid, ascending; always includes the full width."""
        if not self.prunable:
            return [self.width]
        s = self.step(align)
        lo = max(s, min_width)
        ws = [w for w in range(s, self.width + 1, s) if w >= lo]
        if not ws or ws[-1] != self.width:
            ws.append(self.width)
        return ws

    def snap(self, width: float, align: int = 8, min_width: int = 8) -> int:
        """Nearest grid width to ``width`` (ties go up, so we never cut more than asked)."""
        ws = self.candidate_widths(align, min_width)
        return min(ws, key=lambda w: (abs(w - width), -w))


def _leaf_type_check(model: nn.Module, allow: Iterable[str]) -> None:
    """Refuse modules that own parameters we cannot map to channels, naming them."""
    allow = set(allow)
    known_owner_types = {
        "VisionTransformer", "Encoder",  # torchvision ViT: class token, position embedding
        "ShiftedWindowAttention", "ShiftedWindowAttentionV2",  # Swin relative position tables
        "RelativePositionalMultiHeadAttention", "PartitionAttentionLayer", "MaxVitLayer",  # MaxViT
        "CNBlock", "LayerNorm2d",  # ConvNeXt layer scale
    }
    for name, mod in model.named_modules():
        if name in allow or not any(True for _ in mod.parameters(recurse=False)):
            continue
        if isinstance(mod, _SUPPORTED_LEAVES) or type(mod).__name__ in known_owner_types:
            continue
        raise UnsupportedModelError(
            f"module {name!r} of type {type(mod).__name__} owns parameters "
            f"({', '.join(n for n, _ in mod.named_parameters(recurse=False))}) that hwprune cannot map to "
            f"channels. Re-express it with standard layers, or freeze it with --ignore {name}."
        )


class ChannelGraph:
    """The channel groups of one model instance (bound to that instance: pruning mutates it)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str] = ()):
        import torch_pruning as tp

        self.model = model
        self.example_input = example_input
        self._name_of = {m: n for n, m in model.named_modules()}
        _leaf_type_check(model, ignore)
        was_training = model.training
        model.eval()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        except Exception as e:
            raise UnsupportedModelError(
                f"tracing {type(model).__name__} for channel coupling failed: {type(e).__name__}: {e}"
            ) from e
        finally:
            model.train(was_training)
        output_layer = self._output_layer()
        ignored_mods = [model.get_submodule(n) for n in ignore] + ([output_layer] if output_layer is not None else [])
        ignored_mods = list(dict.fromkeys(ignored_mods))
        self._roots: dict[str, tuple[nn.Module, object]] = {}
        self.groups: list[ChannelGroup] = []
        for g in self._dg.get_all_groups(ignored_layers=ignored_mods, root_module_types=_ROOT_TYPES):
            cg = self._describe(g, ignored_mods)
            if cg is None:
                continue
            self._roots[cg.name] = (g[0].dep.target.module, g[0].dep.handler)
            self.groups.append(cg)
        self._by_name = {g.name: g for g in self.groups}
        self._stale = False

    # ------------------------------------------------------------------ construction helpers
    def _output_layer(self) -> nn.Module | None:
        """The last Conv/Linear executed: its output channels are the model's outputs."""
        order: list[nn.Module] = []
        hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
                 for m in self.model.modules() if isinstance(m, _ROOT_TYPES)]
        try:
            with torch.no_grad():
                self.model.eval()(self.example_input)
        finally:
            for h in hooks:
                h.remove()
        return order[-1] if order else None

    def _describe(self, g, ignored_mods) -> ChannelGroup | None:
        members, types, blocks, has_add = [], set(), 1, False
        for item in g:
            dep = item.dep
            mod = dep.target.module
            fn = getattr(dep.handler, "__name__", str(dep.handler))
            side = "in" if "in_channels" in fn else "out"
            if isinstance(mod, nn.Module) and mod in self._name_of:
                if mod in ignored_mods and side == "out":
                    return None
                members.append(LayerRef(self._name_of[mod], type(mod).__name__, side))
                types.add(type(mod))
                if isinstance(mod, nn.MultiheadAttention):
                    blocks = math.lcm(blocks, mod.num_heads)
                if isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels:
                    types.add("dw")
            elif "Add" in str(dep.target):
                has_add = True
        if not members:
            return None
        root = g[0].dep.target.module
        name = self._name_of[root]
        width = len(g[0].idxs)
        if nn.MultiheadAttention in types:
            kind = "embed"
        elif has_add:
            kind = "residual"
        elif "dw" in types:
            kind = "dwconv"
        elif isinstance(root, nn.Linear):
            kind = "linear"
        else:
            kind = "conv"
        members = tuple(dict.fromkeys(members))
        prunable = width > 1 and width % blocks == 0
        return ChannelGroup(name=name, width=width, kind=kind, members=members, blocks=blocks,
                            prunable=prunable, reason="" if prunable else "width not divisible into blocks")

    # ------------------------------------------------------------------ queries
    def group(self, name: str) -> ChannelGroup:
        try:
            return self._by_name[name]
        except KeyError:
            raise PlanMismatchError(f"the model has no channel group {name!r}") from None

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable]

    def tp_group(self, name: str, idxs: Sequence[int] | None = None):
        """The underlying Torch-Pruning group (for importance criteria); idxs default to all."""
        root, fn = self._roots[name]
        return self._dg.get_pruning_group(root, fn, list(range(self.group(name).width)) if idxs is None else list(idxs))

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def layer_groups(self) -> dict[str, tuple[ChannelGroup | None, ChannelGroup | None]]:
        """Per member layer: (group controlling its input channels, group controlling its outputs).

        This is what cost models need: a conv's cost depends on both. Attention layers take
        input and output width from the same (embedding) group; depthwise convs list only 'out'.
        """
        res: dict[str, tuple[ChannelGroup | None, ChannelGroup | None]] = {}
        for g in self.groups:
            for m in g.members:
                gin, gout = res.get(m.module, (None, None))
                if m.type == "MultiheadAttention":
                    gin = gout = g
                elif m.side == "in":
                    gin = g
                else:
                    gout = g
                res[m.module] = (gin, gout)
        return res

    # ------------------------------------------------------------------ mutation
    def prune_(self, kept: Mapping[str, Sequence[int]]) -> nn.Module:
        """Remove every channel not in ``kept[group]``, in place; returns the (now smaller) model."""
        if self._stale:
            raise RuntimeError("this ChannelGraph was already used to prune; build a new one")
        for name, keep in kept.items():
            g = self.group(name)
            keep_set = set(int(i) for i in keep)
            if not keep_set or min(keep_set) < 0 or max(keep_set) >= g.width:
                raise PlanMismatchError(
                    f"group {name!r} has width {g.width}; kept indices must be a non-empty subset of 0..{g.width - 1}"
                )
            if g.blocks > 1:
                per = g.width // g.blocks
                counts = {sum(1 for i in keep_set if i // per == b) for b in range(g.blocks)}
                if len(counts) != 1:
                    raise PlanMismatchError(
                        f"group {name!r} is split into {g.blocks} attention heads; keep the same number of channels in each"
                    )
            remove = sorted(set(range(g.width)) - keep_set)
            if not remove:
                continue
            if not g.prunable:
                raise PlanMismatchError(f"group {name!r} cannot be pruned ({g.reason})")
            self.tp_group(name, remove).prune()
        self._stale = True
        fix_width_attributes(self.model)
        return self.model


def fix_width_attributes(model: nn.Module) -> None:
    """Update attributes that depend on widths so the pruned model runs and exports."""
    for mod in model.modules():
        if isinstance(mod, nn.MultiheadAttention):
            mod.embed_dim = mod.out_proj.out_features
            mod.kdim = mod.vdim = mod.embed_dim
            mod.head_dim = mod.embed_dim // mod.num_heads
        tname = type(mod).__name__
        if tname == "VisionTransformer" and hasattr(mod, "conv_proj"):
            mod.hidden_dim = mod.conv_proj.out_channels


def keep_top(scores: torch.Tensor, width: int, blocks: int = 1) -> list[int]:
    """Indices of the ``width`` highest scores, sorted; with blocks, the same count per block."""
    n = scores.numel()
    if width >= n:
        return list(range(n))
    if width <= 0:
        raise ConfigError(f"cannot keep {width} channels; keep at least 1")
    if blocks == 1:
        return sorted(torch.topk(scores.float(), width).indices.tolist())
    per, k = n // blocks, width // blocks
    kept: list[int] = []
    for b in range(blocks):
        idx = torch.topk(scores[b * per:(b + 1) * per].float(), k).indices + b * per
        kept.extend(idx.tolist())
    return sorted(kept)
