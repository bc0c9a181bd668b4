"""Every torchvision classifier family: prune 50% (uniform, l1), run, export to ONNX, match ORT.

CI covers each family with its smallest sibling at a small input (some built from the family's
own torchvision class with fewer blocks / a smaller width, so the file runs in a few minutes on 2
cores); every full-size name is covered by ``tools/sweep_models.py`` (table in docs/models.md).
Random-init models are given output spread (BatchNorm statistics, degenerate heads) before they are
pruned and again before export, as the sweep does: untouched, EfficientNet/MobileNet/MNASNet output
~1e-14 and the parity check would refuse them (it could not fail).
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch import nn

from hwprune.export import export_onnx
from hwprune.graph import ChannelGraph
from hwprune.models import LoadedModel, load_model
from hwprune.prune import PruneConfig, prune
from hwprune.randinit import give_spread_


def _tv(name: str, **kw):
    return functools.partial(lambda: load_model(name, kwargs=kw or None).model)


def _resnext():
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [1, 1, 1, 1], groups=32, width_per_group=4)


def _wide_resnet():
    from torchvision.models.resnet import Bottleneck, ResNet

    return ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=128)


def _densenet():
    from torchvision.models.densenet import DenseNet

    return DenseNet(growth_rate=16, block_config=(2, 2, 2, 2), num_init_features=32)


def _convnext():
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    return ConvNeXt([CNBlockConfig(32, 64, 1), CNBlockConfig(64, 128, 1), CNBlockConfig(128, None, 1)])


def _vgg():
    from torchvision.models.vgg import VGG, make_layers

    m = VGG(make_layers([16, "M", 32, "M", 64, 64, "M"], batch_norm=True))
    # VGG's classifier expects 512*7*7 features and 4096 hidden; a narrower sibling, same structure
    m.classifier = nn.Sequential(nn.Linear(64 * 7 * 7, 256), nn.ReLU(True), nn.Dropout(),
                                 nn.Linear(256, 256), nn.ReLU(True), nn.Dropout(), nn.Linear(256, 1000))
    return m


def _efficientnet_v2():
    from torchvision.models.efficientnet import EfficientNet, FusedMBConvConfig, MBConvConfig

    cfg = [FusedMBConvConfig(1, 3, 1, 24, 24, 1), FusedMBConvConfig(4, 3, 2, 24, 48, 1),
           MBConvConfig(4, 3, 2, 48, 64, 1), MBConvConfig(6, 3, 1, 64, 96, 1)]
    return EfficientNet(cfg, dropout=0.2, last_channel=256)


def _vit():
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=64, mlp_dim=128)


def _swin(v2: bool):
    from torchvision.models import swin_transformer as st

    kw = dict(block=st.SwinTransformerBlockV2, downsample_layer=st.PatchMergingV2) if v2 else {}
    return st.SwinTransformer(patch_size=[4, 4], embed_dim=32, depths=[1, 2, 1], num_heads=[2, 4, 8],
                              window_size=[4, 4], stochastic_depth_prob=0.0, **kw)


def _maxvit():
    from torchvision.models.maxvit import MaxVit

    return MaxVit(input_size=(64, 64), stem_channels=16, partition_size=4, block_channels=[32, 64],
                  block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.0)


# (family, builder, input size): torchvision names where the real model is small enough for CI,
# the family's own class with fewer/narrower blocks where it is not
FAMILIES = [
    ("resnet18", _tv("resnet18"), 32),
    ("resnext", _resnext, 32),
    ("wide_resnet", _wide_resnet, 32),
    ("mobilenet_v2", _tv("mobilenet_v2"), 32),
    ("mobilenet_v3_small", _tv("mobilenet_v3_small"), 32),
    ("mnasnet0_5", _tv("mnasnet0_5"), 32),
    ("efficientnet_b0", _tv("efficientnet_b0"), 32),
    ("efficientnet_v2", _efficientnet_v2, 32),
    ("regnet_x_400mf", _tv("regnet_x_400mf"), 32),
    ("regnet_y_400mf", _tv("regnet_y_400mf"), 32),
    ("densenet", _densenet, 32),
    ("convnext", _convnext, 32),
    ("vgg_bn", _vgg, 32),
    ("alexnet", _tv("alexnet"), 64),
    ("squeezenet1_0", _tv("squeezenet1_0"), 48),
    ("squeezenet1_1", _tv("squeezenet1_1"), 48),
    ("googlenet", _tv("googlenet"), 32),
    ("inception_v3", _tv("inception_v3"), 75),
    ("shufflenet_v2_x0_5", _tv("shufflenet_v2_x0_5"), 32),
    ("vit", _vit, 32),
    ("swin", functools.partial(_swin, False), 32),
    ("swin_v2", functools.partial(_swin, True), 32),
    ("maxvit", _maxvit, 64),
]


@pytest.mark.parametrize("family,build,size", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_prune_half_runs_and_exports(family, build, size, tmp_path):
    torch.manual_seed(0)
    model = build().eval()
    give_spread_(model, size)
    loaded = LoadedModel(model=model, model_id={"spec": family, "kwargs": {}}, input_size=size)
    res = prune(loaded, PruneConfig(strategy="uniform", ratio=0.5, criterion="l1", input_size=size))
    assert res.plan.kept, f"{family}: nothing was pruned"
    assert res.report["after"]["params"] < 0.8 * res.report["before"]["params"]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        y0, y1 = model(x), res.model(x)
    assert y1.shape == y0.shape and torch.isfinite(y1).all()
    give_spread_(res.model, size)
    parity = export_onnx(res.model, x, str(tmp_path / "m.onnx"))  # raises ExportError on an ORT mismatch
    assert parity.ok and (tmp_path / "m.onnx").stat().st_size > 0
    # the verdict rests on outputs with spread (SqueezeNet, no BN and a conv head, keeps the least: ~20x)
    spread = max(parity.spread, (parity.features or {}).get("spread", 0.0))
    assert not parity.vacuous and spread > 10 * parity.min_spread


def test_vit_heads_stay_consistent_after_pruning():
    model = _vit().eval()
    res = prune(LoadedModel(model, {"spec": "vit", "kwargs": {}}, 32),
                PruneConfig(strategy="uniform", ratio=0.5, align=4, min_width=4, input_size=32))
    for mod in res.model.modules():
        if isinstance(mod, nn.MultiheadAttention):
            assert mod.num_heads == 4
            assert mod.embed_dim == mod.out_proj.out_features == 32
            assert mod.head_dim * mod.num_heads == mod.embed_dim
            assert tuple(mod.in_proj_weight.shape) == (3 * mod.embed_dim, mod.embed_dim)
    assert res.model.hidden_dim == res.model.conv_proj.out_channels == 32
    mlp = res.model.encoder.layers[0].mlp[0]
    assert mlp.out_features < 128  # MLP hidden dims are their own group


def test_swin_and_maxvit_head_dims_shrink_evenly():
    for build, size, unit, qkv_n, out_n, heads_n in (
            (functools.partial(_swin, False), 32, "ShiftedWindowAttention", "qkv", "proj", "num_heads"),
            (_maxvit, 64, "RelativePositionalMultiHeadAttention", "to_qkv", "merge", "n_heads")):
        model = build().eval()
        heads = {n: getattr(m, heads_n) for n, m in model.named_modules() if type(m).__name__ == unit}
        assert heads
        res = prune(LoadedModel(model, {"spec": "x", "kwargs": {}}, size),
                    PruneConfig(strategy="uniform", ratio=0.5, align=1, min_width=1, input_size=size))
        for n, m in res.model.named_modules():
            if n in heads:
                q, o = getattr(m, qkv_n), getattr(m, out_n)
                assert getattr(m, heads_n) == heads[n]  # whole heads kept, each head narrower
                assert q.out_features == 3 * o.out_features == 3 * q.in_features
                assert o.out_features % heads[n] == 0 and o.out_features < getattr(model.get_submodule(n), out_n).out_features
                if hasattr(m, "head_dim"):
                    assert m.head_dim * heads[n] == o.out_features


def test_grouped_conv_keeps_per_group_inputs():
    """Each conv group keeps its own input channels (not group 0's indices repeated)."""
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), conv, nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    graph = ChannelGraph(model, torch.randn(1, 3, 8, 8))
    g = graph.group("0")
    assert g.blocks == 2
    w = conv.weight.detach().clone()
    graph.prune_({"0": [0, 3, 5, 6]})  # group 0 keeps local 0,3; group 1 keeps local 1,2
    assert torch.equal(model[2].weight, torch.cat([w[:4][:, [0, 3]], w[4:][:, [1, 2]]]))
    model(torch.randn(1, 3, 8, 8))


