"""int8 on ONNX Runtime CPU (issue #19): static QDQ quantization with onnxruntime.quantization, the
quantized graph ORT really runs, the int8 export's accuracy check, int8 tables kept apart from fp32.
Real ORT sessions, real exported and quantized files, the shipped trained model; small sizes."""
import collections
import math

import numpy as np
import onnx
import pytest
import torch

from conftest import optimized_graph
from hwprune.errors import ConfigError, ExportError
from hwprune.models import load_model

SIZE = 32


@pytest.fixture(scope="module")
def data():
    from hwprune.data import make_data

    return make_data("synthetic", input_size=SIZE, n_train=128, n_val=256, calib_size=128, batch_size=64)


@pytest.mark.parametrize("spec", ["tiny_resnet_synthetic", "tiny_resnet"])
def test_int8_units_are_what_ort_runs_in_the_quantized_network(tmp_path, spec):
    """The fusions ORT applies to a QDQ graph, checked on the quantized full model: every conv
    becomes a QLinearConv with its ReLU gone (folded into the output range), every residual add a
    QLinearAdd of its own (not fused into the conv, unlike fp32), and between them nothing else --
    no Quantize/Dequantize/Transpose inside the network, only at its edges. Each unit's quantized
    micro-model, less its context and edge nodes (what kernel time leaves out), runs exactly that.
    Trained and random-init alike: in a random-init network the exporter shares one zero bias
    among equal-width convs, which left most of random-init resnet18's convs as float Conv between
    Dequantize and Quantize until each was given its own copy (:func:`own_weights`)."""
    from hwprune.export import onnx_bytes
    from hwprune.graph import ChannelGraph
    from hwprune.latency.micro import unit_onnx
    from hwprune.latency.units import extract_units
    from hwprune_deploy.quant import quantize_qdq
    from hwprune_deploy.runner import CONTEXT_PREFIX, LAYOUT_OPS

    from hwprune_deploy.quant import own_weights

    torch.manual_seed(0)
    model = load_model(spec).model.eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    shared = own_weights(onnx.load_from_string(onnx_bytes(model, x)))
    assert (shared > 0) == (spec == "tiny_resnet"), shared  # the random-init net shares biases, the trained one not
    units = extract_units(ChannelGraph(model, x), dtype="int8")
    g = optimized_graph(quantize_qdq(onnx_bytes(model, x)), tmp_path)
    ops = [n.op_type for n in g.node]
    count = collections.Counter(ops)
    convs = [u for u in units if u.family.kind == "conv"]
    assert count["QLinearConv"] == len(convs) and "Conv" not in count and "Relu" not in count
    assert count["QLinearAdd"] == sum(u.family.add for u in convs) > 0
    first, last = ops.index("QLinearConv"), len(ops) - 1 - ops[::-1].index("QLinearAdd")
    assert not set(ops[first:last + 1]) & {"QuantizeLinear", "DequantizeLinear", "Transpose"}, ops
    assert all(u.family.key.endswith("-int8") for u in units)
    for u in {u.family.key: u for u in convs}.values():  # one micro-model per family
        data = quantize_qdq(unit_onnx(u.family, u.cin, u.cout, residual_context=True, input_context=True))
        mine = [n.op_type for n in optimized_graph(data, tmp_path, "unit.onnx").node
                if not n.name.startswith(CONTEXT_PREFIX) and n.op_type not in LAYOUT_OPS]
        assert mine == ["QLinearConv"] + (["QLinearAdd"] if u.family.add else []), (u.family.key, mine)


