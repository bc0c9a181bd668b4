"""Channel groups: sets of channels that must be cut together.

Residual sums, concatenations, depthwise/grouped convolutions, normalisation layers, linear
heads, squeeze-excitation and ViT attention/MLP dimensions all couple channels across layers.
We find the coupling with Torch-Pruning's dependency graph (DepGraph, Fang et al. CVPR 2023),
through :mod:`hwprune.tp_compat` (the one module that reaches into its internals), and expose it
as our own :class:`ChannelGroup`. Layer types the tracer does not know natively are cut by their
:mod:`hwprune.handlers` (a registry keyed by type, open to users).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from . import tp_compat
from .errors import ConfigError, PlanMismatchError, UnsupportedModelError
from . import timm_handlers  # noqa: F401 (registers timm's layer types by name; never imports timm)
from .handlers import handler_for

_ROOT_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.MultiheadAttention)
_SUPPORTED_LEAVES = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.Linear, nn.MultiheadAttention,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.InstanceNorm2d,
    nn.PReLU, nn.Embedding, nn.LSTM,
)


@dataclass(frozen=True)
class LayerRef:
    """One layer touched by a group: ``side`` is 'out' (its output channels shrink) or 'in'.
    ``channels``: how many of that side's channels the group's full width maps to (the group's
    width through a plain index map or a concatenation; width x H x W where a Linear reads a
    flattened feature map; 0 where unknown)."""

    module: str
    type: str
    side: str
    channels: int = 0


def kept_channels(full: int, feeds, widths: Mapping[str, int]) -> int:
    """Channels left of a layer side with ``full`` channels, fed by ``feeds`` -- (group name,
    group width, multiplicity) -- when each group keeps ``widths[name]`` (missing: all)."""
    return full - sum(m * (w - int(widths.get(name, w))) for name, w, m in feeds)


@dataclass(frozen=True)
class LayerIO:
    """How one layer's channel counts follow the group widths.

    ``cin``/``cout``: the layer's full input/output channels (features for a Linear; 0 where the
    layer has no such count). ``ins``/``outs``: (group, multiplicity) pairs: cutting one channel of
    the group removes ``multiplicity`` channels of that side (1 through an index map or a
    concatenation, H*W where a Linear reads a flattened map, 3 for an attention unit's q/k/v
    output, 4 for Swin patch merging's input). Several ``ins`` = a concatenation of groups;
    channels no group controls stay. ``depthwise``: cost follows the output channels alone."""

    cin: int
    cout: int
    ins: tuple = ()
    outs: tuple = ()
    depthwise: bool = False

    def widths(self, widths: Mapping[str, int]) -> tuple[int, int]:
        """(cin, cout) under a width assignment (groups missing from ``widths`` stay full)."""
        return (kept_channels(self.cin, [(g.name, g.width, m) for g, m in self.ins], widths),
                kept_channels(self.cout, [(g.name, g.width, m) for g, m in self.outs], widths))

    def fractions(self, widths: Mapping[str, int]) -> tuple[float, float]:
        """(kept input fraction, kept output fraction) under ``widths``."""
        cin, cout = self.widths(widths)
        return (cin / self.cin if self.cin else 1.0), (cout / self.cout if self.cout else 1.0)


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
    # parameters outside any layer that the cut shrinks (ViT's class token and position
    # embedding): (name, elements per channel of the group)
    free_params: tuple = ()
    # kind "heads": the group's unit is one whole attention head of ``head_dim`` channels (its
    # q, k and v rows in the fused projection and its columns in the output projection)
    head_dim: int = 0
    attention: str = ""
    # the conv groups of the grouped (not depthwise) convs among the members (lcm; 1 if none):
    # each conv group's channels meet the grid on their own (see ``step``)
    conv_groups: int = 1

    @property
    def layers(self) -> list[str]:
        """Names of the layers whose cost this group changes (both sides)."""
        return sorted({m.module for m in self.members})

    def step(self, align: int) -> int:
        """Width granularity: a multiple of ``align`` and of ``blocks``. A group no wider than
        one step is not pruned (its only grid width is its full width): a 16-channel group on a
        16 grid stays 16 -- 8 would drop the layer out of a blocked SIMD layout (ORT's NCHWc on
        AVX-512), which costs more in the network than the channels save.

        A grouped conv's kernels see one conv group's channels at a time, so where the full width
        gives every conv group a multiple of ``align`` channels, each conv group keeps a multiple
        of ``align``: ORT runs a grouped conv in its blocked layout only when the input and output
        channels *per conv group* are multiples of the NCHWc block. Measured on an AVX2 host
        (block 8, 2026-12-04, ``tools/unit_check.py``): regnet_y_400mf's grouped convs cut from 8
        to 4 channels per conv group each ran 50 us (14x14) to 290 us (56x56) *slower* in the
        network, and cutting all seven made the model 0.34 ms slower, not faster."""
        if self.kind == "heads":  # one head is already d (64 on most ViTs) channels wide
            return 1
        a = max(1, align)
        s = math.lcm(a, self.blocks)
        if self._conv_groups_on_grid(a):
            s = math.lcm(s, self.conv_groups * a)
        return s if s < self.width else self.width

    def _conv_groups_on_grid(self, align: int) -> bool:
        """At full width, every conv group of the grouped convs among the members is a multiple of
        ``align`` channels wide (and must stay so: :meth:`step`)."""
        return self.conv_groups > 1 and (self.width // self.conv_groups) % align == 0

    def step_reason(self, align: int) -> str:
        """Why :meth:`step` is coarser than ``align`` ("" where it is not): the conv groups or the
        blocks (heads) every width must split into. For ``hwprune inspect``."""
        s, a = self.step(align), max(1, align)
        if self.kind == "heads" or s == a:
            return ""
        if self._conv_groups_on_grid(a):
            why = f"{self.conv_groups} conv groups x {a}: each conv group stays a multiple of the grid"
        else:
            why = f"a multiple of {a} that splits into {self.blocks} equal blocks (conv groups / heads)"
        return f"step {s} = {why}" + (" -- only the full width fits" if s == self.width else "")

    def candidate_widths(self, align: int = 8, min_width: int = 8, max_prune: float = 1.0) -> list[int]:
        """Widths on the hardware grid, ascending; always includes the full width. ``max_prune``:
        the largest fraction of the group's channels (or heads) a width may remove."""
        if not self.prunable:
            return [self.width]
        s = self.step(align)
        lo = 1 if self.kind == "heads" else max(s, min_width)
        if max_prune < 1.0:
            lo = max(lo, math.ceil((1.0 - max_prune) * self.width - 1e-9))
        ws = [w for w in range(s, self.width + 1, s) if w >= lo]
        if not ws or ws[-1] != self.width:
            ws.append(self.width)
        return ws

    def snap(self, width: float, align: int = 8, min_width: int = 8, max_prune: float = 1.0) -> int:
        """Nearest grid width to ``width`` (ties go up, so we never cut more than asked)."""
        ws = self.candidate_widths(align, min_width, max_prune)
        return min(ws, key=lambda w: (abs(w - width), -w))


#: names of the projections into attention heads (timm: qkv; others: q, k, v, ...)
HEAD_PROJECTIONS = ("qkv", "q", "k", "v", "to_qkv", "q_proj", "k_proj", "v_proj", "query", "key", "value")


def _unknown_param_owners(model: nn.Module, allow: Iterable[str]) -> dict[str, str]:
    """Parameters owned directly by modules no handler knows (a timm-style ViT's root owns its
    class token and position embedding): ``{param name: owner module name}``. Torch-Pruning maps
    them as unwrapped parameters to the groups they are coupled to; see :class:`ChannelGraph`."""
    allow = set(allow)
    out = {}
    for name, mod in model.named_modules():
        if name in allow or isinstance(mod, _SUPPORTED_LEAVES) or handler_for(mod) is not None:
            continue
        for pname, _ in mod.named_parameters(recurse=False):
            out[f"{name}.{pname}" if name else pname] = name
    return out


def _heads_of(model: nn.Module, name_of: dict) -> dict[nn.Module, tuple[str, int]]:
    """Linears that feed the heads of a user-written attention module (one with an int
    ``num_heads`` and no handler): ``{linear: (attention module name, num_heads)}``. Their output
    is reshaped into heads by code the tracer does not follow, so hwprune keeps it whole."""
    out = {}
    for mod in model.modules():
        heads = getattr(mod, "num_heads", None)
        if isinstance(mod, nn.MultiheadAttention) or handler_for(mod) is not None or not isinstance(heads, int):
            continue
        for child_name, child in mod.named_children():
            if isinstance(child, nn.Linear) and child_name.lower() in HEAD_PROJECTIONS:
                out[child] = (name_of[mod], heads)
    return out




def _side_channels(mod: nn.Module, side: str) -> int:
    """Channels of a plain layer's input ('in') or output side (0 where unknown)."""
    if isinstance(mod, nn.Linear):
        return mod.in_features if side == "in" else mod.out_features
    if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return mod.in_channels if side == "in" else mod.out_channels
    return 0


class ChannelGraph:
    """The channel groups of one model instance (bound to that instance: pruning mutates it)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, ignore: Sequence[str] = ()):
        self.model = model
        self.example_input = example_input
        self._name_of = {m: n for n, m in model.named_modules()}
        self._param_name = {id(p): n for n, p in model.named_parameters()}
        unknown_params = _unknown_param_owners(model, ignore)
        self._head_inputs = _heads_of(model, self._name_of)
        was_training = model.training
        model.eval()
        handled = [(m, h) for m in model.modules() for h in [handler_for(m)] if h is not None]
        for m, h in handled:
            why = h.unsupported(m)
            if why:
                raise UnsupportedModelError(f"module {self._name_of[m]!r} ({type(m).__name__}): {why}")
        cutters = {type(m): h for m, h in handled if h.cuts}
        order: list[nn.Module] = []  # Conv/Linear layers in the order the trace runs them
        hooks = [m.register_forward_hook(lambda mod, i, o: order.append(mod))
                 for m in model.modules() if isinstance(m, _ROOT_TYPES)]
        try:
            params = dict(model.named_parameters())
            self._dg = tp_compat.build_dependency_graph(model, example_input, cutters,
                                                        opaque=[m for m, h in handled if h.opaque],
                                                        unwrapped=[params[n] for n in unknown_params if n in params])
        except Exception as e:
            raise UnsupportedModelError(
                f"tracing {type(model).__name__} for channel coupling failed: {type(e).__name__}: {e}"
            ) from e
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        self._uncertain_splits = tp_compat.repair_splits(self._dg)
        # the last Conv/Linear the trace ran: its output channels are the model's outputs (read off
        # the trace's own forward pass; a second pass cost a third of building the graph)
        output_layer = order[-1] if order else None
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
        self._check_mapped(unknown_params)

    def _check_mapped(self, unknown_params: dict[str, str]) -> None:
        """Every parameter of a module no handler knows must be mapped: cut with the group it is
        coupled to (Torch-Pruning's unwrapped parameters), or shaped so that no group's cut can
        reach it. One that matches a prunable group's width without being in it cannot be mapped."""
        mapped = {n for g in self.groups for n, _ in g.free_params}
        params = dict(self.model.named_parameters())
        widths = {g.width: g.name for g in self.groups if g.prunable}
        for pname, owner in unknown_params.items():
            if pname in mapped:
                continue
            hit = next((widths[d] for d in params[pname].shape if d in widths), None)
            if hit is not None:
                raise UnsupportedModelError(
                    f"parameter {pname!r} of module {owner!r} ({type(self.model.get_submodule(owner)).__name__}) has a "
                    f"dimension as wide as channel group {hit!r}, but the trace does not couple it to any group, so a "
                    f"cut would leave it the wrong size. Register a handler for its module type "
                    f"(hwprune.handlers.register_handler) or keep those channels with --ignore {owner or hit}.")

    # ------------------------------------------------------------------ construction helpers
    def _describe(self, g, ignored_mods) -> ChannelGroup | None:
        members, types, blocks, has_add, frozen, free = [], set(), 1, False, "", []
        conv_groups = 1
        width = len(g[0].idxs)
        for item in g:
            dep = item.dep
            mod = dep.target.module
            side = tp_compat.dep_side(dep)
            if isinstance(mod, nn.Module) and mod in self._name_of:
                if mod in ignored_mods and side == "out":
                    return None
                members.append(LayerRef(self._name_of[mod], type(mod).__name__, side, len(item.idxs)))
                types.add(type(mod))
                if isinstance(mod, nn.Conv2d) and 1 < mod.groups == mod.in_channels != mod.out_channels:
                    frozen = frozen or (f"depthwise conv {self._name_of[mod]!r} has a channel multiplier "
                                        f"({mod.in_channels} -> {mod.out_channels}), which Torch-Pruning cuts as a dense conv")
                n = _side_channels(mod, side)
                if n and item.idxs and max(int(getattr(i, "idx", i)) for i in item.idxs) >= n:
                    frozen = frozen or (f"the trace maps its channels beyond the {n} {side}put channels of "
                                        f"{self._name_of[mod]!r} ({type(mod).__name__}): a transpose or reshape it does "
                                        "not follow (e.g. an MLP mixing tokens, not channels)")
                if isinstance(mod, nn.MultiheadAttention):
                    blocks = math.lcm(blocks, mod.num_heads)
                if side == "out" and mod in self._head_inputs:
                    attn, heads = self._head_inputs[mod]
                    frozen = frozen or (f"{self._name_of[mod]!r} feeds the {heads} heads of {attn!r}, reshaped by code the "
                                        "tracer does not follow; its heads are kept whole")
                h = handler_for(mod)
                if h is not None:
                    blocks = math.lcm(blocks, h.blocks(mod))
                    why = h.frozen(mod)
                    if why:
                        frozen = frozen or f"{self._name_of[mod]!r}: {why}"
                    if h.group_kind:
                        types.add(h.group_kind)
                if isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels:
                    types.add("dw")
                if tp_compat.is_grouped_conv(mod):
                    blocks = math.lcm(blocks, mod.groups)
                    conv_groups = math.lcm(conv_groups, mod.groups)
                    if [int(getattr(i, "idx", i)) for i in item.idxs] != list(range(width)):
                        frozen = frozen or f"grouped conv {self._name_of[mod]!r} is reached through an index map"
            elif isinstance(mod, torch.Tensor) and id(mod) in self._param_name:  # an unwrapped parameter
                if mod.numel() % width == 0:
                    free.append((self._param_name[id(mod)], mod.numel() // width))
            elif tp_compat.is_sum(dep):
                has_add = True
            elif mod in self._uncertain_splits:
                frozen = frozen or self._uncertain_splits[mod]
            elif tp_compat.through_channel_mixer(dep):
                frozen = "channels pass through a channel shuffle (interleaved across concat halves)"
        if not members:
            return None
        root = g[0].dep.target.module
        name = self._name_of[root]
        if nn.MultiheadAttention in types or "embed" in types:
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
        if root in self._head_inputs:
            heads = self._heads_group(name, root, members, width, free)
            if heads is not None:
                return heads
        if not frozen and width % blocks:
            frozen = f"width {width} does not split into {blocks} equal blocks (heads / conv groups)"
        if not frozen and width <= 1:
            frozen = "width 1"
        return ChannelGroup(name=name, width=width, kind=kind, members=members, blocks=blocks,
                            prunable=not frozen, reason=frozen, free_params=tuple(dict.fromkeys(free)),
                            conv_groups=conv_groups)

    def _heads_group(self, name, root, members, width, free) -> ChannelGroup | None:
        """The channels of a fused q/k/v projection (``qkv``: 3 x heads x head_dim outputs) as whole
        heads: Torch-Pruning couples channel *c* of q with *c* of k, of v and input *c* of the output
        projection (through the reshape and unbind), so cutting the d channels of head *h* in q
        cuts the head everywhere, and the module's ``num_heads`` drops by one (set after the cut,
        :meth:`prune_`). This is the search dimension EAPruning (Li et al. 2022) and Torch-Pruning's
        ``prune_num_heads`` give vision transformers: fewer heads, each as wide as before.

        Only the plain layout is taken: fused qkv, one output projection reading ``heads x d``
        inputs, nothing else in the group, no other layer of the attention as wide as
        ``heads x d`` (an output norm or a gate would also need cutting). Anything else stays
        frozen with the reason :meth:`_describe` gives (heads kept whole)."""
        attn_name, heads = self._head_inputs[root]
        attn = self.model.get_submodule(attn_name)
        d = getattr(attn, "head_dim", None)
        d = d if isinstance(d, int) and d > 0 else root.out_features // max(1, 3 * heads)
        inner = heads * d
        if heads < 2 or free or root.out_features != 3 * inner or width != 3 * inner:
            return None
        by_module = {}
        for m in members:
            by_module.setdefault(m.module, set()).add(m.side)
        others = [n for n in by_module if n != name]
        if by_module.get(name) != {"out"} or len(others) != 1 or by_module[others[0]] != {"in"}:
            return None
        proj = self.model.get_submodule(others[0])
        if not isinstance(proj, nn.Linear) or proj.in_features != inner:
            return None
        for child in attn.modules():
            if child in (attn, root, proj):
                continue
            if any(inner in p.shape for p in child.parameters(recurse=False)):
                return None
        # per-head parameters of the attention itself (timm Swin's relative position bias table,
        # XCiT's temperature) would need cutting with the heads: heads kept whole
        if any(heads in p.shape for p in attn.parameters(recurse=False)):
            return None
        return ChannelGroup(name=name, width=heads, kind="heads",
                            members=(LayerRef(name, "Linear", "out", 3 * inner), LayerRef(others[0], "Linear", "in", inner)),
                            head_dim=d, attention=attn_name)

    def head_channels(self, group: ChannelGroup, heads: Sequence[int]) -> list[int]:
        """The root channels (of q, in the fused projection) of whole heads ``heads`` of a heads group."""
        d = group.head_dim
        return [h * d + j for h in heads for j in range(d)]

    def group_scores(self, group: ChannelGroup, scores: torch.Tensor) -> torch.Tensor:
        """Per-unit scores of ``group`` from channel scores a criterion computed on its layers: a
        heads group's channel scores (q's ``heads x d``, or the fused projection's ``3 x heads x d``
        outputs) are summed per head; any other group's pass through."""
        if group.kind != "heads" or scores.numel() == group.width:
            return scores
        per = scores.numel() // group.width
        if per * group.width != scores.numel():
            raise ValueError(f"{scores.numel()} channel scores do not split into the {group.width} heads of {group.name!r}")
        if per == 3 * group.head_dim:  # q, k, v blocks of the fused projection
            return scores.reshape(3, group.width, group.head_dim).sum(dim=(0, 2))
        return scores.reshape(group.width, per).sum(dim=1)

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
        g = self.group(name)
        idxs = list(range(g.width)) if idxs is None else list(idxs)
        if g.kind == "heads":  # whole heads: their d channels each (of q; k, v and the output projection follow)
            idxs = self.head_channels(g, idxs)
        return self._dg.get_pruning_group(root, fn, idxs)

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def layer_io(self, expand_units: bool = False) -> dict[str, LayerIO]:
        """Per member layer: how its input and output channel counts follow the group widths
        (see :class:`LayerIO`). This is what cost models need: a conv's cost depends on both
        sides, and a side may be fed by several groups (a concatenation) or by a group through a
        flatten (a Linear reading C x H x W features).

        Attention layers (and any tied handler's module) take input and output width from the
        same (embedding) group; depthwise convs follow their output channels. With
        ``expand_units``, composite members are listed by the leaf layers whose size the group
        scales (MultiheadAttention adds its ``out_proj``; a handler's module is replaced by its
        :meth:`~hwprune.handlers.ModuleHandler.leaf_layers`: Swin/MaxViT attention units by their
        q/k/v and output Linear layers, Swin patch merging by ``reduction`` and ``norm``), so
        FLOPs/parameter models see every layer a cut shrinks."""
        sides: dict[str, dict[str, list]] = {}
        for g in self.groups:
            for m in g.members:
                io = sides.setdefault(m.module, {"in": [], "out": [], "tied": []})
                mod = self.module(m.module)
                h = handler_for(mod)
                if isinstance(mod, nn.MultiheadAttention) or (h is not None and h.tied):
                    io["tied"].append(g)
                else:
                    mult = m.channels // g.width if m.channels and m.channels % g.width == 0 else 1
                    io[m.side].append((g, mult))
        res: dict[str, LayerIO] = {}
        for layer, io in sides.items():
            mod = self.module(layer)
            if io["tied"]:
                g = io["tied"][-1]
                res[layer] = LayerIO(g.width, g.width, ((g, 1),), ((g, 1),))
                continue
            ins, outs = tuple(io["in"]), tuple(io["out"])
            if isinstance(mod, nn.Conv2d):
                cin, cout = mod.in_channels, mod.out_channels
                dw = mod.groups > 1 and mod.groups == mod.in_channels
            elif isinstance(mod, nn.Linear):
                cin, cout, dw = mod.in_features, mod.out_features, False
            else:  # norms, stand-in units: the groups' own channels
                cin, cout, dw = sum(g.width * k for g, k in ins), sum(g.width * k for g, k in outs), False
            res[layer] = LayerIO(cin, cout, ins, outs, dw)
        if expand_units:
            for layer, io in list(res.items()):
                mod = self.module(layer)
                h = handler_for(mod)
                leaves = h.leaf_layers(mod) if h is not None else None
                if isinstance(mod, nn.MultiheadAttention):
                    res[f"{layer}.out_proj"] = io
                    (g, _), = io.ins  # in_proj_weight (3E x E): no module of its own; q, k and v per channel
                    res[f"{layer}.in_proj"] = LayerIO(g.width, 3 * g.width, ((g, 1),), ((g, 3),))
                elif leaves is not None:
                    del res[layer]  # its own parameters (per-head position tables) keep their size
                    # channels per group channel: n // width; a side no group feeds ("fixed") keeps its size
                    feeds = {"in": io.ins[:1], "out": io.outs[:1]}
                    for leaf in leaves:
                        res[f"{layer}.{leaf.name}"] = LayerIO(
                            leaf.cin, leaf.cout, tuple((g, leaf.cin // g.width) for g, _ in feeds.get(leaf.cin_side, ())),
                            tuple((g, leaf.cout // g.width) for g, _ in feeds.get(leaf.cout_side, ())))
        return res

    def layer_groups(self, expand_units: bool = False) -> dict[str, tuple[ChannelGroup | None, ChannelGroup | None]]:
        """Per member layer: (a group controlling its input channels, the group controlling its
        outputs) -- the first of several for a concatenation; :meth:`layer_io` has them all."""
        return {layer: (io.ins[0][0] if io.ins else None, io.outs[0][0] if io.outs else None)
                for layer, io in self.layer_io(expand_units).items()}

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
            tp_compat.prune_group(self._dg, self.tp_group(name, remove))
            if g.kind == "heads":
                attn = self.model.get_submodule(g.attention)
                attn.num_heads = len(keep_set)
                if isinstance(getattr(attn, "attn_dim", None), int):  # timm >= 1.0.20
                    attn.attn_dim = len(keep_set) * g.head_dim
        self._stale = True
        fix_width_attributes(self.model)
        self._check_runs(kept)
        return self.model

    def _check_runs(self, kept: Mapping[str, Sequence[int]]) -> None:
        """The cut model must still run on the example input: a coupling the trace got wrong (a
        layer it did not see, a reshape it did not follow) is refused here, naming the groups cut,
        rather than handed back as a model that fails later."""
        was = self.model.training
        try:
            with torch.no_grad():
                self.model.eval()(self.example_input)
        except Exception as e:
            cut = [n for n, k in kept.items() if len(k) < self.group(n).width]
            raise UnsupportedModelError(
                f"{type(self.model).__name__} no longer runs after cutting {len(cut)} channel groups "
                f"(e.g. {', '.join(cut[:3])}): {type(e).__name__}: {str(e)[:300]}. A layer couples these channels in "
                "a way the trace did not see; keep them with --ignore MODULE (hwprune inspect lists the groups' "
                "layers) or register a handler for the module type (hwprune.handlers.register_handler)") from None
        finally:
            self.model.train(was)


def fix_width_attributes(model: nn.Module) -> None:
    """Update attributes that depend on widths so the pruned model runs and exports."""
    for mod in model.modules():
        if isinstance(mod, nn.MultiheadAttention):
            mod.embed_dim = mod.out_proj.out_features
            mod.kdim = mod.vdim = mod.embed_dim
            mod.head_dim = mod.embed_dim // mod.num_heads
        h = handler_for(mod)
        if h is not None:
            h.fix_widths(mod)


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
