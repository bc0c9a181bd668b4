"""2:4 sparsity, NVIDIA's ASP recipe (hwprune.sparsity, hwprune.sparsify): magnitude masks on ASP's
layers, kept fixed through `hwprune prune --finetune-epochs` and `hwprune train`, saved in checkpoints,
present in the exported ONNX weights (read back with onnx), with ORT parity; and the errors."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from hwprune.checkpoint import load_checkpoint
from hwprune.cli.main import main
from hwprune.data import make_data
from hwprune.errors import ConfigError, UnsupportedModelError
from hwprune.export import export_onnx
from hwprune.models import load_model
from hwprune.prune import PruneConfig, prune
from hwprune.sparsity import NMMasks, masks_of, parse_pattern, sparsify

SMALL = ["--data", "synthetic", "--n-train", "96", "--n-val", "64"]


def groups_of_four(w: torch.Tensor | np.ndarray, axis: int = 1) -> np.ndarray:
    """(..., 4) view of ``w``: consecutive groups of 4 along ``axis`` (the input dimension)."""
    a = np.moveaxis(np.asarray(w.detach() if isinstance(w, torch.Tensor) else w), axis, -1)
    return a.reshape(-1, 4)


def assert_two_of_four(w, axis: int = 1, name: str = "") -> None:
    zeros = (groups_of_four(w, axis) == 0).sum(-1)
    assert (zeros >= 2).all(), f"{name}: {(zeros < 2).sum()} groups of 4 keep more than 2 weights"


def sparse_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {k: params[k] for k in masks_of(model).masks}


def saved_weights(path) -> dict[str, torch.Tensor]:
    """The weights as the checkpoint file holds them (loading re-applies the masks, so read them raw)."""
    return torch.load(str(path), map_location="cpu", weights_only=True)["state_dict"]


def test_masks_keep_the_two_largest_of_four_on_asp_layers_only():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 8, 3), nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 16, 1), nn.Flatten(),
                          nn.Linear(16 * 4 * 4, 32), nn.Linear(32, 10))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = sparsify(model)
    # ASP's rule: (out % 8, in % 16); depthwise (in 1), in 8 and a 10-class head stay dense
    assert set(masks.masks) == {"0.weight", "4.weight"}
    assert set(masks.skipped) == {"1.weight", "2.weight", "5.weight"}
    for name in ("0.weight", "4.weight"):
        w, orig = groups_of_four(dict(model.named_parameters())[name]), groups_of_four(before[name])
        assert ((w == 0).sum(-1) == 2).all() and (orig != 0).all()
        kept_min = np.where(w != 0, np.abs(orig), np.inf).min(-1)
        dropped_max = np.where(w == 0, np.abs(orig), -np.inf).max(-1)
        assert (kept_min >= dropped_max).all()  # magnitude: the two largest of every four survive
    for name in ("1.weight", "2.weight", "5.weight"):
        assert torch.equal(dict(model.named_parameters())[name], before[name])
    # conv masks group input channels at each (out, kh, kw), as ASP permutes (K, C, R, S) -> (R, S, K, C)
    w0 = model[0].weight.detach()
    assert ((w0.permute(0, 2, 3, 1).reshape(-1, 4) == 0).sum(-1) == 2).all()
    round_trip = NMMasks.from_dict(masks.to_dict())
    assert all(torch.equal(round_trip.masks[k], masks.masks[k]) for k in masks.masks)


@pytest.mark.parametrize("bad", ["3:4", "2:8", "2-4", "", "two:four"])
def test_bad_pattern_names_the_valid_values(bad):
    with pytest.raises(ConfigError, match="valid values: 2:4"):
        parse_pattern(bad)
    with pytest.raises(ConfigError, match="valid values: 2:4"):
        PruneConfig(ratio=0.5, sparsity=bad)
    with pytest.raises(ConfigError, match="--iterative 2: the iterative steps fine-tune dense"):
        PruneConfig(budget="50%flops", iterative=2, sparsity="2:4")  # its steps would drop the masks


def test_cli_errors_exit_2_with_a_message(tmp_path, capsys):
    assert main(["prune", "--model", "tiny_resnet", "--sparsity", "3:4", "--out", str(tmp_path / "a")]) == 2
    assert "--sparsity '3:4'" in capsys.readouterr().err and not (tmp_path / "a").exists()
    (tmp_path / "tiny.py").write_text("from torch import nn\n\ndef net():\n"
                                      "    return nn.Sequential(nn.Conv2d(3, 6, 3), "
                                      "nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10))\n")
    spec = f"{tmp_path / 'tiny.py'}:net"
    assert main(["prune", "--model", spec, "--sparsity", "2:4", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "no weight that 2:4 sparsity applies to" in err and "in % 16 == 0" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    with pytest.raises(UnsupportedModelError):
        sparsify(load_model(spec).model)
    assert main(["prune", "--model", "tiny_resnet", "--sparsity", "2:4", "--strategy", "netadapt",
                 "--out", str(tmp_path / "c")]) == 2
    assert "add --budget" in capsys.readouterr().err


def _onnx_weight_for(proto, mask: torch.Tensor):
    """The initializer that holds the weight ``mask`` belongs to (zero wherever the mask drops),
    and its input axis: as is (Conv, Gemm transB) or transposed (MatMul (in, out))."""
    m = mask.numpy()
    for init in proto.graph.initializer:
        a = numpy_helper.to_array(init)
        if a.shape == m.shape and not a[~m].any():
            return a, 1
        if m.ndim == 2 and a.shape == m.T.shape and not a[~m.T].any():
            return a, 0
    raise AssertionError(f"no ONNX initializer of shape {tuple(m.shape)} carries the mask")


def assert_onnx_keeps_masks(model: nn.Module, path: str) -> None:
    proto = onnx.load(path)
    for name, mask in masks_of(model).masks.items():
        w, axis = _onnx_weight_for(proto, mask)
        assert_two_of_four(w, axis, name)
        assert np.count_nonzero(w) >= 0.45 * w.size  # the kept half is really there (BN folding scales rows)


def assert_ort_matches(model: nn.Module, path: str, size: int = 32) -> None:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(3)
    for _ in range(3):  # the export has a static batch of 1
        x = torch.randn(1, 3, size, size, generator=g)
        with torch.no_grad():
            ref = model.eval()(x).numpy()
        got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
        assert np.abs(got - ref).max() <= 1e-3 * (ref.std() + 1e-3)


def test_prune_sparsity_then_train_then_export_keeps_2to4(tmp_path, capsys):
    """The ASP recipe end to end through the real CLI: mask the trained model, fine-tune with the
    masks fixed, train more from the checkpoint, export; the pattern holds at every step."""
    dense = load_model("tiny_resnet_synthetic").model
    dense_w = {k: p.detach().clone() for k, p in dense.named_parameters()}
    a, b = tmp_path / "sparse", tmp_path / "trained"
    assert main(["prune", "--model", "tiny_resnet_synthetic", "--sparsity", "2:4", *SMALL, "--data-batch", "32",
                 "--evaluator", "accuracy", "--finetune-epochs", "1", "--out", str(a), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2:4 sparsity (ASP): 14 layers" in out and "before masking ->" in out
    assert "after fine-tune (masks fixed)" in out
    report = json.loads((a / "report.json").read_text())
    sp = report["sparsity"]
    assert sp["pattern"] == "2:4" and sp["layers"] == 14 and sp["holds"]
    assert set(sp["dense"]) == {"stem.0.weight", "fc.weight"}  # RGB stem (in 3) and 10-class head: ASP skips
    assert 0.45 < sp["fraction_masked_of_all_weights"] < 0.5
    assert set(report["accuracy"]) == {"before", "after_sparsity", "after_finetune"}
    assert report["finetune"]["epochs"] == 1 and report["finetune"]["masks"] == "fixed"
    sparse = load_checkpoint(str(a / "pruned.pt")).model
    raw = saved_weights(a / "pruned.pt")
    for name in sparse_weights(sparse):
        w = raw[name]
        assert (groups_of_four(dense_w[name]) != 0).all()  # dense before: the zeros are the masks'
        assert ((groups_of_four(w) == 0).sum(-1) == 2).all(), name  # exactly 2:4 after fine-tuning
    # fine-tuning moved the kept weights (the masks are fixed, the weights are not)
    name = "layers.0.conv1.weight"
    kept = masks_of(sparse).masks[name]
    assert not torch.allclose(sparse_weights(sparse)[name].detach()[kept], dense_w[name][kept])

    assert main(["train", "--model", str(a / "pruned.pt"), *SMALL, "--batch-size", "32", "--epochs", "2",
                 "--out", str(b), "--quiet"]) == 0
    assert "2:4 sparsity kept fixed: 14 layers" in capsys.readouterr().out
    treport = json.loads((b / "report.json").read_text())
    assert treport["sparsity"]["pattern"] == "2:4" and treport["sparsity"]["holds"]
    trained = load_checkpoint(str(b / "trained.pt")).model
    assert masks_of(trained) is not None
    before_w, raw = sparse_weights(sparse), saved_weights(b / "trained.pt")
    for name in sparse_weights(trained):
        w = raw[name]
        assert torch.equal(w.detach() != 0, masks_of(trained).masks[name]), name  # zeros exactly where masked
        assert_two_of_four(w, 1, name)
        assert not torch.equal(w.detach(), before_w[name].detach())  # and it trained

    onnx_path = tmp_path / "trained.onnx"
    assert main(["export", "--model", str(b / "trained.pt"), "--out", str(onnx_path)]) == 0
    assert "2:4 pattern in the ONNX weights: 14 of 15" in capsys.readouterr().out
    assert_onnx_keeps_masks(trained, str(onnx_path))
    assert_ort_matches(trained, str(onnx_path))


def test_channel_pruning_then_2to4_then_finetune(tmp_path):
    """On top of a channel cut: masks on the smaller model, fine-tuned fixed, exported as 2:4."""
    loaded = load_model("tiny_resnet_synthetic")
    data = make_data("synthetic", input_size=32, batch_size=32, n_train=64, n_val=32)
    res = prune(loaded, PruneConfig(ratio=0.5, sparsity="2:4", finetune_epochs=1, progress=False), data=data)
    assert res.report.sparsity["pattern"] == "2:4" and res.report.to_dict()["sparsity"]["layers"] > 0
    assert res.report.sparsity["holds"] and set(res.report.accuracy or {}) <= {"before", "after"}  # no evaluator
    assert res.report.widths["layers.4.conv1"]["after"] < res.report.widths["layers.4.conv1"]["before"]
    masks = masks_of(res.model)
    for name, w in sparse_weights(res.model).items():
        assert torch.equal(w.detach() != 0, masks.masks[name]), name
        assert_two_of_four(w, 1, name)
    path = str(tmp_path / "cut24.onnx")
    export_onnx(res.model, torch.randn(1, 3, 32, 32), path)
    assert_onnx_keeps_masks(res.model, path)
    assert_ort_matches(res.model, path)


def test_vit_linear_and_attention_weights_export_as_2to4(tmp_path):
    """A ViT: MLP, attention in-projection and out-projection weights are masked; the exporter
    transposes most of them into MatMul (in, out) initializers, which keep 2:4 along 'in'."""
    model = load_model("tiny_vit").model
    torch.nn.init.normal_(model.heads.head.weight, std=0.5)  # torchvision zero-initialises the head
    masks = sparsify(model)
    assert sum(k.endswith("in_proj_weight") for k in masks.masks) == 2 and len(masks.masks) == 8
    path = str(tmp_path / "vit24.onnx")
    export_onnx(model, torch.randn(1, 3, 32, 32), path)
    assert_onnx_keeps_masks(model, path)
    assert_ort_matches(model, path)


def test_tensorrt_sparse_uses_the_models_masks_or_masks_a_copy():
    """What `export --format tensorrt --sparse` hands the engine builder (TensorRT itself is absent
    here): a model with masks as it is; a dense one as a masked copy, the original untouched."""
    from hwprune.export import _sparse_model

    model = load_model("tiny_resnet_synthetic").model
    dense = {k: p.detach().clone() for k, p in model.named_parameters()}
    copy_, n, how = _sparse_model(model)
    assert copy_ is not model and n == 14 and "one-shot" in how and masks_of(model) is None
    assert all(torch.equal(p, dense[k]) for k, p in model.named_parameters())
    for name, w in sparse_weights(copy_).items():
        assert_two_of_four(w, 1, name)
    masks = sparsify(model)
    same, n, how = _sparse_model(model)
    assert same is model and n == len(masks.masks) and "checkpoint's 2:4 masks" in how
