"""The device side installs alone (issue #20 item 4): a fresh venv WITHOUT torch (plain ``venv``, no
system site packages) gets ``hwprune-deploy`` from ``deploy/pyproject.toml`` with only numpy and
onnxruntime from the package index, measures a bundle the host wrote, and the host reads the
result back into a latency table that prices the model. Runs in CI (~45-60 s: most of it pip)."""
import json
import os
import shutil
import subprocess
import sys
import warnings


from hwprune.graph import ChannelGraph
from hwprune.latency import LatencyTable, ProfileConfig
from hwprune.latency.bundle import read_bundle_result, write_bundle
from hwprune.models import load_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


def test_device_side_installs_without_torch_and_measures_a_bundle(tmp_path):
    import torch

    loaded = load_model("tiny_resnet")
    bundle = str(tmp_path / "tiny.zip")
    write_bundle(loaded, ProfileConfig.quick(input_size=16, threads=1), bundle, points_per_axis=2)

    venv = tmp_path / "device-venv"
    _run([sys.executable, "-m", "venv", str(venv)])  # plain venv: no system site packages, so no torch
    py = str(venv / "bin" / "python")
    src = tmp_path / "deploy-src"  # build from a copy: the build writes build/ and egg-info next to the sources
    shutil.copytree(os.path.join(REPO, "deploy"), src, ignore=shutil.ignore_patterns("__pycache__", "build",
                                                                                    "*.egg-info"))
    _run([py, "-m", "pip", "install", "-q", str(src)])
    no_torch = subprocess.run([py, "-c", "import torch"], capture_output=True, text=True)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    deps = _run([py, "-m", "pip", "list", "--format", "json"]).stdout
    names = {d["name"].lower() for d in json.loads(deps)}
    assert {"hwprune-deploy", "numpy", "onnxruntime"} <= names and "hwprune" not in names

    result = str(tmp_path / "result.json")
    _run([str(venv / "bin" / "hwprune-deploy"), "measure", bundle, "--out", result, "--threads", "1",
          "--repeats", "3", "--min-repeat-ms", "0.2", "--no-progress"], cwd=str(tmp_path))
    with open(result) as f:
        res = json.load(f)
    assert res["fingerprint"]["threads"] == 1

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = LatencyTable.load(read_bundle_result(result, out=str(tmp_path / "table.json")))
    graph = ChannelGraph(loaded.model, torch.randn(1, 3, 16, 16))
    cost = table.cost_model(graph)
    small = {g.name: g.candidate_widths(8, 8)[0] for g in graph.prunable}
    # the units the device timed price the model: fewer channels, less time (a quick table's calibrated
    # prediction at the floor can be off on a busy machine; its units are what the device measured)
    assert table.backend == "ort-cpu" and table.device["threads"] == 1
    assert 0 < cost.units_sum(small) < cost.units_sum({}) and cost.predict({}) > 0

    # the same install times the files `hwprune export` writes, as `hwprune bench` does on the host
    from hwprune.export import export_onnx

    onnx_file = str(tmp_path / "tiny.onnx")
    assert export_onnx(loaded.model, torch.randn(1, 3, 16, 16), onnx_file).ok
    out = str(tmp_path / "bench.json")
    r = _run([str(venv / "bin" / "hwprune-deploy"), "bench", onnx_file, onnx_file, "--threads", "1", "--repeats", "3",
              "--warmup", "1", "--json", out], cwd=str(tmp_path))
    with open(out) as f:
        b = json.load(f)
    assert [row["batch"] for row in b["rows"]] == [1, 1] and all(row["p10_ms"] > 0 for row in b["rows"])
    assert b["files"][onnx_file]["input_shape"] == [1, 3, 16, 16] and "speedup of B over A" in r.stdout
    assert b["files"][onnx_file]["precision"].startswith("unknown")  # no onnx package on the device: said so
    bad = subprocess.run([str(venv / "bin" / "hwprune-deploy"), "bench", onnx_file, "--batch", "2"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--dynamic-batch" in bad.stderr and "Traceback" not in bad.stderr
