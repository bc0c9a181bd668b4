"""Squeeze-and-excitation gates are latency units (issue #17, item 4): their pooling, gate and
channel-wise multiply shrink with the map they scale, so they are priced at its width rather
than left in the full-width remainder."""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from hwprune.base_model import LoadedModel
from hwprune.graph import ChannelGraph
from hwprune.latency import LatencyTable, ProfileConfig, profile
from hwprune.latency.measure import build_variant, random_widths
from hwprune.latency.micro import unit_module, unit_onnx
from hwprune.latency.units import UnitFamily, extract_units


class SE(nn.Module):
    """A user-written SE gate (no library class): mean -> FC -> ReLU -> FC -> gate -> scale."""

    def __init__(self, c, hard=False):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, max(8, c // 4), 1), nn.Conv2d(max(8, c // 4), c, 1)
        self.gate = nn.Hardsigmoid() if hard else nn.Sigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.fc2(torch.relu(self.fc1(s))))


class Block(nn.Module):
    def __init__(self, c, e, hard):
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(c, e, 1, bias=False), nn.BatchNorm2d(e), nn.Hardswish())
        self.dw = nn.Sequential(nn.Conv2d(e, e, 3, 1, 1, groups=e, bias=False), nn.BatchNorm2d(e), nn.Hardswish())
        self.se = SE(e, hard)
        self.project = nn.Sequential(nn.Conv2d(e, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.se(self.dw(self.expand(x))))


class TinySE(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.b1, self.b2 = Block(16, 48, hard=True), Block(16, 64, hard=False)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.b2(self.b1(self.stem(x)))
        return self.head(x.mean((2, 3)))


def _se_units(model, size):
    graph = ChannelGraph(model.eval(), torch.randn(1, 3, size, size))
    return graph, [u for u in extract_units(graph, fuse=False) if u.family.kind == "se"]


def test_se_gates_are_found_by_what_they_do():
    """torchvision's SqueezeExcitation (MobileNetV3: hard-sigmoid; EfficientNet, RegNetY:
    sigmoid) and a user-written gate each become one ``se`` unit at the width and size of the map
    they scale; the blocks around them (which hold spatial convs) do not."""
    _, se = _se_units(torchvision.models.mobilenet_v3_small(), 64)
    assert len(se) == 9 and {u.family.act for u in se} == {"hardsigmoid"}
    first = se[0]
    assert first.layer == "features.1.block.1.gate" and (first.cin, first.family.h) == (16, 16)
    assert first.family.tied and first.ins and first.ins[0][1] == 16
    _, se = _se_units(torchvision.models.efficientnet_b0(), 64)
    assert len(se) == 16 and {u.family.act for u in se} == {"sigmoid"}
    _, se = _se_units(TinySE(), 32)
    assert [u.layer for u in se] == ["b1.se.gate", "b2.se.gate"]
    assert [(u.cin, u.family.act, u.family.h) for u in se] == [(48, "hardsigmoid", 16), (64, "sigmoid", 16)]
    _, se = _se_units(torchvision.models.resnet18(), 64)
    assert se == []


def test_se_unit_widths_follow_the_pruned_model():
    """A pruned variant's SE gate scales exactly the channels the unit is priced at."""
    model = TinySE().eval()
    x = torch.randn(1, 3, 32, 32)
    graph, se = _se_units(model, 32)
    widths = random_widths(graph.groups, np.random.default_rng(3), 8, 8, ratio=0.4)
    variant = build_variant(model, x, widths)
    assert variant(x).shape == (1, 10)
    for u in se:
        fc1 = variant.get_submodule(u.layer[: -len(".gate")] + ".fc1")
        assert u.widths(widths) == (fc1.in_channels, fc1.in_channels)
    assert any(u.widths(widths)[0] < u.cin for u in se)  # the variant did cut an SE map


@pytest.mark.parametrize("act", ["hardsigmoid", "sigmoid"])
def test_se_micro_model_computes_the_gate(act):
    """The ONNX micro-model (ORT) and the torch one compute x * gate(mean(x)), as the network does."""
    import onnxruntime as ort

    fam = UnitFamily("se", 7, 7, act=act, tied=True)
    mod, (x,) = unit_module(fam, 24, 24)
    gate = nn.Hardsigmoid() if act == "hardsigmoid" else nn.Sigmoid()
    want = x * gate(x.mean((2, 3), keepdim=True))
    assert torch.allclose(mod(x), want, atol=1e-6)
    for context in (False, True):  # the context conv has unit weights: same values
        sess = ort.InferenceSession(unit_onnx(fam, 24, 24, input_context=context), providers=["CPUExecutionProvider"])
        got = sess.run(None, {"X": x.numpy()})[0]
        assert np.allclose(got, want.numpy(), atol=1e-5)


def test_profile_prices_se_gates_and_they_shrink_with_the_map(tmp_path):
    """A real quick profile measures the ``se`` families; the table's SE costs fall as the map
    they scale is pruned, and the table covers the model."""
    model = TinySE().eval()
    out = str(tmp_path / "t.json")
    # 64 px (32x32 maps): at 32 px the full-width gate ran in ~26 us, near the quick protocol's
    # noise, and one CI run read the 8-channel gate no cheaper (the table's monotone envelope tied them)
    profile(LoadedModel(model, {"spec": "tiny_se", "kwargs": {}}, 64), ProfileConfig.quick(input_size=64, out=out, calib_variants=2, align=8), progress=False)
    t = LatencyTable.load(out)
    graph = ChannelGraph(model, torch.randn(1, 3, 64, 64))
    assert t.covers(graph)
    fams = [k for k in t.families if k.startswith("se+")]
    assert len(fams) == 2 and all(t.families[k].grid_complete() for k in fams)
    cm = t.cost_model(graph)
    se_layers = {"b1.se.gate", "b2.se.gate"}
    full = {k: v for k, v in cm.unit_costs({}).items() if k in se_layers}
    assert len(full) == 2 and all(v > 0 for v in full.values())
    group = next(u for u, _ in cm.units if u.layer == "b2.se.gate").ins[0][0]
    small = cm.unit_costs({group: 8})["b2.se.gate"]
    assert small < full["b2.se.gate"]


def test_silu_after_a_conv_is_part_of_its_unit(tmp_path):
    """nn.SiLU exports as Sigmoid + Mul, which ORT fuses into one QuickGelu after the conv; the
    unit carries it (act ``silu``) instead of leaving 49 full-width activations of EfficientNet-B0
    in the remainder, and its micro-model runs the same fused op."""
    import onnx
    import onnxruntime as ort

    graph = ChannelGraph(torchvision.models.efficientnet_b0().eval(), torch.randn(1, 3, 64, 64))
    acts = [u.family.act for u in extract_units(graph) if u.family.kind in ("conv", "dwconv")]
    assert acts.count("silu") == 49
    fam = UnitFamily("conv", 14, 14, act="silu")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.log_severity_level = 3
    data = unit_onnx(fam, 32, 32, input_context=True, output_context=True)
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    assert "QuickGelu" in [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    mod, (x,) = unit_module(fam, 32, 32)
    assert isinstance(mod.act, nn.SiLU)
    assert sess.run(None, {"X": np.random.default_rng(0).standard_normal((1, 3, 14, 14), np.float32)})[0].shape == \
        (1, 32, 14, 14)
