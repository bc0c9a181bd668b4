"""Everything that reaches into Torch-Pruning, in one place.

hwprune finds channel coupling with Torch-Pruning's dependency graph (DepGraph, Fang et al.
CVPR 2023) and cuts through its groups. Some of that needs its internals or patches around
what its tracer misreads; it all lives here, so a Torch-Pruning upgrade is checked in one file:

- tracing stand-ins: opaque modules (see :attr:`hwprune.handlers.ModuleHandler.opaque`) and
  channel-permuting functions are swapped for one autograd edge while the graph is traced;
- module-type handlers are handed to Torch-Pruning as custom pruners (:func:`tp_pruner`);
- ``chunk``/``split`` nodes get their real sizes back on recent PyTorch (:func:`repair_splits`),
  also during the build (:func:`_split_sizes_on_build`);
- a grouped conv's input channels are cut per conv group (:func:`prune_group`);
- what a dependency is (which side it cuts, a sum, a channel shuffle) is read off its repr.

Nothing outside this module imports ``torch_pruning`` except importance criteria (through
:func:`torch_pruning`, as here), which call its
public importance classes on :meth:`hwprune.graph.ChannelGraph.tp_group`.
"""
from __future__ import annotations

import contextlib
import importlib
import warnings
from typing import Iterable, Mapping, Sequence

import torch
from torch import nn

from .errors import PlanMismatchError

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
def tracing_stand_ins(opaque: Iterable[nn.Module]):
    """Swap ``opaque`` modules and the channel mixers for their stand-ins during tracing only."""
    patched_mods, patched_fns = [], []
    for mod in opaque:
        if "forward" not in mod.__dict__:  # leave a user's per-instance forward alone
            real = mod.forward
            # extra arguments (timm BEiT's shared_rel_pos_bias) pass through to the real forward
            mod.forward = lambda x, *a, _real=real, **k: _OpaqueUnit.apply(x, lambda t: _real(t, *a, **k))
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


def torch_pruning():
    """The ``torch_pruning`` module, imported without timm where timm is not loaded yet.

    Torch-Pruning imports timm (when installed) only to hook timm's attention into its own FLOP
    counter, which hwprune does not use (FLOPs come from PyTorch's counter, :mod:`hwprune.counting`).
    That import cost about 0.6 s of every command's start here (torch + torchvision 4.1-4.4 s, timm
    0.6-0.7 s more). A timm already imported (a ``timm:`` model) is left as it is, and timm stays
    importable afterwards: only Torch-Pruning's own import is kept from it."""
    import sys

    if "torch_pruning" in sys.modules or "timm" in sys.modules:
        import torch_pruning as tp

        return tp
    sys.modules["timm"] = None  # an import of timm inside raises ImportError, which Torch-Pruning allows for
    try:
        import torch_pruning as tp
    finally:
        if "timm" in sys.modules and sys.modules["timm"] is None:
            del sys.modules["timm"]
    return tp


def tp_pruner(handler):
    """A Torch-Pruning pruner that cuts through a :class:`~hwprune.handlers.ModuleHandler`. A tied
    handler's input and output are one function: Torch-Pruning's intra-layer rule couples a
    layer's input and output exactly when ``prune_in_channels is prune_out_channels``."""
    tp = torch_pruning()

    class _HandlerPruner(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer, idxs):
            return handler.prune_out_channels(layer, idxs)

        def get_out_channels(self, layer):
            return handler.out_channels(layer)

        if handler.tied:
            prune_in_channels = prune_out_channels
            get_in_channels = get_out_channels
        else:
            def prune_in_channels(self, layer, idxs):
                return handler.prune_in_channels(layer, idxs)

            def get_in_channels(self, layer):
                return handler.in_channels(layer)

    return _HandlerPruner()


