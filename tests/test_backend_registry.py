"""One backend registry (hwprune_deploy.backends): a backend added in one place is usable by
profile, the budget's measurement and bench; unknown names list the registered ones; every CLI
takes its backend choices from the registry; absent GPU runtimes are a clear message."""
import json
import subprocess
import sys
import time
import zipfile

import pytest
import torch

from hwprune.backends import list_backends
from hwprune.errors import BackendUnavailableError, ConfigError
from hwprune.models import load_model
from hwprune_deploy import backends as registry
from hwprune_deploy.ort_backend import OrtCpuBackend
from hwprune_deploy.trt import unavailable_reason

SLEEP_MS = 2.0  # the toy's known extra time per whole-model run
FAST = dict(warmup=1, repeats=3, min_repeat_ms=1.0)
BUILTIN = {"ort-cpu", "tensorrt", "tensorrt-sparse", "torch-cpu", "torch-cuda", "torch-cuda-sparse"}


class SlowOrt(OrtCpuBackend):
    """A toy ONNX backend: ONNX Runtime pinned to one thread, each wall-clock run SLEEP_MS slower
    (unit kernel times, read from ORT's profiler, are untouched)."""

    name = "toy"

    def __init__(self, threads: int = 2, **kw):
        super().__init__(threads=1, **kw)

    def prepare(self, data, kernel_time=False, inputs=None):
        run = super().prepare(data, kernel_time=kernel_time, inputs=inputs)
        if kernel_time:
            return run

        def slow():
            time.sleep(SLEEP_MS / 1e3)
            return run()

        return slow


@pytest.fixture
def toy():
    registry.register_backend("toy", SlowOrt)  # the one place the toy backend is added
    yield "toy"
    registry.unregister_backend("toy")


def small():
    return load_model("tiny_resnet", kwargs={"width": 8, "depth": 1})


def test_toy_backend_profiles_a_small_model(tmp_path, toy):
    from hwprune.latency import LatencyTable, ProfileConfig, profile

    assert toy in list_backends(onnx=True)
    path = profile(small(), ProfileConfig.quick(backend=toy, input_size=16, out=str(tmp_path / "t.json")),
                   progress=False)
    t = LatencyTable.load(path)
    assert t.backend == toy and t.device["threads"] == 1  # its own fingerprint: the fixed thread count
    assert t.protocol["align"] == OrtCpuBackend.default_grid(t.device)  # its grid
    assert t.protocol["unit"]["context"] and "kernel" in t.protocol["unit"]["unit_time"]
    rec = next(iter(t.models.values()))
    assert rec["full_ms"] >= SLEEP_MS  # the whole model was timed by the toy's runner
    from hwprune.graph import ChannelGraph

    assert t.cost_model(ChannelGraph(small().model, torch.randn(1, 3, 16, 16))).predict({}) > 0  # it predicts


def test_toy_backend_measures_budgets_and_benches(toy):
    from hwprune.bench import BenchConfig, bench
    from hwprune.latency.measure import measure_against_baseline
    from hwprune_deploy.timing import Protocol

    a, b = small(), load_model("tiny_resnet", kwargs={"width": 16, "depth": 1})
    x = torch.randn(1, 3, 16, 16)
    t = measure_against_baseline(toy, {"baseline": a.model, "wide": b.model}, x,
                                 protocol=Protocol(warmup=1, repeats=3, min_repeat_ms=0.5, statistic="p10"))
    assert set(t) == {"baseline", "wide"} and all(v.p10_ms >= SLEEP_MS for v in t.values())
    res = bench({"a": a, "b": b}, BenchConfig(backend=toy, input_size=16, **FAST), progress=False)
    assert res["backend"] == toy and res["fingerprint"]["threads"] == 1
    assert all(r["p10_ms"] >= SLEEP_MS for r in res["rows"])