def test_ort_cpu_int8_backend_times_the_quantized_unit():
    """ort-cpu declares int8; with it every model it prepares is quantized (a QDQ file is run as it
    is), units are timed by kernel time without the edge Quantize/Dequantize/Transpose nodes, and a
    backend without int8 refuses it, naming the fix."""
    from hwprune.backends import get_backend
    from hwprune.latency.micro import unit_onnx
    from hwprune.latency.units import UnitFamily
    from hwprune_deploy.backends import UnsupportedOptionError, get_backend as device_backend
    from hwprune_deploy.quant import is_quantized
    from hwprune_deploy.runner import measure_onnx_set
    from hwprune_deploy.timing import Protocol

    be = device_backend("ort-cpu", precision="int8")
    fam = UnitFamily("conv", 16, 16, kernel=(3, 3), padding=(1, 1), act="relu", dtype="int8")
    data = unit_onnx(fam, 64, 64, residual_context=True, input_context=True)
    assert not is_quantized(data) and is_quantized(be.quantized(data))
    assert be.fingerprint()["quantization"]["format"] == "QDQ"
    quick = Protocol(warmup=1, repeats=4, min_repeat_ms=0.5, statistic="p10")
    t = {}
    for _ in range(2):
        for name, kt in (("kernel", True), ("wall", False)):
            v = measure_onnx_set({"u": data}, be.runner_factory(kernel_time=kt), quick)["u"].p10_ms
            t[name] = min(t.get(name, np.inf), v)
    # kernel and wall time come from separate runs: a clean-clone CI run beside the other xdist
    # worker read kernel 0.126 > wall 0.116 ms, so the check allows that noise
    assert 0 < t["kernel"] < 1.5 * t["wall"]
    with pytest.raises(UnsupportedOptionError, match="int8"):
        device_backend("tensorrt-sparse", precision="int8")
    with pytest.raises(ConfigError, match="int8.*torch-cpu|torch-cpu.*int8"):
        get_backend("torch-cpu", precision="int8")


def test_int8_measurer_quantizes_each_model_once_whatever_the_passes(monkeypatch):
    """Every int8 whole-model and unit timing goes through one quantization per model: the
    device runners would otherwise quantize again each time a pass opens a session (before the
    fix: 16 quantizations for two models timed in 8 passes; resnet50's fidelity run quantized
    every variant on every pass). What is timed is the quantized model, pass after pass."""
    import hwprune_deploy.quant as quant
    from hwprune.latency.measure import Measurer
    from hwprune.latency.units import UnitFamily
    from hwprune.zoo import tiny_resnet

    calls = []
    real = quant.quantize_qdq
    monkeypatch.setattr(quant, "quantize_qdq", lambda *a, **k: calls.append(1) or real(*a, **k))
    meas = Measurer("ort-cpu", 2, "int8")
    x = torch.randn(1, 3, 16, 16)
    t = meas.models({"a": tiny_resnet().eval(), "b": tiny_resnet(width=16).eval()}, x, reference="a")
    assert len(calls) == 2 and min(len(h) for h in meas.last_history.values()) >= 4
    assert 0 < t["b"].p10_ms and 0 < t["a"].p10_ms
    calls.clear()
    fam = UnitFamily("conv", 16, 16, kernel=(3, 3), padding=(1, 1), act="relu", dtype="int8")
    u = meas.units(fam, [(16, 16), (32, 32)], passes=3)
    assert len(calls) == 2 and set(u) == {(16, 16), (32, 32)} and all(v.p10_ms > 0 for v in u.values())


