"""Cost models agree with the pruned network itself.

For a width assignment, the FLOPs model, the parameter model and the latency table's unit widths
must say what the really pruned model is: its counted FLOPs, its parameter count, and every
Conv2d/Linear's channel counts. The families here are the shapes where that is not "the group's
width": concatenations feeding one conv (GoogLeNet, DenseNet, SqueezeNet), a Linear reading a
flattened map (VGG), attention computed functionally inside a container (ViT's
nn.MultiheadAttention, Swin's window attention), q/k/v outputs and patch merging (Swin, MaxViT).
"""
from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

from hwprune.cost import FlopsCostModel, ParamsCostModel
from hwprune.counting import count_flops, count_params, own_flops_by_op
from hwprune.graph import ChannelGraph, keep_top
from hwprune.latency.units import extract_units

from test_models_torchvision import FAMILIES

CASES = ["googlenet", "densenet", "squeezenet1_1", "vgg_bn", "vit", "swin", "swin_v2", "maxvit", "resnet18"]


def _random_cut(graph: ChannelGraph, rng: random.Random):
    widths, kept = {}, {}
    for g in graph.prunable:
        per = g.width // g.blocks
        k = max(1, int(round(per * rng.uniform(0.3, 0.9))))
        widths[g.name] = k * g.blocks
        kept[g.name] = keep_top(torch.rand(g.width, generator=torch.Generator().manual_seed(rng.randrange(1 << 30))),
                                k * g.blocks, g.blocks)
    return widths, kept


@pytest.mark.parametrize("family", CASES)
def test_cost_models_and_unit_widths_match_the_pruned_model(family):
    build, size = {f: (b, s) for f, b, s in FAMILIES}[family]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(1, 3, size, size)
    graph = ChannelGraph(model, x)
    flops, params = FlopsCostModel(graph, x), ParamsCostModel(graph)
    units = extract_units(graph, fuse=False)
    assert flops.total == count_flops(model, x)
    if family in ("vit", "swin", "swin_v2"):  # projections run with F.linear are units too
        ends = (".in_proj", ".out_proj") if family == "vit" else (".qkv", ".proj")
        assert all(any(u.layer.endswith(e) for u in units) for e in ends)
        if family == "vit":  # 1 class token + (32 / 8)^2 patches
            assert {u.family.h for u in units if u.layer.endswith(ends)} == {17}
    rng = random.Random(family)
    for _ in range(2):
        pruned = copy.deepcopy(model)
        g2 = ChannelGraph(pruned, x)
        widths, kept = _random_cut(g2, rng)
        assert widths
        g2.prune_(kept)
        assert flops.predict(widths) == pytest.approx(count_flops(pruned, x), rel=1e-9)
        assert params.predict(widths) == pytest.approx(count_params(pruned), rel=1e-9)
        for u in units:
            if u.layer.endswith(".in_proj"):  # nn.MultiheadAttention's q/k/v projection: a weight, no module
                w = pruned.get_submodule(u.layer.rpartition(".")[0]).in_proj_weight
                assert u.widths(widths) == (w.shape[1], w.shape[0]), u.layer
                continue
            if u.family.kind == "se":  # an SE gate (pool, gate, multiply) scales its squeeze conv's input map
                gate = pruned.get_submodule(u.layer.rpartition(".")[0])
                squeeze = next(m for m in gate.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
                c = squeeze.in_channels if isinstance(squeeze, nn.Conv2d) else squeeze.in_features
                assert u.widths(widths) == (c, c), u.layer
                continue
            mod = pruned.get_submodule(u.layer)
            real = (mod.in_channels, mod.out_channels) if isinstance(mod, nn.Conv2d) else (mod.in_features, mod.out_features)
            if u.family.kind == "dwconv":
                real = (real[1], real[1])
            assert u.widths(widths) == real, u.layer


def test_attention_flops_are_counted_and_the_fast_path_restored():
    """nn.MultiheadAttention's fused inference path and fused SDPA are invisible to PyTorch's FLOP
    counter; counting routes them through plain ops: 2 FLOPs per multiply-add of the q/k/v and
    output projections and of both attention products."""
    n, e, heads = 10, 32, 4
    mha = nn.MultiheadAttention(e, heads, batch_first=True).eval()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = mha

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    x = torch.randn(1, n, e)
    expected = 2 * n * e * 3 * e + 2 * n * e * e + 2 * 2 * n * n * e
    fast = torch.backends.mha.get_fastpath_enabled()
    assert count_flops(Wrap(), x) == expected
    assert torch.backends.mha.get_fastpath_enabled() == fast
    own = own_flops_by_op(Wrap(), x)
    assert set(own) == {"attn"} and own["attn"]["bmm"] == 2 * 2 * n * n * e


@pytest.mark.parametrize("family", ["vit", "resnext"])
def test_latency_variants_keep_whole_blocks(family):
    """The profiler's and validator's variants (``build_variant``) cut a group split into blocks
    (attention heads, conv groups) evenly, and the units price the variant's real widths."""
    from hwprune.latency.measure import build_variant, random_widths

    build, size = {f: (b, s) for f, b, s in FAMILIES}[family]
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(1, 3, size, size)
    graph = ChannelGraph(model, x)
    assert any(g.blocks > 1 for g in graph.prunable)
    import numpy as np

    widths = random_widths(graph.groups, np.random.default_rng(0), 8, 8, ratio=0.5)
    variant = build_variant(model, x, widths)
    assert variant(x).shape == model(x).shape
    for u in extract_units(graph, fuse=False):
        if u.layer.endswith(".in_proj"):
            continue
        mod = variant.get_submodule(u.layer)
        real = (mod.in_channels, mod.out_channels) if isinstance(mod, nn.Conv2d) else (mod.in_features, mod.out_features)
        assert u.widths(widths)[1] == real[1], u.layer


@pytest.mark.parametrize("family", ["googlenet", "vgg_bn", "swin"])
def test_profiled_units_cover_every_width_the_model_can_take(family, tmp_path):
    """A real (quick) profile samples each unit where the model's widths put it: a conv after a
    concatenation over the sums of its groups' grids, a Linear after a flatten over H*W x a
    grid width, q/k/v over 3 x a grid width, so the table interpolates and never extrapolates."""
    import numpy as np

    from hwprune.latency import ProfileConfig, profile
    from hwprune.latency.measure import random_widths
    from hwprune.latency.table import LatencyTable
    from hwprune.models import LoadedModel

    build, size = {f: (b, s) for f, b, s in FAMILIES}[family]
    torch.manual_seed(0)
    loaded = LoadedModel(build().eval(), {"spec": family, "kwargs": {}}, size)
    out = str(tmp_path / "t.json")
    profile(loaded, ProfileConfig.quick(out=out, input_size=size, align=8), progress=False)
    table = LatencyTable.load(out)
    x = torch.randn(1, 3, size, size)
    graph = ChannelGraph(loaded.model, x)
    cm = table.cost_model(graph)
    rng = np.random.default_rng(0)
    full = cm.predict({})
    for _ in range(5):
        widths = random_widths(graph.groups, rng, 8, 8, ratio=float(rng.uniform(0.3, 0.7)))
        for u, fam in cm.units:
            cin, cout = u.widths(widths)
            assert fam.cins[0] <= cin <= fam.cins[-1] and fam.couts[0] <= cout <= fam.couts[-1], (u.layer, cin, cout)
        assert 0 < cm.predict(widths) < full