def test_shuffle_groups_are_frozen_with_reason(cli):
    graph = ChannelGraph(load_model("shufflenet_v2_x0_5").model, torch.randn(1, 3, 32, 32))
    frozen = [g for g in graph.groups if not g.prunable]
    assert frozen and all("shuffle" in g.reason or "chunk" in g.reason for g in frozen)
    assert any(g.kind == "dwconv" for g in graph.prunable)  # branch convs stay prunable
    out = cli("inspect", "--model", "shufflenet_v2_x0_5", "--input-size", "32").stdout
    assert "frozen: channels pass through a channel shuffle" in out


@pytest.mark.parametrize("spec,kwargs,size", [
    (f"{__file__}:_swin", {"v2": True}, 32),
    (f"{__file__}:_maxvit", {}, 64),
    ("shufflenet_v2_x0_5", {}, 32),
    ("regnet_x_400mf", {}, 32),
], ids=["swin_v2", "maxvit", "shufflenet", "regnet_grouped"])
def test_checkpoint_round_trip(spec, kwargs, size, tmp_path):
    """load_checkpoint rebuilds the base model and re-applies the plan: stand-in units, grouped
    convs and frozen groups must come out the same way, with identical outputs."""
    from hwprune.checkpoint import load_checkpoint, save_checkpoint

    torch.manual_seed(0)
    loaded = load_model(spec, kwargs=kwargs)
    res = prune(loaded, PruneConfig(strategy="uniform", ratio=0.5, input_size=size))
    save_checkpoint(str(tmp_path / "p.pt"), res.model, res.plan)
    back = load_checkpoint(str(tmp_path / "p.pt"))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.equal(back.model(x), res.model(x))