def test_export_int8_writes_a_qdq_file_checked_against_fp32(tmp_path, data):
    from hwprune.quantize import export_int8

    model = load_model("tiny_resnet_synthetic").model.eval()
    path = str(tmp_path / "m8.onnx")
    res = export_int8(model, torch.randn(1, 3, SIZE, SIZE), path, data, calib_batches=2, eval_batches=4)
    g = onnx.load(path).graph
    ops = collections.Counter(n.op_type for n in g.node)
    assert ops["QuantizeLinear"] > 5 and ops["DequantizeLinear"] > 5 and ops["Conv"] > 0  # QDQ around float ops
    w_dq = [n for n in g.node if n.op_type == "DequantizeLinear" and "weight" in n.input[0].lower()]
    assert any(len(n.attribute) and n.attribute[0].name == "axis" for n in w_dq) or w_dq  # per-channel weights
    c = res.check
    assert c.images == 256 and c.ok and c.agreement > 0.9 and abs(c.drop_points) <= 1.0
    assert 0.4 < c.top1_fp32 <= 1.0 and c.rel_logit_err < 0.2
    # the file runs in a real ORT session, batch fixed as traced, and agrees with PyTorch's classes
    from hwprune_deploy.ort import make_session

    sess = make_session(open(path, "rb").read(), threads=2)
    assert sess.get_inputs()[0].shape[0] == 1
    x, y = next(iter(data.val))
    pred = np.array([sess.run(None, {"input": x[i:i + 1].numpy()})[0].argmax() for i in range(32)])
    ref = model(x[:32]).argmax(1).numpy()
    assert (pred == ref).mean() > 0.85


def test_export_int8_too_lossy_names_the_layer_and_keep_fp32_fixes_it(tmp_path, data, monkeypatch):
    """A real int8 failure: full-range (8-bit) weights in u8s8 on a CPU without VNNI, where AVX2's
    vpmaddubsw saturates its int16 pair sums (why hwprune quantizes weights to 7 bits there). The
    error names the layer whose fp32 copy recovers most of the logit error and suggests
    --keep-fp32 for it; with that flag the same export passes and the layer is a float Conv."""
    import hwprune_deploy.quant as quant
    from hwprune.quantize import export_int8

    if quant.has_vnni():
        pytest.skip("this CPU has VNNI: u8s8 does not saturate here")
    monkeypatch.setattr(quant, "REDUCE_RANGE", False)
    model = load_model("tiny_resnet_synthetic").model.eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    path = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match=r"costs most is (\S+) .*--keep-fp32 \1,") as e:
        export_int8(model, x, str(path), data, calib_batches=2, eval_batches=4)
    assert not path.exists()
    bad = e.value.check
    worst = bad.sensitivity[0]
    assert bad.drop_points > 1.0 and worst["error_without"] < 0.5 * worst["error_all_int8"]
    res = export_int8(model, x, str(path), data, calib_batches=2, eval_batches=4, keep_fp32=[worst["layer"]])
    assert res.check.ok and res.check.agreement > bad.agreement and res.keep_fp32_nodes == worst["nodes"]
    kept = [n for n in onnx.load(str(path)).graph.node if n.name in worst["nodes"]]
    assert kept and all(n.op_type in ("Conv", "Gemm") for n in kept)
    with pytest.raises(ConfigError, match="no layer of that name.*layers.0.conv1"):
        export_int8(model, x, str(tmp_path / "x.onnx"), data, keep_fp32=["layers.0.nope"])