def build_dependency_graph(model: nn.Module, example_input: torch.Tensor, handlers: Mapping[type, object],
                           opaque: Iterable[nn.Module], unwrapped: Iterable[nn.Parameter] = ()):
    """Trace ``model`` (in its current mode) into a Torch-Pruning DependencyGraph, with a custom
    pruner per module type in ``handlers`` (type -> cutting handler) and ``opaque`` modules
    traced as stand-ins. ``unwrapped``: the parameters owned by modules no layer type or handler
    covers (the graph decides which, :func:`hwprune.graph._unknown_param_owners`); those shaped
    like an NCHW map are handed over with their channel dimension (:func:`channel_first_maps`)."""
    tp = torch_pruning()

    custom = {t: tp_pruner(h) for t, h in handlers.items()}
    with warnings.catch_warnings(), tracing_stand_ins(opaque), _split_sizes_on_build():
        warnings.simplefilter("ignore")
        # a tuple: Torch-Pruning first calls ``model(*example_inputs)``, which for a bare batch-1 tensor is an
        # *unbatched* [C, H, W] input -- it ran the network until some layer refused it (or all the way)
        return tp.DependencyGraph().build_dependency(model, example_inputs=(example_input,), customized_pruners=custom,
                                                     unwrapped_parameters=channel_first_maps(unwrapped))


def channel_first_maps(params: Iterable[nn.Parameter]) -> list[tuple[nn.Parameter, int]]:
    """Of ``params`` (parameters outside every known layer), those shaped like an NCHW feature map,
    ``(1, C, H, W)`` with a square spatial grid (Visformer's position embeddings, added to the
    stage's feature map), with their channel dimension: 1. Torch-Pruning otherwise cuts an unwrapped
    parameter along its *last* non-singleton dimension, right for tokens ``(1, N, C)`` and
    channels-last maps ``(1, H, W, C)`` (left to it), wrong here: it cut W and the model no longer
    ran."""
    out = []
    for p in params:
        shape = tuple(p.shape)
        if len(shape) == 4 and shape[0] == 1 and shape[2] == shape[3] and shape[1] not in (1, shape[2]):
            out.append((p, 1))
    return out


@contextlib.contextmanager
def _split_sizes_on_build():
    """Size the splits with more consumers than chunks (:func:`_size_splits`) while Torch-Pruning
    builds its graph, between its shape inference and its first index maps: its guess for such a
    split can hold no size, and a concatenation of it then fails the build (cs3darknet_s). The
    other splits are sized after the build, as before (their groups are frozen either way)."""
    torch_pruning()
    from torch_pruning.dependency import shape_infer

    real = shape_infer.init_shape_information

    def init(graph):
        real(graph)
        _size_splits(graph, shared_only=True)

    shape_infer.init_shape_information = init
    try:
        yield
    finally:
        shape_infer.init_shape_information = real


def repair_splits(dg) -> dict:
    """Give ``chunk``/``split`` nodes their real channel sizes and index maps; returns the repaired
    nodes' modules, each with why the groups through it are frozen (:func:`_size_splits`)."""
    from torch_pruning.dependency import index_mapping

    repaired, by_chunk = _size_splits(dg)
    if repaired:
        index_mapping.update_index_mapping(dg)
    for node, offsets, chunk_of in by_chunk:
        _map_split_by_chunk(node, offsets, chunk_of)
    return repaired


