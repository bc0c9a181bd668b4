"""ONNX parity is evidence only if it can fail: wrong exports must be caught, near-zero references refused.

torchvision's random-init EfficientNet, MobileNetV2/V3 and MNASNet output logits of 1e-10..1e-22
at 64x64 (eval-mode BatchNorm with initial statistics, depthwise convs shrinking the signal), so
a tolerance of ``1e-3 + 1e-3 * max|ref|`` passed any graph: the sweep reported "parity 6e-22".
"""
import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from hwprune.errors import VacuousParityError
from hwprune.export import export_onnx, onnx_bytes, verify_onnx
from hwprune.parity import check_parity_many, parity_inputs
from hwprune.models import load_model
from hwprune.randinit import give_spread_

SIZE = 64
NEAR_ZERO_FAMILIES = ["efficientnet_b0", "efficientnet_v2_s", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small"]


def perturb_middle_conv(data: bytes, factor: float = 1.1) -> bytes:
    """A wrong export: the weights of the middle Conv node scaled by ``factor`` (a 10% error in one
    layer of the network, as a wrong fold or a mis-mapped initializer would give)."""
    proto = onnx.load_from_string(data)
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    name = convs[len(convs) // 2].input[1]
    init = next(i for i in proto.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(init) * factor).astype(np.float32), name))
    return proto.SerializeToString()


@pytest.mark.parametrize("name", NEAR_ZERO_FAMILIES)
def test_wrong_export_fails_for_near_zero_families(name):
    torch.manual_seed(0)
    model = load_model(name).model.eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    inputs = parity_inputs(x, samples=2)
    data = onnx_bytes(model, x)
    # as torchvision initialises it: a check relative to the logits' size passed this wrong graph
    assert not check_parity_many(model, perturb_middle_conv(data), inputs).ok
    with pytest.raises(VacuousParityError, match=r"give_spread_"):
        verify_onnx(model, data, inputs)  # the right graph is refused too: the check could not fail
    info = give_spread_(model, SIZE)
    assert info["bn_recalibrated"] > 0 and info["spread_after"] >= 1e-2 > 1e3 * info["spread_before"]
    data = onnx_bytes(model, x)
    good = verify_onnx(model, data, inputs)
    assert good.ok and good.basis == "output" and not good.vacuous
    assert good.spread > 1e3 * good.min_spread  # far from negligible
    assert good.features["ok"] and good.features["spread"] > 1e3 * good.min_spread
    bad = check_parity_many(model, perturb_middle_conv(data), inputs)
    assert not bad.ok and bad.max_abs > 10 * bad.tolerance


class TinyHeadNet(nn.Module):
    """conv-bn-relu-pool-linear; ``head_scale`` shrinks the classifier as a degenerate init would."""

    def __init__(self, head_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(32, 10)
        with torch.no_grad():
            self.fc.weight.mul_(head_scale)
            self.fc.bias.mul_(head_scale)

    def forward(self, x):
        return self.fc(self.body(x))


def test_degenerate_head_rests_on_classifier_input():
    torch.manual_seed(0)
    model = TinyHeadNet(head_scale=1e-9).eval()
    x = torch.randn(1, 3, 16, 16)
    inputs = parity_inputs(x, samples=3)
    data = onnx_bytes(model, x)
    good = verify_onnx(model, data, inputs)
    assert good.ok and good.basis == "classifier input" and good.spread <= good.min_spread
    assert good.features["module"] == "fc" and good.features["spread"] > 1e-2
    assert "classifier input" in good.note
    bad = check_parity_many(model, perturb_middle_conv(data, factor=1.01), inputs)  # the first conv, 1% off
    assert not bad.ok and not bad.features["ok"]


def test_vacuous_reference_without_classifier_is_refused_and_writes_nothing(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    with torch.no_grad():
        model[0].weight.mul_(1e-9)
        model[0].bias.mul_(1e-9)
    with pytest.raises(VacuousParityError, match=r"std .* at or below 1\.0e-05"):
        export_onnx(model, torch.randn(1, 3, 8, 8), str(tmp_path / "m.onnx"))
    assert list(tmp_path.iterdir()) == []


def test_parity_report_records_spread_and_tolerance(tmp_path):
    torch.manual_seed(0)
    model = TinyHeadNet().eval()
    parity = export_onnx(model, torch.randn(1, 3, 16, 16), str(tmp_path / "m.onnx"), samples=2)
    d = parity.to_dict()
    for key in ("max_abs", "max_rel", "ok", "inputs", "batches", "degenerate", "note"):  # the fields reports had
        assert key in d
    assert d["ok"] and d["basis"] == "output" and d["min_spread"] == pytest.approx(1e-5)
    assert d["tolerance"] == pytest.approx(d["atol"] + d["rtol"] * d["spread"])
    assert d["max_err_spread"] * d["spread"] == pytest.approx(d["max_abs"])
    assert d["features"]["module"] == "fc" and d["features"]["tolerance"] > 0
    assert "spread" in str(parity) and "tolerance" in str(parity)


def test_give_spread_leaves_a_model_with_spread_alone():
    torch.manual_seed(0)
    model = TinyHeadNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    info = give_spread_(model, 16)
    assert info["bn_recalibrated"] == 0 and info["head_reinit"] is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
