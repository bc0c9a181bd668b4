"""The GPU artefact without TensorRT (issue #21.3): torch.export + AOTInductor packages. Built,
loaded back, parity-checked and benched here on the CPU (the same code compiles for CUDA on a GPU
session; that test skips without one)."""
import os

import pytest
import torch
from torch import nn

from hwprune.aoti import _compare, export_aoti, load_aoti, package_info
from hwprune.aoti_bench import bench_packages
from hwprune.errors import ConfigError


def _small():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 10)).eval()


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("aoti") / "small.pt2")
    return export_aoti(_small(), torch.randn(1, 3, 16, 16), path, device="cpu", samples=3)


def test_package_runs_what_eager_runs_and_benches(package):
    assert package.parity.ok and not package.parity.vacuous and package.parity.inputs == 3
    assert os.path.getsize(package.path) == package.size_bytes > 0
    assert not [f for f in os.listdir(os.path.dirname(package.path)) if ".tmp-" in f]  # no staging file left
    run = load_aoti(package.path)
    assert package_info(run) == {"input_shape": [1, 3, 16, 16], "precision": "fp32", "device": "cpu"}
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(run(x)[0] if isinstance(run(x), (list, tuple)) else run(x), _small()(x), atol=1e-5)
    res = bench_packages([package.path, package.path], threads=1, warmup=2, repeats=5)
    assert res["device"] == "cpu" and len(res["models"]) == 2
    assert all(m["p10_ms"] <= m["median_ms"] <= m["p90_ms"] for m in res["models"].values())
    assert res["speedup"] > 0


def test_parity_check_fails_on_a_wrong_or_flat_package():
    model = _small()
    inputs = [torch.randn(1, 3, 16, 16) for _ in range(2)]
    good = _compare(model, model, inputs, "cpu", torch.float32, 1e-6, 1e-3)
    assert good.ok
    wrong = _compare(model, lambda x: model(x) * 1.01, inputs, "cpu", torch.float32, 1e-6, 1e-3)
    assert not wrong.ok and wrong.max_err_spread > 1e-3
    flat = nn.Sequential(nn.Flatten(), nn.Linear(768, 4)).eval()
    with torch.no_grad():
        flat[1].weight.zero_()
        flat[1].bias.fill_(0.5)
    vac = _compare(flat, lambda x: flat(x) + 1.0, inputs, "cpu", torch.float32, 1e-6, 1e-3)
    assert vac.vacuous and not vac.ok


def test_bad_input_is_refused_before_any_compile(tmp_path, cli):
    with pytest.raises(ConfigError, match=r"\.pt2"):
        export_aoti(_small(), torch.randn(1, 3, 16, 16), str(tmp_path / "x.onnx"), device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="--device cpu"):
            export_aoti(_small(), torch.randn(1, 3, 16, 16), str(tmp_path / "x.pt2"), device="cuda")
        p = cli("export", "--model", "tiny_resnet", "--format", "aoti", "--device", "cuda", "--out",
                str(tmp_path / "t.pt2"), check=False)
        assert p.returncode == 2 and "no CUDA GPU" in p.stderr
    p = cli("export", "--model", "tiny_resnet", "--device", "cpu", "--out", str(tmp_path / "t.onnx"), check=False)
    assert p.returncode == 2 and "--format aoti" in p.stderr
    p = cli("bench", "--model", str(tmp_path / "missing.pt2"), check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_package_matches_eager_fp16(tmp_path):
    r = export_aoti(_small(), torch.randn(8, 3, 16, 16), str(tmp_path / "g.pt2"), device="cuda", precision="fp16")
    assert r.parity.ok and package_info(load_aoti(r.path))["device"] == "cuda"
    res = bench_packages([r.path], warmup=3, repeats=10)
    assert res["device"] == "cuda" and res["models"][r.path]["median_ms"] > 0