def test_unknown_backend_lists_the_registered_names():
    from hwprune.bench import BenchConfig
    from hwprune.latency import ProfileConfig
    from hwprune.latency.measure import Measurer

    for make in (lambda: Measurer("ort-gpu"), lambda: ProfileConfig(backend="ort-gpu"),
                 lambda: BenchConfig(backend="ort-gpu")):
        with pytest.raises(ConfigError) as e:
            make()
        msg = str(e.value)
        assert "'ort-gpu'" in msg and "Did you mean 'ort-cpu'" in msg and all(n in msg for n in BUILTIN)
    with pytest.raises(registry.UnknownBackendError, match="Available: ort-cpu"):
        registry.get_backend("ort-gpu")


def test_options_a_backend_lacks_are_config_errors():
    from hwprune.latency.measure import Measurer

    with pytest.raises(ConfigError, match="precision 'fp16' is not supported on ort-cpu; use fp32 or int8"):
        Measurer("ort-cpu", precision="fp16")
    with pytest.raises(ConfigError, match="--ort-spinning applies to --backend ort-cpu only"):
        Measurer("torch-cpu", spinning=True)


def _backend_choices(parser, command):
    sub = next(a for a in parser._actions if a.dest == "command")
    return next(a for a in sub.choices[command]._actions if a.dest == "backend").choices


def test_every_cli_takes_its_backends_from_the_registry(toy):
    from hwprune.cli.main import build_parser

    parser = build_parser()
    for command in ("profile", "bench"):
        assert list(_backend_choices(parser, command)) == list_backends()
    assert toy in _backend_choices(parser, "bench")  # built from the registry as it stands
    import argparse

    from hwprune_deploy import cli as deploy_cli

    seen = {}
    real = argparse.ArgumentParser.parse_args

    def grab(self, args=None, namespace=None):  # read the device CLI's parser, then stop
        seen["parser"] = self
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            deploy_cli.main(["measure", "b.zip", "--out", "r.json"])
    finally:
        argparse.ArgumentParser.parse_args = real
    assert list(_backend_choices(seen["parser"], "measure")) == list_backends(onnx=True)


def _bundle(path):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"precision": "fp32", "spinning": False, "families": {}, "models": {}}))
    return str(path)


def test_deploy_cli_backend_errors_are_clean(tmp_path, capsys):
    from hwprune_deploy.cli import main
    from hwprune_deploy.runner import measure_bundle

    bundle = _bundle(tmp_path / "b.zip")
    with pytest.raises(SystemExit) as e:  # argparse: exit 2 naming the choices
        main(["measure", bundle, "--out", str(tmp_path / "r.json"), "--backend", "ort-gpu"])
    assert e.value.code == 2 and "ort-cpu" in capsys.readouterr().err
    with pytest.raises(registry.UnsupportedOptionError, match="device-side backends: ort-cpu"):
        measure_bundle(bundle, backend="torch-cpu")
    if unavailable_reason():
        rc = main(["measure", bundle, "--out", str(tmp_path / "r.json"), "--backend", "tensorrt", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 2 and "backend 'tensorrt' is unavailable" in err and "Traceback" not in err
        assert not (tmp_path / "r.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the unavailable path does not apply")
def test_absent_gpu_runtimes_are_clear_messages():
    from hwprune.latency.measure import Measurer

    with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU"):
        Measurer("torch-cuda")
    if unavailable_reason():
        for name in ("tensorrt", "tensorrt-sparse"):
            with pytest.raises(BackendUnavailableError, match=f"hwprune-deploy measure b.zip --backend {name}"):
                Measurer(name, precision="fp16")


def test_registry_imports_backends_lazily_and_stays_torch_free():
    code = ("import sys\n"
            "from hwprune_deploy import backends as b\n"
            "names = b.list_backends()\n"
            "assert 'torch' not in sys.modules and 'hwprune' not in sys.modules, 'eager import'\n"
            "assert 'hwprune_deploy.ort_backend' not in sys.modules and 'hwprune_deploy.trt_backend' not in sys.modules\n"
            "be = b.get_backend('ort-cpu', threads=1)\n"
            "assert 'hwprune_deploy.trt_backend' not in sys.modules and 'torch' not in sys.modules\n"
            "print(','.join(names), be.default_grid({'nchwc_block': 16}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    names, grid = out.split()
    assert set(names.split(",")) == BUILTIN and grid == "16"
