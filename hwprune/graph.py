"""Channel groups: sets of channels that must be cut together.

Residual sums, concatenations, depthwise/grouped convolutions, normalisation layers, linear
heads, squeeze-excitation and ViT attention/MLP dimensions all couple channels across layers.
We find the coupling with Torch-Pruning's dependency graph (DepGraph, Fang et al. CVPR 2023) and
expose it as our own :class:`ChannelGroup`; nothing outside this module imports torch_pruning.
"""
from __future__ import annotations

import contextlib
import importlib
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


# Attention units whose internals (windowing, relative position tables, head reshapes) the tracer
# cannot follow. While tracing they are replaced by an opaque stand-in (one autograd edge from input
# to output), and pruned by :class:`_AttentionUnitPruner`: the unit's input width, inner q/k/v width
# and output width are one coupled group split into ``heads`` equal blocks (head_dim shrinks; the
# number of heads and the per-head position tables stay). type name -> (qkv linear, output linear,
# heads attribute, head-dim attribute or None).
_ATTENTION_UNITS = {
    "ShiftedWindowAttention": ("qkv", "proj", "num_heads", None),  # Swin
    "ShiftedWindowAttentionV2": ("qkv", "proj", "num_heads", None),  # Swin v2
    "RelativePositionalMultiHeadAttention": ("to_qkv", "merge", "n_heads", "head_dim"),  # MaxViT
}
# Swin's patch merging concatenates four strided spatial slices of its input on the channel axis
# (LayerNorm(4C) -> Linear(4C, 2C)); the tracer misreads the spatial slices, so it is a stand-in
# unit too: input width C (cut in all four copies) and output width 2C are separate groups.
_MERGE_UNITS = ("PatchMerging", "PatchMergingV2")
# Functions that permute channels across a concatenation (ShuffleNet's channel shuffle). Channels
# that flow through one are interleaved, so their coupling is not a plain index map: the groups
# they touch are frozen (with a reason) and the convolutions inside each branch stay prunable.
_CHANNEL_MIXERS = ("torchvision.models.shufflenetv2:channel_shuffle",)


class _OpaqueUnit(torch.autograd.Function):
    """Tracing stand-in: computes the real output, exposes one autograd edge input -> output."""

    @staticmethod
    def forward(ctx, x, fn):
        return fn(x).clone()

    @staticmethod
    def backward(ctx, grad):  # never run: the graph is only walked, not differentiated
        return None, None


class _ChannelMixer(_OpaqueUnit):
    """Tracing stand-in for a channel-permuting function; its grad_fn name marks the groups it touches."""


@contextlib.contextmanager
def _tracing_stand_ins(model: nn.Module):
    """Swap attention units and channel mixers for their stand-ins during tracing only."""
    patched_mods, patched_fns = [], []
    for mod in model.modules():
        if (type(mod).__name__ in _ATTENTION_UNITS or type(mod).__name__ in _MERGE_UNITS) \
                and "forward" not in mod.__dict__:  # leave a user's per-instance forward alone
            real = mod.forward
            mod.forward = lambda x, _real=real: _OpaqueUnit.apply(x, _real)
            patched_mods.append(mod)
    for spec in _CHANNEL_MIXERS:
        mod_name, fn_name = spec.split(":")
        try:
            owner = importlib.import_module(mod_name)
        except ImportError:
            continue
        real = getattr(owner, fn_name)
        setattr(owner, fn_name, lambda x, *a, _real=real, **k: _ChannelMixer.apply(x, lambda t: _real(t, *a, **k)))
        patched_fns.append((owner, fn_name, real))
    try:
        yield
    finally:
        for mod in patched_mods:
            del mod.forward
        for owner, fn_name, real in patched_fns:
            setattr(owner, fn_name, real)


def _is_grouped_conv(mod: nn.Module) -> bool:
    """A grouped (not depthwise) convolution: channels are cut per conv group."""
    return isinstance(mod, nn.Conv2d) and 1 < mod.groups < mod.in_channels