def test_export_cli_int8_and_its_refusals(tmp_path, capsys):
    from hwprune.cli.main import main

    out = tmp_path / "cli8.onnx"
    rc = main(["export", "--model", "tiny_resnet_synthetic", "--precision", "int8", "--calib-data", "synthetic",
               "--calib-batches", "2", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and out.exists() and "top-1 agreement" in text and "QuantizeLinear" in text, text
    assert main(["export", "--model", "tiny_resnet_synthetic", "--precision", "int8", "--out", str(tmp_path / "n.onnx")]) == 2
    err = capsys.readouterr().err
    assert "--calib-data synthetic" in err and not (tmp_path / "n.onnx").exists()
    assert main(["export", "--model", "tiny_resnet_synthetic", "--keep-fp32", "fc", "--out", str(tmp_path / "k.onnx")]) == 2
    assert "--precision int8" in capsys.readouterr().err


@pytest.fixture(scope="module")
def int8_table(tmp_path_factory):
    """A quick int8 table of the shipped model at 32 px (2 points per axis, as the latency tests)."""
    from hwprune.latency import ProfileConfig, profile

    path = str(tmp_path_factory.mktemp("int8") / "t-int8.json")
    profile(load_model("tiny_resnet_synthetic"), ProfileConfig.quick(precision="int8", input_size=SIZE, out=path,
                                                                     align=8), progress=False)
    return path


def test_int8_tables_are_named_and_kept_apart(int8_table):
    from hwprune.latency import LatencyTable, ProfileConfig, profile
    from hwprune.latency.table import default_table_name
    from hwprune.prune import PruneConfig
    from hwprune.service import TableRequest, check_given_table

    t = LatencyTable.load(int8_table)
    assert t.precision == "int8" and t.families and all(k.endswith("-int8") for k in t.families)
    assert t.device["quantization"]["format"] == "QDQ"
    assert "-int8-b1" in default_table_name(t.device, t.backend, t.precision, t.batch)
    rec = next(iter(t.models.values()))
    assert rec["full_ms"] > 0 and rec["units_full_ms"] > 0
    assert TableRequest(align=8).why_not(t) and TableRequest(precision="int8", align=8).why_not(t) is None
    with pytest.raises(ConfigError, match="holds int8 latencies.*--precision int8"):
        check_given_table(int8_table, TableRequest(align=8))
    with pytest.raises(ConfigError, match="int8 runs on --backend ort-cpu"):
        PruneConfig(budget="0.5x", precision="int8", backend="torch-cpu")
    with pytest.raises(ConfigError, match="int8"):
        profile(load_model("tiny_resnet"), ProfileConfig.quick(backend="torch-cpu", precision="int8", input_size=SIZE),
                progress=False)
    from hwprune.prune import prune

    with pytest.raises(ConfigError, match="holds int8 latencies"):  # an fp32 search handed the int8 table
        prune(load_model("tiny_resnet_synthetic"), PruneConfig(strategy="uniform", budget="0.8x", backend="ort-cpu",
                                                               input_size=SIZE), table=int8_table)


def test_a_budget_bound_to_an_int8_table_is_refused_in_an_fp32_search(int8_table, tmp_path, capsys):
    """`--budget 0.8x@INT8_TABLE` without --precision int8 would judge a float model on quantized
    times: refused before the model is loaded, naming the budget and the flag -- alone, beside an
    fp32 budget, and through the library (PruneConfig, where the CLI's check is not run)."""
    import json
    import os
    import warnings

    from hwprune.cli.main import main
    from hwprune.prune import PruneConfig, make_context, prune

    fp32 = os.path.join(os.path.dirname(__file__), "..", "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")
    d = json.loads(open(int8_table).read())
    elsewhere = str(tmp_path / "int8-elsewhere.json")  # an int8 device this machine cannot measure
    with open(elsewhere, "w") as f:
        json.dump(dict(d, device={**d["device"], "cpu": "Imaginary CPU 9000"}), f)
    for budgets in (["0.8x@" + int8_table], ["0.6x@" + fp32, "0.8x@" + elsewhere]):
        out = tmp_path / f"p{len(budgets)}"
        argv = ["prune", "--model", "tiny_resnet_synthetic", "--input-size", str(SIZE), "--backend", "none",
                "--out", str(out), "--quiet"]
        for b in budgets:
            argv += ["--budget", b]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"budget '{budgets[-1]}'" in err and "Traceback" not in err and not out.exists()
        if len(budgets) == 1:
            assert "holds int8 latencies" in err and "--precision int8" in err
        else:  # among several devices an int8 one is fine, but a share of its fp32 unpruned model needs its
            # fp32/int8 ratio, which only a device this machine can measure gives
            assert "is an int8 device that this machine cannot measure (measured on another device" in err
            assert "--budget-ref int8" in err and "4ms@" in err
    with pytest.raises(ConfigError, match="is an int8 device that this machine cannot measure"):  # the library's path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            make_context(load_model("tiny_resnet_synthetic"),
                         PruneConfig(budget="50%flops", more_budgets=(f"0.8x@{elsewhere}",), backend=None,
                                     input_size=SIZE, align=16, progress=False))
    with pytest.raises(ConfigError, match="holds int8 latencies and this search is fp32"):
        prune(load_model("tiny_resnet_synthetic"),
              PruneConfig(strategy="uniform", budget="0.8x@" + int8_table, backend=None, input_size=SIZE,
                          progress=False))
    assert main(["prune", "--model", "tiny_resnet_synthetic", "--precision", "int8", "--budget", "0.8x@" + fp32,
                 "--backend", "none", "--out", str(tmp_path / "q"), "--quiet"]) == 2
    assert "an int8 search takes one budget without @TABLE" in capsys.readouterr().err
    # --budget-ref int8 where no device is int8 would do nothing: said, not ignored
    assert main(["prune", "--model", "tiny_resnet_synthetic", "--budget", "0.8x@" + fp32, "--budget", "50%flops",
                 "--budget-ref", "int8", "--backend", "none", "--out", str(tmp_path / "r"), "--quiet"]) == 2
    assert "--budget-ref int8 says what a relative budget on an int8 device is" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--budget-ref int8 says what a relative budget on an int8 device is"):
        prune(load_model("tiny_resnet_synthetic"),  # the library's path, where the CLI's check is not run
              PruneConfig(strategy="uniform", budget="50%flops", budget_ref="int8", backend=None, input_size=SIZE,
                          progress=False))


def _floor(table: str, align: int = 16) -> float:
    """The smallest share of the unpruned model ``table`` reaches at SIZE px on grid ``align``
    (every group at its minimum width), as the search computes it -- the floor it refuses a budget
    below."""
    import warnings

    from hwprune.latency import LatencyTable
    from hwprune.prune import PruneConfig, make_context

    int8 = LatencyTable.load(table, check_device=False).precision == "int8"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx = make_context(load_model("tiny_resnet_synthetic"),
                           PruneConfig(budget="0.99x", align=align, input_size=SIZE, backend=None, progress=False,
                                       **({"precision": "int8", "budget_ref": "int8"} if int8 else {})), table=table)
    return ctx.artifacts["smallest_cost"] / ctx.baseline_cost


def test_one_model_for_an_fp32_and_an_int8_device(int8_table, tmp_path):
    """Several budgets, one of them bound to an int8 table: that device runs the pruned model
    quantized. With --budget-ref int8 its 0.7x is a share of the int8 unpruned model there; the
    search spends both tables on the int8 grid (16), and the closed loop measures the fp32 device in
    fp32 and the int8 device quantized, one row each. A budget in ms needs no --budget-ref."""
    import json
    import subprocess
    import sys
    import warnings

    from hwprune.latency import ProfileConfig, profile

    fp32 = str(tmp_path / "t-fp32.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profile(load_model("tiny_resnet_synthetic"), ProfileConfig.quick(input_size=SIZE, out=fp32, align=8),
                progress=False)
    # the share: 0.7x, or halfway between the higher of the two tables' floors on the int8 grid and the
    # unpruned model -- the quick int8 table's floor read 0.72x once on a loaded AVX-512 host
    share = max(0.7, math.ceil(((max(_floor(fp32), _floor(int8_table)) + 1) / 2) * 100) / 100)
    out = tmp_path / "p"
    r = subprocess.run([sys.executable, "-m", "hwprune", "prune", "--model", "tiny_resnet_synthetic", "--input-size",
                        str(SIZE), "--strategy", "halp", "--budget", f"{share}x@{fp32}", "--budget",
                        f"{share}x@{int8_table}", "--budget-ref", "int8", "--out", str(out), "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 3), r.stderr  # 3: a device measured over its budget on a busy machine
    rep = json.loads((out / "report.json").read_text())
    rows = rep["devices"]
    assert [(d["precision"], d["checked"]) for d in rows] == [("fp32", "measured"), ("int8", "measured")]
    assert "budget_of" not in rows[0] and rows[1]["budget_of"] == "int8 unpruned"
    for d in rows:  # each device's budget is its share of its own unpruned model, measured beside the result
        assert d["budget_ms"] == pytest.approx(share * d["baseline_ms"])
    assert rows[0]["baseline_ms"] != rows[1]["baseline_ms"]  # fp32 and quantized timings, not one measured twice
    plan = json.loads((out / "plan.json").read_text())
    assert plan["provenance"]["align"] == 16 and all(len(k) % 16 == 0 for k in plan["kept"].values())
    assert f"{share}x of int8 unpruned" in (out / "report.md").read_text()
    from hwprune.prune import PruneConfig, make_context

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ctx = make_context(load_model("tiny_resnet_synthetic"),
                           PruneConfig(budget=f"0.9x@{fp32}", more_budgets=(f"100ms@{int8_table}",), backend=None,
                                       input_size=SIZE, align=16, progress=False))
    assert [c.cost.unit for c in ctx.constraints] == ["ms", "ms"]


def test_a_share_of_the_fp32_unpruned_model_on_an_int8_device_of_this_machine(int8_table, tmp_path):
    """Among several budgets, 0.7x bound to an int8 table of this machine (no --budget-ref) is a
    share of the *fp32* unpruned model on that device, as a single-device int8 search takes it: the
    fp32/int8 ratio is measured once to set the int8 table's target, and the closed loop times the
    fp32 unpruned model beside the quantized ones in every reading and judges the result by it."""
    import json
    import warnings

    from hwprune.devices import devices_markdown
    from hwprune.prune import PruneConfig, prune

    loaded = load_model("tiny_resnet_synthetic")
    fp32 = "50%flops"  # the other budget: an exact count, so the int8 device decides what is measured
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = prune(loaded, PruneConfig(strategy="uniform", budget=fp32, more_budgets=(f"0.7x@{int8_table}",),
                                        backend="ort-cpu", input_size=SIZE, align=16, progress=False,
                                        closed_loop_rounds=1))
    rep = res.report
    q = rep.devices[1]
    assert q["precision"] == "int8" and q["checked"] == "measured" and q["budget_of"] == "fp32 unpruned"
    r = q["int8_ratio"]
    assert r["ratio"] == pytest.approx(r["fp32_unpruned_ms"] / r["int8_unpruned_ms"])
    assert q["target"] == pytest.approx(min(0.7 * r["ratio"], 1.0) * q["baseline_predicted"])
    # judged against the fp32 unpruned model timed in the same passes, not the quantized one
    assert q["budget_ms"] == pytest.approx(0.7 * q["fp32_baseline_ms"])
    assert q["fp32_baseline_ms"] != q["baseline_ms"] and q["met"] == (q["measured_ms"] <= q["budget_ms"] * 1.03)
    assert "| 0.7x of fp32 unpruned = " in devices_markdown(rep.devices)[3]
    json.dumps(q)  # the row goes to report.json as it is


def test_validate_checks_an_int8_table_on_the_grid_a_search_spends_it_on(int8_table):
    """An int8 table profiled on 8 (as older tables and bundles are) is searched on the int8
    kernels' 16 on x86 (table_align), so `validate` draws its variants there too: what is
    validated is what a search spends, not the grid the table happened to be sampled on."""
    from hwprune.latency import LatencyTable, validate
    from hwprune.latency.profile import table_align
    from hwprune_deploy.timing import Protocol

    t = LatencyTable.load(int8_table)
    assert t.protocol["align"] == 8
    loaded = load_model("tiny_resnet_synthetic")
    d = validate(loaded, int8_table, samples=3, seed=1, progress=False, passes=1, recalibrate=False,
                 protocol=Protocol(warmup=1, repeats=2, min_repeat_ms=0.2)).to_dict()
    grid = table_align(t)
    assert d["align"] == grid == 16
    from hwprune.graph import ChannelGraph

    full = {g.name: g.width for g in ChannelGraph(loaded.model, torch.randn(1, 3, SIZE, SIZE)).prunable}
    cut = [w for v in d["variants"] for k, w in v["widths"].items() if w != full[k]]
    assert cut and all(w % grid == 0 for w in cut), cut
    assert all(v["measured_ms"] > 0 and v["predicted_ms"] > 0 for v in d["variants"])


def test_an_int8_budget_in_ms_on_another_machines_table_is_predicted_only(int8_table, tmp_path):
    """--precision int8 with a budget in ms on an int8 table of a device this machine cannot measure:
    the closed loop is off (it would time the quantized model here and judge that device's
    milliseconds by it), as for fp32; the verdict says not measured and the report warns."""
    import json
    import warnings

    from hwprune.prune import PruneConfig, prune

    d = json.loads(open(int8_table).read())
    d["device"]["cpu"] = "Some Other CPU 9000"
    other = tmp_path / "other-int8.json"
    other.write_text(json.dumps(d))
    base_ms = next(iter(d["models"].values()))["full_ms"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = prune(load_model("tiny_resnet_synthetic"),
                  PruneConfig(strategy="uniform", budget=f"{0.8 * base_ms:.4f}ms", precision="int8", backend="ort-cpu",
                              input_size=SIZE, closed_loop_rounds=0, progress=False), table=str(other)).report
    assert r.latency.measured_ms is None and r.met_budget is None and r.verdict.startswith("not measured")
    assert any("cannot measure" in w and "another device" in w for w in r.warnings)


def test_prune_int8_spends_the_int8_table_and_measures_the_quantized_result(int8_table):
    """--precision int8 --budget 0.8x: the budget is a share of the fp32 unpruned model, turned into
    a share of the int8 one by one side-by-side measurement for the search; the closed loop measures
    the quantized pruned model beside the quantized unpruned one and the fp32 unpruned one, and
    judges the budget against the fp32 model as measured in those passes."""
    from hwprune.prune import PruneConfig, prune

    res = prune(load_model("tiny_resnet_synthetic"),
                PruneConfig(strategy="uniform", budget="0.8x", precision="int8", backend="ort-cpu", input_size=SIZE,
                            closed_loop_rounds=1, progress=False), table=int8_table)
    r = res.report.to_dict()
    q = r["config"]["int8"]
    assert q["budget"] == "0.8x" and q["budget_ref"] == "fp32" and q["fp32_unpruned_ms"] > 0
    assert q["ratio"] == pytest.approx(q["fp32_unpruned_ms"] / q["int8_unpruned_ms"])
    assert float(q["effective_budget"].rstrip("x")) == pytest.approx(min(0.8 * q["ratio"], 1.0), rel=1e-4)
    lat = r["latency"]
    assert lat["precision"] == "int8" and lat["measured_ms"] > 0 and lat["baseline_ms"] > 0
    # judged against the fp32 unpruned model timed in the same passes as the result, not through the ratio read once
    for step in r["closed_loop"]:
        assert step["fp32_baseline_ms"] > 0 and step["goal_ms"] == pytest.approx(0.8 * step["fp32_baseline_ms"])
    assert lat["budget_ms"] == pytest.approx(0.8 * lat["fp32_baseline_ms"])
    assert lat["speedup_over_fp32"] == pytest.approx(lat["fp32_baseline_ms"] / lat["measured_ms"])
    assert lat["met_budget"] == (lat["measured_ms"] <= lat["budget_ms"] * 1.03)
    share = max(0.7, math.ceil((_floor(int8_table) + 1) / 2 * 100) / 100)  # above the int8 grid's floor
    res2 = prune(load_model("tiny_resnet_synthetic"),
                 PruneConfig(strategy="uniform", budget=f"{share}x", precision="int8", budget_ref="int8", backend=None,
                             input_size=SIZE, progress=False), table=int8_table)
    r2 = res2.report.to_dict()
    assert r2["config"]["int8"]["effective_budget"] == f"{share}x" and "fp32_baseline_ms" not in r2["latency"]
    assert r2["latency"]["predicted_ms"] <= share * r2["latency"]["baseline_predicted_ms"] * 1.001


def test_bench_times_fp32_and_int8_side_by_side():
    from hwprune.bench import BenchConfig, bench, format_bench
    from hwprune.models import LoadedModel
    from hwprune.prune import PruneConfig, prune

    base = load_model("tiny_resnet_synthetic")
    res = prune(base, PruneConfig(strategy="uniform", ratio=0.5, input_size=SIZE, progress=False))
    pruned = LoadedModel(res.model, base.model_id, SIZE, plan=res.plan)
    out = bench({"base": base, "pruned": pruned},
                BenchConfig(int8=True, repeats=4, warmup=1, min_repeat_ms=2.0), progress=False)
    assert [r["model"] for r in out["rows"]] == ["base (fp32)", "base (int8)", "pruned (fp32)", "pruned (int8)"]
    sp = out["int8"]["speedup"]["1"]
    assert sp["base (fp32)"] == 1.0 and all(v > 0 for v in sp.values())
    assert sp["pruned (fp32)"] > 1.05 and sp["pruned (int8)"] > sp["base (int8)"]  # half the channels, both precisions
    assert out["int8"]["scheme"]["format"] == "QDQ" and "pruned (int8)" in format_bench(out)
    with pytest.raises(ConfigError, match="int8 runs on --backend ort-cpu"):
        BenchConfig(int8=True, backend="torch-cpu")


def test_int8_profile_samples_widths_on_the_int8_grid(tmp_path):
    """No --align: an int8 table is sampled on the int8 kernels' grid (16 channels on x86, where
    MLAS's int8 kernels work on 16 channels at a time, whatever the fp32 NCHWc block), every width
    a unit was timed at is on it, and extending the table keeps it."""
    from hwprune.latency import LatencyTable, ProfileConfig, profile
    from hwprune.latency.profile import preferred_align
    from hwprune_deploy.ort import nchwc_block

    out = str(tmp_path / "q8.json")
    profile(load_model("tiny_resnet", kwargs={"width": 16, "depth": 1}),
            ProfileConfig.quick(precision="int8", input_size=16, out=out), progress=False)
    t = LatencyTable.load(out)
    grid = t.protocol["align"]
    assert grid == preferred_align("ort-cpu", t.device, "int8")
    assert grid == 16  # 16 even where fp32's block is 8 (AVX2)
    if nchwc_block():
        assert preferred_align("ort-cpu", t.device) == nchwc_block()
    # a bundle for a device not known here samples int8 on 16 too (fp32 on 8, which suits AVX2 and GPUs)
    from hwprune.latency.bundle import write_bundle

    small = load_model("tiny_resnet", kwargs={"width": 16, "depth": 1})
    assert write_bundle(small, ProfileConfig.quick(precision="int8", input_size=16), str(tmp_path / "q.zip"),
                        points_per_axis=2)["align"] == 16
    assert write_bundle(small, ProfileConfig.quick(input_size=16), str(tmp_path / "f.zip"),
                        points_per_axis=2)["align"] == 8
    widths = {w for fam in t.families.values() for w in list(fam.cins)[1:] + list(fam.couts)[:-1]}
    assert widths and all(w % grid == 0 for w in widths), widths  # full widths (3 in, 10 classes out) aside
    profile(load_model("tiny_resnet", kwargs={"width": 16, "depth": 2}),
            ProfileConfig.quick(precision="int8", input_size=16, out=out), progress=False)
    assert LatencyTable.load(out).protocol["align"] == grid
