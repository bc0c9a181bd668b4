"""Export: ONNX parity on several inputs / batch sizes, diverging exports, 2:4 masks, TensorRT."""
import importlib.util
import os

import onnx
import pytest
import torch
from torch import nn

from hwprune.errors import BackendUnavailableError, ConfigError, ExportError
from hwprune.export import ExportConfig, check_parity_many, export, export_onnx, onnx_bytes, parity_inputs
from hwprune.models import load_model
from hwprune.prune import PruneConfig, prune

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


def pruned(spec: str, ratio: float = 0.5, head: bool = True):
    loaded = load_model(spec)
    if head and spec == "tiny_vit":  # torchvision zero-initialises the head: outputs would be all 0
        torch.nn.init.normal_(loaded.model.heads.head.weight, std=0.5)
    return loaded, prune(loaded, PruneConfig(ratio=ratio))


@pytest.mark.parametrize("spec", ["tiny_resnet", "tiny_vit"])
def test_pruned_export_parity_dynamic_batch(tmp_path, spec):
    _, res = pruned(spec)
    path = str(tmp_path / f"{spec}.onnx")
    parity = export_onnx(res.model, torch.randn(1, 3, 32, 32), path, dynamic_batch=True, samples=3,
                         parity_batches=(1, 5))
    assert parity.ok and not parity.degenerate
    assert parity.batches == (1, 5) and parity.inputs == 4
    assert 0 < parity.max_abs < 1e-3  # really two different computations, not the same thing twice
    onnx.checker.check_model(onnx.load(path))
    assert os.listdir(tmp_path) == [f"{spec}.onnx"]


def test_tiny_mobilenet_prunes_its_depthwise_blocks_and_exports(tmp_path):
    """The built-in MobileNetV2-style network: a 0.5 cut narrows each block's expansion, depthwise
    conv and projection input together, and the export matches PyTorch on ORT."""
    from hwprune.counting import count_flops

    loaded, res = pruned("tiny_mobilenet")
    x = torch.randn(1, 3, 32, 32)
    assert count_flops(res.model, x) < 0.5 * count_flops(loaded.model, x)
    for blk, full in zip(res.model.layers[1:], loaded.model.layers[1:]):  # blocks with an expansion
        expand, dw, project = blk.conv[0][0], blk.conv[1][0], blk.conv[2]
        assert expand.out_channels == dw.groups == dw.in_channels == dw.out_channels == project.in_channels
        assert dw.out_channels < full.conv[1][0].out_channels
    parity = export_onnx(res.model, x, str(tmp_path / "m.onnx"), dynamic_batch=True, samples=3, parity_batches=(1, 4))
    assert parity.ok and not parity.degenerate


def test_constant_reference_is_flagged_and_graph_verified_on_probe(tmp_path):
    """Untrained torchvision ViT outputs exactly 0 (zero head): parity 0.0 would prove nothing."""
    loaded = load_model("tiny_vit")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert loaded.model(x).abs().max() == 0
    raw = check_parity_many(loaded.model, onnx_bytes(loaded.model, x), [x])
    assert raw.degenerate and raw.max_abs == 0.0
    # the network behind the zero head is still compared: its classifier input has spread
    assert raw.ok and raw.basis == "classifier input" and raw.features["spread"] > 1e3 * raw.min_spread
    parity = export_onnx(loaded.model, x, str(tmp_path / "vit.onnx"))
    assert parity.ok and parity.degenerate and "re-randomised" in parity.note
    assert parity.max_abs > 0  # the probe copy produced non-trivial outputs that were compared


class OnnxOnlyOffset(nn.Module):
    """Behaves differently while being exported (like a custom op with a wrong symbolic)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = self.conv(x)
        if torch.onnx.is_in_onnx_export():
            y = y + 1.0
        return y.mean((2, 3))


class DataDependentBranch(nn.Module):
    """Python control flow on data: tracing freezes the branch taken for the example input."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        h = x.flatten(1)[:, :12]
        if float(h.mean()) > 0:
            return self.fc(h)
        return -self.fc(h)


@pytest.mark.parametrize("model", [OnnxOnlyOffset(), DataDependentBranch()], ids=["export-only-op", "traced-branch"])
def test_diverging_export_raises_and_writes_nothing(tmp_path, model):
    x = torch.randn(1, 3, 8, 8)
    x = x.abs() + 0.1  # the traced branch is the positive-mean one; random inputs take the other too
    inputs = parity_inputs(x, samples=8, seed=1)
    assert isinstance(model, OnnxOnlyOffset) or any(float(i.flatten(1)[:, :12].mean()) <= 0 for i in inputs)
    path = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="diverges"):
        export_onnx(model.eval(), x, str(path), samples=8)
    assert os.listdir(tmp_path) == []


def test_export_config_validation():
    with pytest.raises(ConfigError, match="--format tensorrt"):
        ExportConfig(format="onnx", fp16=True)
    with pytest.raises(ConfigError, match="calib-data"):
        ExportConfig(format="tensorrt", int8=True)
    with pytest.raises(ConfigError, match="opset"):
        ExportConfig(opset=99)


@pytest.mark.skipif(HAS_TRT, reason="TensorRT is installed: the missing-TensorRT path cannot be tested here")
def test_tensorrt_missing_is_a_clear_error_and_leaves_no_file(tmp_path, cli):
    loaded, res = pruned("tiny_resnet")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'hwprune\[tensorrt\]'"):
        export(res.model, str(tmp_path / "m.engine"), ExportConfig(format="tensorrt", sparse=True), input_size=32)
    assert os.listdir(tmp_path) == []
    out = tmp_path / "cli.engine"
    proc = cli("export", "--model", "tiny_resnet", "--format", "tensorrt", "--fp16", "--out", str(out), check=False)
    assert proc.returncode == 2
    assert "pip install 'hwprune[tensorrt]'" in proc.stderr and "GPU" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(tmp_path) == []


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAS_TRT, reason="needs TensorRT + a CUDA GPU")
def test_tensorrt_engine_matches_onnx_runtime(tmp_path):
    import numpy as np

    from hwprune_deploy import trt
    from hwprune_deploy.ort import make_session

    if trt.unavailable_reason():
        pytest.skip(trt.unavailable_reason())
    _, res = pruned("tiny_resnet")
    out = tmp_path / "m.engine"
    result = export(res.model, str(out), ExportConfig(format="tensorrt", max_batch=4), input_size=32)
    runner = trt.EngineRunner(out.read_bytes(), batch=2)
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    sess = make_session(open(result.onnx_path, "rb").read())
    ref = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert np.abs(runner.infer(x) - ref).max() < 1e-2
    assert runner.time_events().median_ms > 0


def test_cli_export_prints_parity(tmp_path, cli):
    ckdir = tmp_path / "p"
    cli("prune", "--model", "tiny_vit", "--ratio", "0.5", "--out", str(ckdir))
    out = tmp_path / "vit.onnx"
    proc = cli("export", "--model", str(ckdir / "pruned.pt"), "--out", str(out), "--dynamic-batch", "--samples", "2")
    assert "max |err|" in proc.stdout and "max rel err" in proc.stdout and out.is_file()
