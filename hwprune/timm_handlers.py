"""Module handlers for timm's own layer types (see :mod:`hwprune.handlers`).

Registered by dotted name like the torchvision built-ins: they resolve once timm's module has been
imported (a ``timm:NAME`` model has imported it), so hwprune never imports timm itself.

- **Channel-wise gates computed across channels** (ECA and circular ECA: a Conv1d slides over the
  pooled channel vector, then ``x * gate``): the gate's parameters (a kernel of a few taps) do not
  depend on the channel count, but Torch-Pruning's tracer follows the channel axis into the
  Conv1d's length axis and does not come back. They are traced as one elementwise edge (channels in
  = channels out) and nothing in them is cut.
- **Selective Kernel** (SKNet: the same input through several dilated conv paths, stacked, mixed by
  a softmax over paths that ``fc_select`` computes for every path x channel): the tracer loses the
  channels in the stack and the (paths, channels) view, so the module is opaque and cut here:
  its output channels in every path's conv and norm and in every path's block of ``fc_select``
  rows (and ``fc_reduce``'s inputs), its input channels in every path's conv.
- **Attention with internals the tracer cannot follow** (BEiT, XCiT, ConViT, CaiT), which also
  computes its head width from its input width: traced as one edge, its embedding kept whole with
  the reason (:class:`KeptWholeHandler`); the MLP and conv widths are still cut.
- **Scaled weight-standardised convolutions** (NF-ResNet, NF-RegNet, NFNet): a Conv2d with a
  per-output-channel ``gain`` that Torch-Pruning's conv pruner does not know; cut with the outputs.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import PlanMismatchError
from .handlers import LeafLayer, ModuleHandler, PatchMergingHandler


def _keep(n: int, idxs) -> list[int]:
    drop = set(int(i) for i in idxs)
    return [i for i in range(n) if i not in drop]


def _select(param: torch.Tensor, keep: list[int], dim: int) -> nn.Parameter:
    return nn.Parameter(torch.index_select(param.data, dim, torch.tensor(keep, dtype=torch.long)),
                        requires_grad=param.requires_grad)


def cut_conv_out(conv: nn.Conv2d, keep: list[int]) -> None:
    conv.weight = _select(conv.weight, keep, 0)
    if conv.bias is not None:
        conv.bias = _select(conv.bias, keep, 0)
    conv.out_channels = len(keep)


def cut_conv_in(conv: nn.Conv2d, keep: list[int]) -> None:
    conv.weight = _select(conv.weight, keep, 1)
    conv.in_channels = len(keep)


def cut_norm(norm: nn.Module, keep: list[int]) -> None:
    """A BatchNorm (timm's BatchNormAct2d included) or a per-channel affine norm."""
    for attr in ("weight", "bias"):
        p = getattr(norm, attr, None)
        if isinstance(p, nn.Parameter):
            setattr(norm, attr, _select(p, keep, 0))
    for attr in ("running_mean", "running_var"):
        b = getattr(norm, attr, None)
        if isinstance(b, torch.Tensor):
            setattr(norm, attr, b.data[torch.tensor(keep, dtype=torch.long)].clone())
    if hasattr(norm, "num_features"):
        norm.num_features = len(keep)


class ChannelGateHandler(ModuleHandler):
    """A gate ``x * f(x)`` whose parameters do not depend on the channel count: opaque, tied."""

    opaque = True


class SelectiveKernelHandler(ModuleHandler):
    """timm's ``SelectiveKernel`` (paths of ConvNormAct on the whole input, ``split_input=False``;
    a split input is refused with the module named by the graph's check)."""

    opaque = True

    @staticmethod
    def _paths(module):
        return [p for p in module.paths]

    def unsupported(self, module):
        if getattr(module, "split_input", False):
            return (f"timm SelectiveKernel (in {module.in_channels}, out {module.out_channels}) splits its input "
                    f"channels across its {module.num_paths} conv paths (split_input=True, as in skresnet18/34); "
                    "hwprune cannot map a cut of its input onto the paths yet. Build it with split_input=False")
        if any(p.conv.groups != 1 for p in module.paths):
            return (f"timm SelectiveKernel with grouped path convolutions (groups {module.paths[0].conv.groups}, as "
                    "in skresnext) cannot be cut by hwprune yet")
        return ""

    def prune_out_channels(self, module, idxs):
        c = module.out_channels
        keep = _keep(c, idxs)
        for path in self._paths(module):
            cut_conv_out(path.conv, keep)
            cut_norm(path.bn, keep)
        attn = module.attn
        cut_conv_in(attn.fc_reduce, keep)
        cut_conv_out(attn.fc_select, [p * c + i for p in range(attn.num_paths) for i in keep])
        module.out_channels = len(keep)
        return module

    def prune_in_channels(self, module, idxs):
        keep = _keep(module.in_channels, idxs)
        for path in self._paths(module):
            cut_conv_in(path.conv, keep)
        module.in_channels = len(keep)
        return module

    def out_channels(self, module):
        return module.out_channels

    def in_channels(self, module):
        return module.in_channels

    def leaf_layers(self, module):
        a, c = module.attn, module.out_channels
        leaves = []
        for i, path in enumerate(module.paths):
            leaves += [LeafLayer(f"paths.{i}.conv", path.conv.in_channels, c),
                       LeafLayer(f"paths.{i}.bn", c, c, "out", "out")]
        return leaves + [LeafLayer("attn.fc_reduce", c, a.fc_reduce.out_channels, "out", "fixed"),
                         LeafLayer("attn.bn", a.bn.num_features, a.bn.num_features, "fixed", "fixed"),
                         LeafLayer("attn.fc_select", a.fc_select.in_channels, a.fc_select.out_channels, "fixed", "out")]


class RefusedHandler(ModuleHandler):
    """A module hwprune refuses up front, with ``reason`` (its coupling makes Torch-Pruning's group
    search run without end)."""

    def __init__(self, reason: str):
        self.reason = reason

    def unsupported(self, module):
        return self.reason


class KeptWholeHandler(ModuleHandler):
    """A module whose internals the tracer cannot follow and whose channels cannot be cut apart from
    its inside: traced as one edge, and every group through it is frozen with ``reason``."""

    # a (refusing) cutter, so that Torch-Pruning keeps the module as a node of the groups through
    # it and the graph can freeze them; tied: one embedding in and out
    opaque, tied = True, True

    def __init__(self, reason: str):
        self.reason = reason

    def frozen(self, module):
        return self.reason

    def prune_out_channels(self, module, idxs):
        raise PlanMismatchError(f"{type(module).__name__}: {self.reason}")

    def out_channels(self, module):
        return _out_width(module)


def _layer_width(module: nn.Module, side: str) -> int:
    """Channels of a module's first layer's input (``side='in'``) or last layer's output (``'out'``),
    among the Conv2d/Linear it holds."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if side == "in":
        return layers[0].in_features if isinstance(layers[0], nn.Linear) else layers[0].in_channels
    return layers[-1].out_features if isinstance(layers[-1], nn.Linear) else layers[-1].out_channels


def _out_width(module: nn.Module) -> int:
    """The channels a module gives out: those of its ``proj`` (a Linear, a conv or a conv-norm block),
    else of the last Conv2d/Linear it holds."""
    return _layer_width(getattr(module, "proj", None) or module, "out")


class KeptWholeSplitHandler(KeptWholeHandler):
    """:class:`KeptWholeHandler` for a module that splits its input by sizes it stores (its width is
    their sum)."""

    def __init__(self, reason: str, sizes: str):
        super().__init__(reason)
        self.sizes = sizes

    def out_channels(self, module):
        return sum(getattr(module, self.sizes))


class KeptWholeWideningHandler(KeptWholeHandler):
    """:class:`KeptWholeHandler` for a module whose output may be wider than its input (the first
    attention of a CoAtNet stage projects ``dim`` to ``dim_out``, a ghost module widens): not tied,
    its input and output are two groups, each frozen with the reason (a tied one would give both
    sides the output's width). ``out_attr``: the attribute holding its output width, where its last
    layer does not give it (a ghost module slices its concatenation to ``out_chs``)."""

    tied = False

    def __init__(self, reason: str, out_attr: str | None = None):
        super().__init__(reason)
        self.out_attr = out_attr

    def prune_in_channels(self, module, idxs):
        raise PlanMismatchError(f"{type(module).__name__}: {self.reason}")

    def out_channels(self, module):
        return getattr(module, self.out_attr) if self.out_attr else _out_width(module)

    def in_channels(self, module):
        return _layer_width(module, "in")


class InsideKeptWholeHandler(ModuleHandler):
    """A module that only lives inside a kept-whole unit (timm's relative position bias tables in
    GCViT's, CoAtNet's and MaxViT's attention; EfficientViT-M's cascaded group attention and its
    attention biases, sized by the heads): the unit is traced as one edge and never cut, so neither
    are its parameters."""


#: attention that reshapes its heads with its *input* width (``C // num_heads``, ``reshape(B, N, C)``)
#: and runs projections or per-head parameters the tracer cannot follow
_TIED_ATTENTION = ("{} reshapes its heads with code the tracer does not follow (head width taken from its input "
                   "width, per-head parameters), so its embedding cannot be cut apart from its heads; its embedding "
                   "channels are kept whole (the MLP and conv widths are cut)")


#: attention whose head reshapes send Torch-Pruning's group search out of bounds
_HEADS_UNTRACED = ("{} reshapes its q/k/v convolutions into heads with code the tracer does not follow, and "
                   "Torch-Pruning's group search on it does not finish ({}); traced as one unit, the channels through "
                   "it are kept whole (the MLP and conv widths are cut)")


class NormHandler(ModuleHandler):
    """A per-channel norm Torch-Pruning does not cut right: timm's bias-free LayerNorm2d/GroupNorm1
    (its norm pruner assumes a bias), RmsNorm/SimpleNorm (not torch norm types). Tied: cut its
    scale (and bias), update the channel count it stores."""

    tied = True

    def prune_out_channels(self, module, idxs):
        n = self.out_channels(module)
        keep = _keep(n, idxs)
        for attr in ("weight", "bias"):
            p = getattr(module, attr, None)
            if isinstance(p, nn.Parameter):
                setattr(module, attr, _select(p, keep, 0))
        if hasattr(module, "num_channels"):
            module.num_channels = len(keep)
        if hasattr(module, "normalized_shape"):
            module.normalized_shape = (len(keep),)
        return module

    def out_channels(self, module):
        if hasattr(module, "num_channels"):
            return module.num_channels
        shape = module.normalized_shape
        return int(shape[-1] if isinstance(shape, (tuple, list)) else shape)


class ScaleHandler(ModuleHandler):
    """timm MetaFormer's ``Scale`` (a layer scale the tracer maps to channels itself) stores the
    view shape of its vector; set it from the cut vector."""

    def fix_widths(self, module):
        module.shape = (module.scale.numel(),) + tuple(module.shape[1:])


class ScaledStdConvHandler(ModuleHandler):
    """timm's ``ScaledStdConv2d``/``ScaledStdConv2dSame`` (normaliser-free nets): the weight is
    standardised per output filter with ``F.batch_norm`` whose scale is ``gain * scale``, ``gain`` a
    parameter of shape (out, 1, 1, 1). Torch-Pruning's conv pruner cuts weight and bias only, so a
    cut model fails in that batch_norm; this cuts ``gain`` with the output channels.

    ``scale`` (``fan_in ** -0.5``, fixed at construction) is kept: it is the constant the trained
    gain was learned against, and keeping it keeps each remaining weight's magnitude (recomputing it
    for the smaller fan-in would scale up every output). Grouped convs' inputs are cut per conv
    group by the graph before reaching here; a depthwise one (input and output one width, which a
    custom pruner does not couple) is frozen with the reason."""

    def frozen(self, module):
        if 1 < module.groups == module.in_channels:
            return (f"depthwise {type(module).__name__} ({module.in_channels} channels): its input and output "
                    "channels are one width, which hwprune's cutter for its gain does not couple yet")
        return ""

    def prune_out_channels(self, module, idxs):
        keep = _keep(module.out_channels, idxs)
        cut_conv_out(module, keep)
        module.gain = _select(module.gain, keep, 0)
        return module

    def prune_in_channels(self, module, idxs):
        if module.groups > 1:
            raise PlanMismatchError(f"{type(module).__name__} with {module.groups} groups: its input channels are "
                                    "cut per conv group by the graph, not here")
        cut_conv_in(module, _keep(module.in_channels, idxs))
        return module

    def out_channels(self, module):
        return module.out_channels

    def in_channels(self, module):
        return module.in_channels


_ECA = "timm.layers.eca"

TIMM_BUILTINS: dict[tuple[str, str], ModuleHandler] = {
    (_ECA, "EcaModule"): ChannelGateHandler(),
    (_ECA, "CecaModule"): ChannelGateHandler(),
    ("timm.layers.selective_kernel", "SelectiveKernel"): SelectiveKernelHandler(),
    ("timm.models.swin_transformer", "PatchMerging"): PatchMergingHandler(norm_on_input=True),
    ("timm.layers.std_conv", "ScaledStdConv2d"): ScaledStdConvHandler(),
    ("timm.layers.std_conv", "ScaledStdConv2dSame"): ScaledStdConvHandler(),
    ("timm.models.pvt_v2", "Attention"): KeptWholeHandler(_TIED_ATTENTION.format("PVTv2 spatial-reduction attention")),
    ("timm.models.twins", "LocallyGroupedAttn"): KeptWholeHandler(_TIED_ATTENTION.format("Twins locally-grouped attention")),
    ("timm.models.twins", "GlobalSubSampleAttn"): KeptWholeHandler(_TIED_ATTENTION.format("Twins global sub-sampled attention")),
    ("timm.models.metaformer", "Scale"): ScaleHandler(),
    ("timm.models.metaformer", "LayerNorm2dNoBias"): NormHandler(),
    ("timm.models.metaformer", "GroupNorm1NoBias"): NormHandler(),
    ("timm.models.metaformer", "LayerNormNoBias"): NormHandler(),
    **{("timm.layers.norm", c): NormHandler() for c in ("RmsNorm", "RmsNorm2d", "RmsNormFp32", "RmsNorm2dFp32",
                                                         "SimpleNorm", "SimpleNorm2d", "SimpleNormFp32", "SimpleNorm2dFp32")},
    ("timm.models.levit", "Attention"): KeptWholeHandler(_TIED_ATTENTION.format("LeViT attention (per-head attention biases)")),
    ("timm.models.levit", "AttentionDownsample"): KeptWholeHandler(_TIED_ATTENTION.format("LeViT downsampling attention")),
    ("timm.models.mlp_mixer", "SpatialGatingUnit"): KeptWholeHandler(
        "gMLP's spatial gating unit splits its input into halves and mixes the tokens of one of them with a "
        "Linear the tracer takes for a channel layer; the channels through it are kept whole"),
    ("timm.models.rexnet", "LinearBottleneck"): RefusedHandler(
        "ReXNet's partial residual (cat([x[:, :in] + shortcut, x[:, in:]])) couples a slice of the block output "
        "with its input; Torch-Pruning's group search does not finish on it, so ReXNet is not supported yet"),
    ("timm.models.swin_transformer_v2_cr", "WindowMultiHeadAttention"): KeptWholeHandler(
        _TIED_ATTENTION.format("Swin V2 (CR) window attention")),
    ("timm.layers.attention2d", "MultiQueryAttention2d"): KeptWholeHandler(
        _TIED_ATTENTION.format("MobileNetV4 multi-query attention")),
    ("timm.models.maxxvit", "AttentionCl"): KeptWholeWideningHandler(
        "timm MaxViT's attention (channels-last) views its qkv Linear's output as heads with code the tracer does "
        "not follow (a relative position bias per head), and Torch-Pruning's group search through it did not finish "
        "(maxvit_pico_rw_256 ran out of an 8 GB cap after 11 minutes at 64 px); traced as one unit, the channels "
        "through it are kept whole (the MLP and conv widths are cut)"),
    **{("timm.models.davit", c): KeptWholeHandler(_TIED_ATTENTION.format(f"DaViT {kind} attention"))
       for c, kind in (("WindowAttention", "window"), ("ChannelAttention", "channel"),
                       ("ChannelAttentionV2", "channel"))},
    **{("timm.models.efficientformer_v2", c): KeptWholeHandler(_HEADS_UNTRACED.format(
        f"EfficientFormerV2 {kind} (attention biases, talking heads: a conv across the heads)",
        "efficientformerv2_s0 ran out of an 8 GB cap in it"))
       for c, kind in (("Attention2d", "attention"), ("Attention2dDownsample", "downsampling attention"))},
    ("timm.models.visformer", "Attention"): KeptWholeHandler(_HEADS_UNTRACED.format(
        "Visformer attention", "visformer_tiny ran past 900 s in it")),
    **{("timm.models.ghostnet", c): KeptWholeWideningHandler(
        "GhostNet's ghost module concatenates a conv's output with a depthwise conv of that same output "
        "(cat([x1, cheap(x1)])[:, :out_chs]), so its output channels i and i + out/2 are one channel, which "
        "hwprune's groups would count as two (a cut emptied a conv of ghostnet_050); its input and output "
        "channels are kept whole (the SE, shortcut and head widths are cut)", "out_chs")
       for c in ("GhostModule", "GhostModuleV2", "GhostModuleV3")},
    ("timm.models.mambaout", "GatedConvBlock"): RefusedHandler(
        "MambaOut's gated conv block splits fc1's output on its last (channels-last) axis into gate, identity and "
        "conv parts of sizes it stores (split_indices); Torch-Pruning maps channels through that split past the "
        "group's width (l1 scoring indexed channel 27 of a 24-wide group in mambaout_femto), so MambaOut is not "
        "supported yet"),
    ("timm.models.gcvit", "WindowAttentionGlobal"): KeptWholeHandler(_TIED_ATTENTION.format(
        "GCViT window attention (a global query repeated over the windows)")),
    # timm.layers' RelPosBias (gcvit and maxxvit import it): a table per head, in attention kept whole (its other
    # user, vit_relpos's RelPosAttention, is not: a cut there fails with or without this entry, in a reshape)
    ("timm.layers.pos_embed_rel", "RelPosBias"): InsideKeptWholeHandler(),
    ("timm.layers.pos_embed_rel", "RelPosBiasTf"): InsideKeptWholeHandler(),  # only in maxxvit's attention
    ("timm.models.maxxvit", "Attention2d"): KeptWholeWideningHandler(_HEADS_UNTRACED.format(
        "CoAtNet's (and NCHW MaxViT's) attention (heads viewed from its qkv conv, a relative position bias per head)",
        "coatnet_pico_rw_224 ran out of an 8 GB cap in it")),
    ("timm.models.efficientvit_msra", "LocalWindowAttention"): KeptWholeHandler(_HEADS_UNTRACED.format(
        "EfficientViT-M (MSRA) cascaded group attention (chunks its input per head, per-head attention biases)",
        "efficientvit_m0 ran out of an 8 GB cap in it")),
    ("timm.models.efficientvit_msra", "CascadedGroupAttention"): InsideKeptWholeHandler(),
    ("timm.models.focalnet", "FocalModulation"): KeptWholeHandler(
        "FocalNet's focal modulation splits its input projection into query, context and gates and weights the "
        "context by one-channel gate slices (gates[:, l:l+1]); Torch-Pruning's group search on it did not finish "
        "(over a minute on a one-block FocalNet at 64 px, over 10 on focalnet_tiny_srf). Traced as one unit, the "
        "channels through it are kept whole (the MLP widths are cut)"),
    ("timm.models.inception_next", "InceptionDWConv2d"): KeptWholeSplitHandler(
        "InceptionNeXt's token mixer splits its input into an identity part and three depthwise branches of "
        "sizes it stores (split_indexes); a cut of the channels through it would change those sizes unevenly, "
        "so they are kept whole (the MLP widths are cut)", "split_indexes"),
    ("timm.models.mobilevit", "LinearSelfAttention"): KeptWholeHandler(
        "MobileViTv2's linear self-attention splits its qkv conv's output by sizes it stores "
        "(split([1, embed_dim, embed_dim])) into a one-channel query and key/value halves; the trace does not map a cut "
        "through that split (a 50% cut of mobilevitv2_050 left a conv with no output channels), so the channels "
        "through it are kept whole (the MLP and conv widths are cut)"),
    ("timm.models.beit", "Attention"): KeptWholeHandler(_TIED_ATTENTION.format("BEiT attention (F.linear on qkv with q/v biases)")),
    ("timm.models.xcit", "XCA"): KeptWholeHandler(_TIED_ATTENTION.format("XCiT cross-covariance attention")),
    ("timm.models.convit", "GPSA"): KeptWholeHandler(_TIED_ATTENTION.format("ConViT gated positional attention")),
    ("timm.models.convit", "MHSA"): KeptWholeHandler(_TIED_ATTENTION.format("ConViT attention")),
    ("timm.models.cait", "TalkingHeadAttn"): KeptWholeHandler(_TIED_ATTENTION.format("CaiT talking-heads attention")),
    ("timm.models.cait", "ClassAttn"): KeptWholeHandler(_TIED_ATTENTION.format("CaiT class attention")),
}

from . import handlers as _handlers  # noqa: E402

_handlers._BUILTIN.update(TIMM_BUILTINS)