def _size_splits(dg, shared_only: bool = False) -> tuple[dict, list]:
    """Set the channel sizes of ``chunk``/``split`` nodes from what autograd saved; returns
    ``({module: why groups through it are frozen}, [(node, chunk offsets, {consumer: chunk})])``,
    the second for splits whose index maps :func:`repair_splits` sets itself.

    On recent PyTorch, SplitBackward saves ``_saved_self_sym_sizes`` (not ``_saved_self_sizes``),
    so Torch-Pruning falls back to inferring split sizes from the consumers and gets them wrong
    (e.g. ShuffleNetV2's ``x.chunk(2, dim=1)``). Which consumer took which chunk is not recorded,
    so groups through a repaired split are frozen (see ``ChannelGraph._describe``). Where a chunk
    has several consumers (a CSPNet cross stage's second half feeds a block's conv and its residual
    sum), the chunk each reads is taken from autograd (:func:`_chunk_of`). ``shared_only``: only
    those.
    """
    tp = torch_pruning()

    repaired, by_chunk = {}, []
    for node in dg.module2node.values():
        gf = node.grad_fn
        size, dim = getattr(gf, "_saved_split_size", None), getattr(gf, "_saved_dim", None)
        sizes = getattr(gf, "_saved_self_sym_sizes", None)
        if node.type != tp.ops.OPTYPE.SPLIT or not size or dim != 1 or not sizes:
            continue
        total = int(sizes[1])
        chs = [min(int(size), total - i * int(size)) for i in range(-(-total // int(size)))]
        offsets = [sum(chs[:i]) for i in range(len(chs) + 1)]
        if len(chs) == len(node.outputs):
            if shared_only:
                continue
            node.module.split_sizes, node.module.offsets = chs, offsets
            repaired[node.module] = "channels pass through a chunk/split whose consumer order is not recorded"
        else:
            chunk_of = _chunk_of(node, len(chs))
            if chunk_of is None:
                continue
            # what each consumer reads, in consumer order: Torch-Pruning sizes a concatenation's
            # inputs from these (its sizes from the guess are dropped); the index maps are set later
            node.module.split_sizes = [chs[chunk_of[out]] for out in node.outputs]
            for out in node.outputs:
                if out.type == tp.ops.OPTYPE.CONCAT:
                    out.module.concat_sizes = None
            by_chunk.append((node, offsets, chunk_of))
            repaired[node.module] = (f"channels pass through a split into chunks of a size the code fixes ({size}), "
                                     "which a cut would have to keep alike")
    return repaired, by_chunk


def _chunk_of(node, n_chunks: int) -> dict | None:
    """The chunk of split ``node`` each of its consumers reads, by the autograd output number that
    links them (None where a consumer reads none or several of them)."""
    chunk_of = {}
    for out in node.outputs:
        nrs = {nr for fn, nr in getattr(out.grad_fn, "next_functions", ()) if fn is node.grad_fn}
        if len(nrs) != 1 or next(iter(nrs)) >= n_chunks:
            return None
        chunk_of[out] = nrs.pop()
    return chunk_of


def _map_split_by_chunk(node, offsets: list[int], chunk_of: dict) -> None:
    """Map each consumer of a split to the channels of the chunk it reads. Torch-Pruning maps the
    i-th consumer to the i-th chunk, so where a chunk has more consumers than one it coupled the
    chunks' channels with the wrong layers (cspresnet50's cut then no longer ran). It redoes its
    maps before every group it builds; the node's index mapping is switched off for that, so these
    stay."""
    from torch_pruning.dependency.index_mapping import _SplitIndexMapping

    node.enable_index_mapping = False
    for out, c in chunk_of.items():
        span = offsets[c:c + 2]
        for dep in node.dependencies:
            if dep.target is out:
                dep.index_mapping[0] = _SplitIndexMapping(offset=span, reverse=False)
        for dep in out.dependencies:
            if dep.target is node:
                dep.index_mapping[0] = _SplitIndexMapping(offset=span, reverse=True)


def dep_side(dep) -> str:
    """'in' where the dependency cuts its target's input channels, else 'out'."""
    fn = getattr(dep.handler, "__name__", str(dep.handler))
    return "in" if "in_channels" in fn else "out"


def is_sum(dep) -> bool:
    """The dependency's target is a sum (a residual add; not the addmm inside a Linear)."""
    return "(AddBackward" in str(dep.target)


def through_channel_mixer(dep) -> bool:
    """The dependency's target is a channel-mixer stand-in (see :func:`tracing_stand_ins`)."""
    return "_ChannelMixer" in str(dep.target) or "_ChannelMixer" in repr(getattr(dep.target.module, "type", ""))


def is_grouped_conv(mod) -> bool:
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


def prune_group(dg, group) -> None:
    """Cut a Torch-Pruning group, grouped convs' input channels per conv group."""
    for k, item in enumerate(group):
        dep = item.dep
        if is_grouped_conv(dep.target.module) and dep.handler in dg._in_channel_pruning_fn:
            group[k] = type(item)(dep=_GroupedConvIn(dep), idxs=item.idxs)
    group.prune()