def _prune_grouped_conv_in(layer: nn.Conv2d, idxs: Sequence[int]) -> nn.Conv2d:
    """Remove input channels of a grouped conv, each conv group keeping its own local indices.

    (Torch-Pruning's conv pruner keeps the first group's indices for every group, which is only
    right when the same local channels go in every group.) Requires equal counts per group.
    """
    g, per = layer.groups, layer.in_channels // layer.groups
    drop = set(int(i) for i in idxs)
    local = [[i - b * per for i in range(b * per, (b + 1) * per) if i not in drop] for b in range(g)]
    if len({len(k) for k in local}) != 1:
        raise PlanMismatchError(f"grouped conv with {g} groups must keep the same number of input channels per group")
    rows = layer.out_channels // g
    w = layer.weight.data
    layer.weight = nn.Parameter(torch.cat([w[b * rows:(b + 1) * rows][:, local[b]] for b in range(g)], 0))
    layer.in_channels = g * len(local[0])
    return layer


class _GroupedConvIn:
    """Stands in for a Torch-Pruning dependency that cuts a grouped conv's input channels."""

    def __init__(self, dep):
        self.dep, self.target = dep, dep.target

    def __call__(self, idxs):
        return _prune_grouped_conv_in(self.target.module, [int(getattr(i, "idx", i)) for i in idxs])


def _attention_unit_pruner():
    """A Torch-Pruning pruner for :data:`_ATTENTION_UNITS` (input, inner and output width coupled)."""
    import torch_pruning as tp

    class _AttentionUnitPruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer, idxs):
            qkv_n, out_n, heads_n, hd_n = _ATTENTION_UNITS[type(layer).__name__]
            qkv, out = getattr(layer, qkv_n), getattr(layer, out_n)
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
            if hd_n:
                setattr(layer, hd_n, len(keep) // getattr(layer, heads_n))
            return layer

        prune_in_channels = prune_out_channels  # one coupled width (Torch-Pruning's intra-layer rule)

        def get_out_channels(self, layer):
            return getattr(layer, _ATTENTION_UNITS[type(layer).__name__][1]).out_features

        get_in_channels = get_out_channels

    return _AttentionUnitPruner()


def _patch_merging_pruner():
    """A Torch-Pruning pruner for Swin's PatchMerging (v1: norm on 4C input; v2: norm on 2C output)."""
    import torch_pruning as tp

    def _cut(param, idx, dim):
        return nn.Parameter(torch.index_select(param.data, dim, torch.tensor(idx)))

    class _PatchMergingPruner(tp.pruner.function.BasePruningFunc):
        def prune_in_channels(self, layer, idxs):
            red, c = layer.reduction, layer.reduction.in_features // 4
            keep = sorted(set(range(c)) - set(int(i) for i in idxs))
            cols = [j * c + i for j in range(4) for i in keep]
            red.weight = _cut(red.weight, cols, 1)
            red.in_features = len(cols)
            if type(layer).__name__ == "PatchMerging":
                layer.norm.weight, layer.norm.bias = _cut(layer.norm.weight, cols, 0), _cut(layer.norm.bias, cols, 0)
                layer.norm.normalized_shape = (len(cols),)
            layer.dim = len(keep)
            return layer

        def prune_out_channels(self, layer, idxs):
            red = layer.reduction
            keep = sorted(set(range(red.out_features)) - set(int(i) for i in idxs))
            red.weight = _cut(red.weight, keep, 0)
            if red.bias is not None:
                red.bias = _cut(red.bias, keep, 0)
            red.out_features = len(keep)
            if type(layer).__name__ == "PatchMergingV2":
                layer.norm.weight, layer.norm.bias = _cut(layer.norm.weight, keep, 0), _cut(layer.norm.bias, keep, 0)
                layer.norm.normalized_shape = (len(keep),)
            return layer

        def get_in_channels(self, layer):
            return layer.reduction.in_features // 4

        def get_out_channels(self, layer):
            return layer.reduction.out_features

    return _PatchMergingPruner()


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

    @property
    def layers(self) -> list[str]:
        """Names of the layers whose cost this group changes (both sides)."""
        return sorted({m.module for m in self.members})

    def step(self, align: int) -> int:
        """Width granularity: a multiple of ``align`` and of ``blocks``. A group no wider than
        one step is not pruned (its only grid width is its full width): a 16-channel group on a
        16 grid stays 16 -- 8 would drop the layer out of a blocked SIMD layout (ORT's NCHWc on
        AVX-512), which costs more in the network than the channels save."""
        s = math.lcm(max(1, align), self.blocks)
        return s if s < self.width else self.width

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
        self._param_name = {id(p): n for n, p in model.named_parameters()}
        _leaf_type_check(model, ignore)
        was_training = model.training
        model.eval()
        units = {type(m) for m in model.modules() if type(m).__name__ in _ATTENTION_UNITS}
        merges = {type(m) for m in model.modules() if type(m).__name__ in _MERGE_UNITS}
        custom = {**({t: _attention_unit_pruner() for t in units} if units else {}),
                  **({t: _patch_merging_pruner() for t in merges} if merges else {})}
        try:
            with warnings.catch_warnings(), _tracing_stand_ins(model):
                warnings.simplefilter("ignore")
                self._dg = tp.DependencyGraph().build_dependency(
                    model, example_inputs=example_input, customized_pruners=custom)
        except Exception as e:
            raise UnsupportedModelError(
                f"tracing {type(model).__name__} for channel coupling failed: {type(e).__name__}: {e}"
            ) from e
        finally:
            model.train(was_training)
        self._uncertain_splits = self._repair_splits(tp)
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
    def _repair_splits(self, tp) -> set:
        """Give ``chunk``/``split`` nodes their real channel sizes; returns the repaired nodes.

        On recent PyTorch, SplitBackward saves ``_saved_self_sym_sizes`` (not ``_saved_self_sizes``),
        so Torch-Pruning falls back to inferring split sizes from the consumers and gets them wrong
        (e.g. ShuffleNetV2's ``x.chunk(2, dim=1)``). Which consumer took which chunk is not recorded,
        so groups through a repaired split are frozen (see ``_describe``).
        """
        from torch_pruning.dependency import index_mapping

        repaired = set()
        for node in self._dg.module2node.values():
            gf = node.grad_fn
            size, dim = getattr(gf, "_saved_split_size", None), getattr(gf, "_saved_dim", None)
            sizes = getattr(gf, "_saved_self_sym_sizes", None)
            if node.type != tp.ops.OPTYPE.SPLIT or not size or dim != 1 or not sizes:
                continue
            total = int(sizes[1])
            chs = [min(int(size), total - i * int(size)) for i in range(-(-total // int(size)))]
            if len(chs) != len(node.outputs):
                continue
            node.module.split_sizes = chs
            node.module.offsets = [sum(chs[:i]) for i in range(len(chs) + 1)]
            repaired.add(node.module)
        if repaired:
            index_mapping.update_index_mapping(self._dg)
        return repaired

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
        members, types, blocks, has_add, frozen, free = [], set(), 1, False, "", []
        width = len(g[0].idxs)
        for item in g:
            dep = item.dep
            mod = dep.target.module
            fn = getattr(dep.handler, "__name__", str(dep.handler))
            side = "in" if "in_channels" in fn else "out"
            if isinstance(mod, nn.Module) and mod in self._name_of:
                if mod in ignored_mods and side == "out":
                    return None
                members.append(LayerRef(self._name_of[mod], type(mod).__name__, side, len(item.idxs)))
                types.add(type(mod))
                if isinstance(mod, nn.MultiheadAttention):
                    blocks = math.lcm(blocks, mod.num_heads)
                if type(mod).__name__ in _ATTENTION_UNITS:
                    types.add(nn.MultiheadAttention)
                    blocks = math.lcm(blocks, getattr(mod, _ATTENTION_UNITS[type(mod).__name__][2]))
                if isinstance(mod, nn.Conv2d) and mod.groups > 1 and mod.groups == mod.in_channels:
                    types.add("dw")
                if _is_grouped_conv(mod):
                    blocks = math.lcm(blocks, mod.groups)
                    if [int(getattr(i, "idx", i)) for i in item.idxs] != list(range(width)):
                        frozen = frozen or f"grouped conv {self._name_of[mod]!r} is reached through an index map"
            elif isinstance(mod, torch.Tensor) and id(mod) in self._param_name:  # an unwrapped parameter
                if mod.numel() % width == 0:
                    free.append((self._param_name[id(mod)], mod.numel() // width))
            elif "(AddBackward" in str(dep.target):  # a sum (not the addmm inside a Linear)
                has_add = True
            elif mod in self._uncertain_splits:
                frozen = frozen or "channels pass through a chunk/split whose consumer order is not recorded"
            elif "_ChannelMixer" in str(dep.target) or "_ChannelMixer" in repr(getattr(mod, "type", "")):
                frozen = "channels pass through a channel shuffle (interleaved across concat halves)"
        if not members:
            return None
        root = g[0].dep.target.module
        name = self._name_of[root]
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
        if not frozen and width % blocks:
            frozen = f"width {width} does not split into {blocks} equal blocks (heads / conv groups)"
        if not frozen and width <= 1:
            frozen = "width 1"
        return ChannelGroup(name=name, width=width, kind=kind, members=members, blocks=blocks,
                            prunable=not frozen, reason=frozen, free_params=tuple(dict.fromkeys(free)))

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

    def layer_io(self, expand_units: bool = False) -> dict[str, LayerIO]:
        """Per member layer: how its input and output channel counts follow the group widths
        (see :class:`LayerIO`). This is what cost models need: a conv's cost depends on both
        sides, and a side may be fed by several groups (a concatenation) or by a group through a
        flatten (a Linear reading C x H x W features).

        Attention layers take input and output width from the same (embedding) group; depthwise
        convs follow their output channels. With ``expand_units``, composite members are listed
        by the leaf layers whose size the group scales (MultiheadAttention adds its ``out_proj``;
        Swin/MaxViT attention units are replaced by their q/k/v and output Linear layers, Swin
        patch merging by ``reduction`` and ``norm``), so FLOPs/parameter models see every layer
        a cut shrinks."""
        sides: dict[str, dict[str, list]] = {}
        for g in self.groups:
            for m in g.members:
                io = sides.setdefault(m.module, {"in": [], "out": [], "tied": []})
                if m.type == "MultiheadAttention" or m.type in _ATTENTION_UNITS:
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
                mod, tname = self.module(layer), type(self.module(layer)).__name__
                if isinstance(mod, nn.MultiheadAttention):
                    res[f"{layer}.out_proj"] = io
                    (g, _), = io.ins  # in_proj_weight (3E x E): no module of its own; q, k and v per channel
                    res[f"{layer}.in_proj"] = LayerIO(g.width, 3 * g.width, ((g, 1),), ((g, 3),))
                elif tname in _ATTENTION_UNITS:
                    del res[layer]  # its own parameters (per-head position tables) keep their size
                    (g, _), = io.ins
                    for child in _ATTENTION_UNITS[tname][:2]:
                        lin = mod.get_submodule(child)  # q/k/v: 3 outputs per embedding channel
                        res[f"{layer}.{child}"] = LayerIO(lin.in_features, lin.out_features,
                                                          ((g, lin.in_features // g.width),),
                                                          ((g, lin.out_features // g.width),))
                elif tname in _MERGE_UNITS:
                    del res[layer]
                    red = mod.reduction  # Linear(4C, 2C): each input channel is read in four copies
                    ins = tuple((g, red.in_features // g.width) for g, _ in io.ins[:1])
                    outs = tuple((g, red.out_features // g.width) for g, _ in io.outs[:1])
                    res[f"{layer}.reduction"] = LayerIO(red.in_features, red.out_features, ins, outs)
                    if tname == "PatchMerging":  # LayerNorm(4C) before the reduction
                        res[f"{layer}.norm"] = LayerIO(red.in_features, red.in_features, ins, ins)
                    else:  # v2: LayerNorm(2C) after it
                        res[f"{layer}.norm"] = LayerIO(red.out_features, red.out_features, outs, outs)
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
            group = self.tp_group(name, remove)
            for k, item in enumerate(group):
                dep = item.dep
                if _is_grouped_conv(dep.target.module) and dep.handler in self._dg._in_channel_pruning_fn:
                    group[k] = type(item)(dep=_GroupedConvIn(dep), idxs=item.idxs)
            group.prune()
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
