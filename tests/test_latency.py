"""Latency tables: real ORT measurements of a tiny model, file round trip, errors, cost model."""
import json
import os
import warnings

import pytest
import torch

from hwprune.errors import TableError
from hwprune.graph import ChannelGraph
from hwprune.latency import LatencyTable, ProfileConfig, TableMismatchWarning, profile, validate
from hwprune.latency.sampling import bilinear, interp1, probe_disagrees, spread_points
from hwprune.latency.table import Family
from hwprune.latency.units import UnitFamily, extract_units
from hwprune.models import load_model

COMMITTED = os.path.join(os.path.dirname(__file__), "..", "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")

TINY = {"width": 8, "depth": 1}


def tiny():
    return load_model("tiny_resnet", kwargs=TINY)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("lat") / "t.json")
    # align 8 explicitly (here and for validate, whose default is the device grid): at the device's default
    # (16 on AVX-512) this tiny net has 2 prunable groups and a random variant can snap back to full width
    return profile(tiny(), ProfileConfig.quick(input_size=16, out=out, calib_variants=2, align=8), progress=False)


def graph_of(loaded, size=16):
    return ChannelGraph(loaded.model, torch.randn(1, 3, size, size))


def test_interpolation_exact_on_grid_points():
    fam = Family(UnitFamily("conv", 8, 8), [8, 24, 64], [16, 32], {}, {}, {})
    vals = {}
    for i, a in enumerate(fam.cins):
        for j, b in enumerate(fam.couts):
            vals[(a, b)] = 0.1 + i * 0.7 + j * 0.3 + (0.05 if (i, j) == (1, 1) else 0.0)  # a staircase bump
            fam.points[f"{a},{b}"] = vals[(a, b)]
    for (a, b), v in vals.items():
        assert fam.predict(a, b) == pytest.approx(v, abs=1e-12)
    mid = fam.predict(16, 24)  # between grid points: inside the four neighbours' range
    corners = [vals[(8, 16)], vals[(8, 32)], vals[(24, 16)], vals[(24, 32)]]
    assert min(corners) <= mid <= max(corners)
    assert interp1([8, 16], [1.0, 3.0], 12) == pytest.approx(2.0)
    assert bilinear([8], [8], lambda a, b: 5.0, 8, 8) == 5.0
    assert spread_points(range(8, 72, 8), 4) == [8, 16, 32, 64]  # log-spaced: dense where units are small
    assert spread_points(range(8, 520, 8), 5) == [8, 24, 64, 184, 512]


def test_axis_scans_reproduce_a_staircase_between_grid_points():
    """Conv latency ~ alpha + beta * A(cin) * B(cout) with staircases A, B: with the two far-edge
    scans in the table, interpolation between grid points is exact for that form; a plain
    bilinear chord over the same grid is not (it is what over-predicted pruned ResNet-18)."""
    def stair(c):  # output tiles of 16 above 32 channels, as ORT's NCHWc conv runs on AVX2
        return c if c <= 32 else 16 * -(-c // 16)

    def truth(a, b):
        return 0.02 + 1e-4 * stair(a) * stair(b) + 3e-5 * stair(a)

    widths = list(range(8, 136, 8))
    grid_in, grid_out = spread_points(widths, 4), spread_points(widths, 4)
    fam = Family(UnitFamily("conv", 28, 28), grid_in, grid_out, {}, {}, {})
    plain = Family(UnitFamily("conv", 28, 28), grid_in, grid_out, {}, {}, {})
    for a in grid_in:
        for b in grid_out:
            fam.points[f"{a},{b}"] = plain.points[f"{a},{b}"] = truth(a, b)
    for c in widths:  # the scans along the far edges
        fam.points[f"{c},{grid_out[-1]}"] = truth(c, grid_out[-1])
        fam.points[f"{grid_in[-1]},{c}"] = truth(grid_in[-1], c)
    fam.invalidate()
    for a in widths:
        for b in widths:
            assert fam.predict(a, b) == pytest.approx(truth(a, b), rel=1e-9), (a, b)
    assert max(abs(plain.predict(a, b) / truth(a, b) - 1) for a in widths for b in widths) > 0.05


def test_refinement_follows_bends_not_the_noise_of_microsecond_units():
    """A probe refines its axis when it is off the interpolation by more than the tolerance *and*
    by more than its own reading's standard error (1.28 IQR / sqrt(repeats)): a 30% step read with
    a tight spread refines; the same 3 us miss on a 6 us unit whose repeats spread by 9 us (an SE
    FC on a shared host) does not; a miss under the tolerance never does, however tight."""
    assert probe_disagrees(10.0, 13.0, iqr=0.5, repeats=12, tol=0.05) == pytest.approx(3 / 13)
    assert probe_disagrees(5.2, 8.06, iqr=9.11, repeats=12, tol=0.05) == 0.0  # 2.9 us < 3.4 us of noise
    assert probe_disagrees(5.2, 8.06, iqr=9.11, repeats=48, tol=0.05) > 0  # 4x the repeats: 1.7 us of noise
    assert probe_disagrees(10.0, 10.4, iqr=0.0, repeats=12, tol=0.05) == 0.0
    assert probe_disagrees(10.0, 11.0, iqr=0.0, repeats=12, tol=0.05) == pytest.approx(1 / 11)


def test_units_are_fused_and_keyed_by_shape():
    loaded = tiny()
    units = extract_units(graph_of(loaded))
    keys = {u.family.key for u in units}
    assert any(k.startswith("conv+add+relu") for k in keys), keys  # residual add fused into the conv unit
    assert any(k.startswith("conv+relu") for k in keys)
    assert any(u.family.kind == "linear" for u in units)
    assert all(u.gin or u.gout for u in units if u.family.kind == "conv" and u.cin > 3)


def test_same_and_valid_padding_become_unit_paddings_of_the_same_output_size():
    """Convs built with padding='same' / 'valid' (ConvMixer's depthwise convs) are units too: the
    unit's symmetric padding gives the conv's own output size (a 'same' string once broke int())."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding="valid"), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 16, 9, groups=16, padding="same", dilation=2),
                              torch.nn.Conv2d(16, 8, 5, padding="same"))
    x = torch.randn(1, 3, 24, 24)
    units = {u.layer: u.family for u in extract_units(ChannelGraph(net, x), fuse=False)}
    assert units["0"].padding == (0, 0) and units["2"].padding == (8, 8) and units["3"].padding == (2, 2)
    assert units["2"].kind == "dwconv"
    shapes = {}
    for name in ("0", "2", "3"):
        net.get_submodule(name).register_forward_hook(lambda m, i, o, n=name: shapes.update({n: o.shape[-2:]}))
    net(x)
    for name, fam in units.items():  # the family's own output-size formula agrees with the real conv
        oh = (fam.h + 2 * fam.padding[0] - fam.dilation[0] * (fam.kernel[0] - 1) - 1) // fam.stride[0] + 1
        assert oh == shapes[name][0], (name, oh, shapes[name])


def test_profile_table_round_trip_and_cost_model(table_path, tmp_path):
    t = LatencyTable.load(table_path)
    assert t.in_progress is None and t.backend == "ort-cpu" and t.device.get("threads") == 2
    rec = next(iter(t.models.values()))
    assert rec["profile_seconds"] > 0 and rec["full_ms"] > 0 and "calibration" in rec
    assert t.history and t.history[-1]["seconds"] > 0
    t.save(str(tmp_path / "copy.json"))
    assert LatencyTable.load(str(tmp_path / "copy.json")).to_dict() == t.to_dict()

    graph = graph_of(tiny())
    assert t.covers(graph)
    cm = t.cost_model(graph)
    assert cm.unit == "ms"
    full = cm.predict({})
    assert full == pytest.approx(cm.from_units(cm.units_sum({})))
    assert t.protocol["align"] == 8
    small = {g.name: g.candidate_widths(8, 8)[0] for g in graph.prunable}
    assert cm.units_sum(small) <= cm.units_sum({})  # fewer channels, fewer unit ms
    g0 = graph.prunable[0]
    assert cm.marginal({}, g0.name, 8) == pytest.approx(cm.predict({g0.name: 8}) - full)


def test_table_error_for_uncovered_model(table_path):
    t = LatencyTable.load(table_path)
    other = graph_of(load_model("tiny_resnet", kwargs={"width": 16, "depth": 1}))
    assert not t.covers(other)
    with pytest.raises(TableError, match="hwprune profile"):
        t.cost_model(other)
    # the same name and input, another build: the message shows what the table's was built with
    held = next(iter(t.models.values()))
    held["model_id"] = {**held.get("model_id", {}), "kwargs": {"width": 8}}
    with pytest.raises(TableError, match=r"tiny_resnet\(width=8\) @ 1x3x16x16"):
        t.cost_model(other)


def test_second_model_extends_table_and_reuses_units(table_path, tmp_path):
    import shutil

    path = str(tmp_path / "ext.json")
    shutil.copy(table_path, path)
    before = LatencyTable.load(path)
    n_before = {k: dict(f.measured_at) for k, f in before.families.items()}
    profile(load_model("tiny_resnet", kwargs={"width": 8, "depth": 2}), ProfileConfig.quick(input_size=16, out=path),
            progress=False)
    after = LatencyTable.load(path)
    assert len(after.models) == 2
    for k, stamps in n_before.items():  # shared units were not measured again
        for p, ts in stamps.items():
            assert after.families[k].measured_at[p] == ts


def test_extending_a_table_of_an_older_unit_context_warns(table_path, tmp_path):
    """Units are timed in context (input, residual and output context convs); a table profiled
    before the output context existed is extended with a warning naming both, not silently."""
    doc = json.loads(open(table_path).read())
    doc["protocol"]["unit"]["context"] = "input from a 1x1 depthwise conv (cin >= 8)"
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    with pytest.warns(UserWarning, match="older unit context.*--out"):
        profile(load_model("tiny_resnet", kwargs={"width": 8, "depth": 2}),
                ProfileConfig.quick(input_size=16, out=str(path)), progress=False)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "version", "not-a-table", "missing-key"])
def test_corrupted_tables_raise_table_error(table_path, tmp_path, damage):
    text = open(table_path).read()
    p = tmp_path / "bad.json"
    if damage == "truncated":
        p.write_text(text[: len(text) // 2])
    elif damage == "garbage":
        p.write_bytes(b"\x00\xff not json")
    else:
        d = json.loads(text)
        if damage == "version":
            d["version"] = 99
        elif damage == "not-a-table":
            d = {"format": "hwprune-plan"}
        else:
            del d["families"]
        p.write_text(json.dumps(d))
    with pytest.raises(TableError) as e:
        LatencyTable.load(str(p))
    assert str(p) in str(e.value) and "hwprune profile" in str(e.value)
    with pytest.raises(TableError, match="does not exist"):
        LatencyTable.load(str(tmp_path / "nope.json"))


def test_fingerprint_mismatch_warns_loudly(table_path, tmp_path):
    d = json.loads(open(table_path).read())
    d["device"]["cpu"] = "Imaginary CPU 9000"
    d["device"]["onnxruntime"] = "0.0.1"
    p = tmp_path / "other.json"
    p.write_text(json.dumps(d))
    with pytest.warns(TableMismatchWarning, match="ANOTHER DEVICE.*Imaginary CPU 9000"):
        LatencyTable.load(str(p))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LatencyTable.load(table_path)  # same machine: silent


def _another_device(d: dict, device: dict, path, match: str):
    """Table dict ``d`` saved at ``path`` with fingerprint ``device``: loaded (warned with ``match``)
    and the request a `hwprune run` on this machine would make for it."""
    from hwprune.service import TableRequest

    path.write_text(json.dumps(dict(d, device=device)))
    with pytest.warns(TableMismatchWarning, match=match):
        t = LatencyTable.load(str(path))
    return t, TableRequest(backend=t.backend, threads=int(device["threads"]), precision=t.precision, batch=t.batch,
                           align=int(t.protocol["align"]))


def test_same_cpu_name_another_microarchitecture_is_another_device(table_path, tmp_path):
    """Cloud VMs name the CPU "AMD EPYC" whatever its generation: a table records the
    microarchitecture (cpu_id from /proc/cpuinfo) and the ISA extensions, and a table from another
    generation under the same name is another device (warned; not reused by `hwprune run`); a table
    from before cpu_id was recorded is judged by the name as before."""
    from hwprune_deploy.ort import cpu_id, cpu_isa

    d = json.loads(open(table_path).read())
    here = d["device"]
    if not here.get("cpu_id"):
        pytest.skip("no /proc/cpuinfo microarchitecture on this machine")
    assert here["cpu_id"] == cpu_id() and here["isa"] == cpu_isa()
    assert cpu_id({"cpu family": "25", "model": "1", "stepping": "1"}) == "family 25 model 1 stepping 1"
    assert cpu_isa({"flags": "fpu avx2 avx512f avx512_vnni sse4_2"}) == ["avx2", "avx512_vnni", "avx512f"]
    t, req = _another_device(d, {**here, "cpu_id": "family 99 model 1 stepping 0"}, tmp_path / "other-gen.json",
                             "cpu_id: table 'family 99")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert req.why_not(t) == "measured on another device"
        assert req.why_not(LatencyTable.load(table_path)) is None
    old = dict(d, device={k: v for k, v in here.items() if k not in ("cpu_id", "isa")})
    q = tmp_path / "old.json"
    q.write_text(json.dumps(old))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LatencyTable.load(str(q))  # recorded before cpu_id: the name decides, as before


def test_a_table_from_before_cpu_id_is_told_apart_by_its_nchwc_block(table_path, tmp_path):
    """Tables recorded before cpu_id (the committed ones) still record ORT's NCHWc block, 16 on an
    AVX-512 host and 8 on an AVX2 one: the layout the convolutions run in, and the channel grid the
    search spends the table on. An "AMD EPYC" table with another block is another device (warned,
    not reused by `hwprune run`, measured by no several-device search), whatever the name says."""
    from hwprune.service import reachable
    from hwprune_deploy.ort import nchwc_block

    d = json.loads(open(table_path).read())
    here = {k: v for k, v in d["device"].items() if k not in ("cpu_id", "isa")}
    assert here["nchwc_block"] == nchwc_block()
    t, req = _another_device(d, {**here, "nchwc_block": 24 - here["nchwc_block"]}, tmp_path / "other-block.json",
                             f"nchwc_block: table {24 - here['nchwc_block']} vs here {here['nchwc_block']}")  # 8 <-> 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert req.why_not(t) == "measured on another device"
        ok, why = reachable(t)
    assert not ok and "nchwc_block" in why
    same = tmp_path / "same-block.json"
    same.write_text(json.dumps(dict(d, device=here)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reachable(LatencyTable.load(str(same))) == (True, None)


def test_atomic_save_leaves_no_partial_file(table_path, tmp_path):
    t = LatencyTable.load(table_path)
    target = tmp_path / "atomic.json"
    t.save(str(target))
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp-")]
    assert LatencyTable.load(str(target)).to_dict() == t.to_dict()


def test_validate_reports_errors(table_path):
    from hwprune_deploy.timing import Protocol

    r = validate(tiny(), table_path, samples=3, seed=1, align=8, progress=False, passes=1,
                 protocol=Protocol(warmup=1, repeats=3, min_repeat_ms=0.5))
    d = r.to_dict()
    assert d["samples"] == 3 and len(d["variants"]) == 3
    for v in d["variants"]:
        assert v["measured_ms"] > 0 and v["predicted_ms"] > 0
        assert v["error_ms"] == pytest.approx((v["predicted_ms"] - v["measured_ms"]) / v["measured_ms"])
        # primary metric: ratio to the unpruned model (predicted by the table, measured side by side)
        assert v["predicted_ratio"] == pytest.approx(v["predicted_ms"] / d["predicted_full_ms"])
        assert v["measured_ratio"] == pytest.approx(v["measured_ms"] / d["reference_ms"])
        assert v["error"] == pytest.approx((v["predicted_ratio"] - v["measured_ratio"]) / v["measured_ratio"])
        assert v["predicted_ratio"] < 1.0  # pruned variants are predicted faster than the full model
    assert 0 <= d["within_5pct"] <= d["within_10pct"] <= 1
    assert 0 <= d["absolute_ms"]["within_5pct"] <= d["absolute_ms"]["within_10pct"] <= 1
    # recalibrated: the calibration variants were timed alongside and the residual curve re-fitted
    rc = d["recalibrated"]
    rec = next(iter(LatencyTable.load(table_path).models.values()))
    stored = rec["calibration"]["variants"]
    assert len(rc["calibration"]["variants"]) == len(stored) == 2  # the profiler's own calibration variants
    assert all(c["measured_ms"] > 0 and 0 < c["units_ms"] for c in rc["calibration"]["variants"].values())
    # one knot per distinct units sum: two variants can sum alike when the table's monotone envelope
    # flattens the widths they differ in (a CI run), and fewer than three knots fit no curve
    sums = sorted([rec["units_full_ms"]] + [c["units_ms"] for c in rc["calibration"]["variants"].values()])
    distinct = 1 + sum(b - a > 1e-9 for a, b in zip(sums, sums[1:]))
    knots = (rc["calibration"].get("correction") or {}).get("units_ms", [])
    assert len(knots) == distinct if distinct == 3 else len(knots) in (0, distinct)
    for v in d["variants"]:
        assert v["error_recalibrated"] == pytest.approx(
            (v["predicted_ratio_recalibrated"] - v["measured_ratio"]) / v["measured_ratio"])
        assert 0 < v["predicted_ratio_recalibrated"] < 1.0
    assert 0 <= rc["within_5pct"] <= rc["within_10pct"] <= 1
    # one pass: no halves to compare, and no repeatability figure made up
    assert all(v["split_half"] is None for v in d["variants"]) and d["split_half"] is None


def test_validate_reports_its_own_stopwatchs_repeatability(table_path):
    """With >= 4 passes, every variant's measured ratio is also estimated from its even and its
    odd passes apart, and the run reports how far the halves disagree: a figure that says whether
    the +-5% bar can be judged on this machine."""
    import numpy as np
    from hwprune_deploy.timing import Protocol

    d = validate(tiny(), table_path, samples=3, seed=2, align=8, progress=False, passes=4, recalibrate=False,
                 protocol=Protocol(warmup=1, repeats=5, min_repeat_ms=2.0)).to_dict()  # a burst of the other worker
    # once split a 3-repeat, 0.5 ms-a-repeat estimate of a 0.3 ms variant by 110%
    halves = [v["split_half"] for v in d["variants"]]
    assert all(h is not None and abs(h) < 1 for h in halves), halves  # two estimates of one ratio
    rep = d["split_half"]
    assert rep["variants"] == 3
    assert rep["rms"] == pytest.approx(float(np.sqrt(np.mean(np.square(halves)))))
    assert rep["within_5pct"] == pytest.approx(float(np.mean(np.abs(halves) <= 0.05)))
    assert rep["max_abs"] == pytest.approx(max(abs(h) for h in halves))


def test_calibration_curve_is_monotone_and_never_negative():
    """The residual curve reproduces the calibration measurements, never predicts a bigger model
    faster (searches read marginal costs off it) and stays positive below the lightest variant."""
    from hwprune.latency.profile import fit_calibration
    from hwprune.latency.table import TableCostModel

    sums = {"full": 10.0, "v1": 2.0, "v2": 2.05, "v3": 2.1, "v4": 6.0, "v5": 8.0}
    measured = {"full": 10.7, "v1": 1.5, "v2": 1.0, "v3": 1.2, "v4": 6.1, "v5": 8.6}
    cal = fit_calibration(sums, measured)
    cm = TableCostModel([], {"calibration": cal})
    assert cm.from_units(10.0) == pytest.approx(10.7) and cm.from_units(6.0) == pytest.approx(6.1)
    ys = [cm.from_units(0.01 + 0.06 * i) for i in range(200)]
    assert all(b > a for a, b in zip(ys, ys[1:]))  # strictly: a smaller model is always faster
    assert min(ys) > 0
    # a launch-bound model (GPU): latency barely moves with the units, the line is rejected,
    # the curve is kept and still reproduces the measurements
    flat = fit_calibration({"full": 1.6, "v1": 1.3, "v2": 1.4, "v3": 1.5},
                           {"full": 1.46, "v1": 1.44, "v2": 1.45, "v3": 1.455})
    assert "line rejected" in flat["method"] and flat["a"] == 1.0
    assert TableCostModel([], {"calibration": flat}).from_units(1.4) == pytest.approx(1.45)


def test_remainder_line_never_predicts_negative():
    """A quick table (no calibration variants) keeps ``units + remainder``; a negative remainder (the
    units over-predict the full model) shrinks with the model instead of pushing small ones below 0
    (a clean-clone CI run read a -0.37 ms floor); the full model and marginal costs still agree."""
    from hwprune.latency.calibration import fit_calibration
    from hwprune.latency.table import TableCostModel

    cal = fit_calibration({"full": 4.0}, {"full": 2.5})
    assert cal["method"] == "remainder" and cal["b"] == pytest.approx(-1.5)
    cm = TableCostModel([], {"calibration": cal, "units_full_ms": 4.0})
    assert cm.from_units(4.0) == pytest.approx(2.5) and cm.from_units(6.0) == pytest.approx(4.5)
    ys = [cm.from_units(0.01 + 0.02 * i) for i in range(200)]
    assert min(ys) > 0 and all(b > a for a, b in zip(ys, ys[1:]))
    assert cm.from_units(1.0) == pytest.approx(2.5 / 4.0)  # proportional below full width
    over = TableCostModel([], {"calibration": fit_calibration({"full": 4.0}, {"full": 4.6}), "units_full_ms": 4.0})
    assert over.from_units(1.0) == pytest.approx(1.6)  # an overhead stays constant


def test_preferred_align_follows_the_cpu_layout_block():
    from hwprune.latency.profile import preferred_align
    from hwprune_deploy.ort import cpu_fingerprint, nchwc_block

    assert preferred_align("ort-cpu", {"nchwc_block": 16}) == 16
    assert preferred_align("ort-cpu", {"nchwc_block": 8}) == 8
    assert preferred_align("ort-cpu", {}) == 8  # unknown CPU (or an older table): the common grid
    assert preferred_align("torch-cuda", {"nchwc_block": 16}) == 8  # a CPU layout says nothing about a GPU
    assert cpu_fingerprint()["nchwc_block"] == nchwc_block() in (0, 8, 16)
    # int8: MLAS's quantized kernels work on 16 channels (AVX2 as well as AVX-512)
    assert preferred_align("ort-cpu", {"nchwc_block": 8}, "int8") == 16
    assert preferred_align("ort-cpu", {"nchwc_block": 16}, "int8") == 16
    assert preferred_align("ort-cpu", {}, "int8") == 16  # a device not known here (a bundle's): x86's int8 grid
    assert preferred_align("ort-cpu", {"cpu": "Neoverse-N1"}, "int8") == 8  # a known CPU without a block: not x86
    assert preferred_align("torch-cuda", {"nchwc_block": 8}, "int8") == 8


def test_prune_cli_hints_at_the_cpu_grid():
    from hwprune.cli.common import grid_hint
    from hwprune_deploy.ort import nchwc_block

    block = nchwc_block()
    assert grid_hint("torch-cuda", 8) is None  # a CPU layout says nothing about a GPU
    assert grid_hint("ort-cpu", 2 * max(block, 8)) is None  # on the grid: nothing to say
    if block == 16:
        assert "--align 16" in grid_hint("ort-cpu", 8)
    if block:  # x86: int8 widths want multiples of 16 whatever the fp32 block
        assert "int8 kernels" in grid_hint("ort-cpu", 8, "int8") and "--align 16" in grid_hint("ort-cpu", 8, "int8")
        assert grid_hint("ort-cpu", 16, "int8") is None and grid_hint("ort-cpu", 32, "int8") is None


def _table_as_if(tmp_path, name: str, block, align: int, precision: str = "fp32") -> str:
    """The committed ORT CPU table (resnet18's record alone) rewritten as if profiled on a CPU whose
    NCHWc block is ``block`` (None: a fingerprint without it, as older tables) at grid ``align``."""
    import json

    doc = json.loads(open(COMMITTED).read())
    key = next(k for k, r in doc["models"].items() if r["spec"] == "resnet18")
    doc["models"] = {key: doc["models"][key]}
    doc["device"] = {k: v for k, v in doc["device"].items() if k != "nchwc_block"}
    if block is not None:
        doc["device"]["nchwc_block"] = block
    doc["protocol"]["align"], doc["precision"] = align, precision
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def test_a_search_defaults_to_the_grid_of_the_tables_device(tmp_path):
    """Without --align a search spends a table on the grid of the device the table was profiled on
    (its fingerprint), not this machine's: a table from an AVX-512 host searches on 16 here, an
    AVX2 one on 8 (16 in int8), and never on a grid finer than the table was profiled on; several
    tables: a grid every device rewards."""
    from hwprune.latency.profile import search_align, table_align

    avx512 = _table_as_if(tmp_path, "avx512.json", 16, 16)
    avx2 = _table_as_if(tmp_path, "avx2.json", 8, 8)
    coarse = _table_as_if(tmp_path, "coarse.json", 8, 32)  # profiled on 32: its 8-grid widths are interpolated
    old = _table_as_if(tmp_path, "old.json", None, 8)
    assert table_align(avx512) == 16 and table_align(avx2) == 8 and table_align(coarse) == 32
    assert table_align(old) == 8  # a fingerprint without the block: the common grid
    assert table_align(_table_as_if(tmp_path, "avx2-int8.json", 8, 8, "int8")) == 16
    assert table_align(avx2, "int8") == 16
    assert search_align("ort-cpu", "fp32", [avx512, avx2]) == 16
    assert search_align(None, "fp32", []) == 8
    gpu = os.path.join(os.path.dirname(COMMITTED), "nvidia-h100-80gb-hbm3-torch-cuda-fp16-b32.json")
    assert table_align(gpu) == 8


def test_prune_spends_a_table_from_another_cpu_on_its_grid(tmp_path):
    """`hwprune prune --table T` with T from an AVX-512 host: widths on 16 whatever this CPU's block,
    a given --align off that grid gets the hint naming the table's device, and the library's
    PruneConfig and RunConfig without align decide the same grid."""
    import json

    from hwprune.cli.main import main
    from hwprune.models import load_model
    from hwprune.prune import PruneConfig, prune

    avx512 = _table_as_if(tmp_path, "avx512.json", 16, 16)
    out = tmp_path / "p"
    code = main(["prune", "--model", "resnet18", "--strategy", "uniform", "--budget", "0.6x", "--table", avx512,
                 "--backend", "none", "--input-size", "224", "--out", str(out), "--quiet"])
    assert code == 0
    kept = json.loads((out / "plan.json").read_text())["kept"]  # group -> the channels it keeps
    assert kept and all(len(ch) % 16 == 0 for ch in kept.values()), {g: len(ch) for g, ch in kept.items()}
    assert json.loads((out / "report.json").read_text())["config"]["align"] == 16
    from hwprune.cli.common import grid_hint

    hint = grid_hint("ort-cpu", 8, "fp32", [avx512])
    assert hint and "the table's device" in hint and "--align 16" in hint
    assert grid_hint("ort-cpu", 16, "fp32", [avx512]) is None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = prune(load_model("resnet18"), PruneConfig(strategy="uniform", budget="0.6x", progress=False), table=avx512)
    assert res.report.config["align"] == 16
    assert all(w["after"] % 16 == 0 for w in res.report.widths.values())
    from hwprune import pipeline  # hwprune run's library config decides the same way
    from hwprune.latency.profile import preferred_align

    assert pipeline.run_align(pipeline.RunConfig(table=avx512)) == 16
    assert pipeline.run_align(pipeline.RunConfig()) == preferred_align("ort-cpu", None)
    assert pipeline.run_align(pipeline.RunConfig(align=32, table=avx512)) == 32


def test_profile_defaults_to_the_devices_grid(tmp_path):
    """No --align: the table is sampled on the device's grid (ORT's NCHWc block on this CPU), and
    extending that table keeps its grid."""
    from hwprune.latency.profile import preferred_align

    out = str(tmp_path / "d.json")
    profile(tiny(), ProfileConfig.quick(input_size=16, out=out), progress=False)
    t = LatencyTable.load(out)
    assert t.protocol["align"] == preferred_align("ort-cpu", t.device) >= 8
    profile(load_model("tiny_resnet", kwargs={"width": 8, "depth": 2}), ProfileConfig.quick(input_size=16, out=out),
            progress=False)
    assert LatencyTable.load(out).protocol["align"] == t.protocol["align"]


def test_validate_draws_variants_on_the_tables_grid(table_path):
    from hwprune_deploy.timing import Protocol

    t = LatencyTable.load(table_path)
    graph = graph_of(tiny())
    full = {g.name: g.width for g in graph.prunable}
    d = validate(tiny(), table_path, samples=2, seed=3, progress=False, passes=1, recalibrate=False,
                 protocol=Protocol(warmup=1, repeats=2, min_repeat_ms=0.2)).to_dict()
    assert d["recalibrated"] is None and "error_recalibrated" not in d["variants"][0]
    from hwprune.latency.profile import table_align

    align = d["align"]
    assert align == table_align(t) and align % t.protocol["align"] == 0  # the grid a search spends it on
    for v in d["variants"]:
        assert all(w % align == 0 or w == full[k] for k, w in v["widths"].items())


def test_validate_shapes_times_structured_variants_apart(table_path):
    """--shapes: the early half cut, the late half cut and all cut, timed with the random variants
    but reported apart, each with the table's and the units' ratio."""
    from hwprune_deploy.timing import Protocol

    d = validate(tiny(), table_path, samples=2, seed=3, align=8, progress=False, passes=1, recalibrate=False, shapes=True,
                 protocol=Protocol(warmup=1, repeats=2, min_repeat_ms=0.2)).to_dict()
    assert d["samples"] == 2 and len(d["variants"]) == 2  # the figures stay the random variants'
    shapes = {v["name"]: v for v in d["shapes"]}
    assert list(shapes) == ["early x0.5", "late x0.5", "all x0.5", "early x0.25", "late x0.25", "all x0.25"]
    early, late = shapes["early x0.5"]["widths"], shapes["late x0.5"]["widths"]
    assert early and late and not set(early) & set(late) and set(early) | set(late) == set(shapes["all x0.5"]["widths"])
    for v in d["shapes"]:
        assert v["measured_ms"] > 0 and v["measured_ratio"] == pytest.approx(v["measured_ms"] / d["reference_ms"])
        assert v["error"] == pytest.approx((v["predicted_ratio"] - v["measured_ratio"]) / v["measured_ratio"])
        # never priced dearer than the unpruned model; a half cut of this tiny net's 8-16-wide groups
        # can snap back to their full width on a coarse grid and leave the sum as it was (seen in CI
        # on 2026-12-03: a ratio of exactly 1.0)
        assert 0 < v["units_ratio"] <= 1 and 0 < v["predicted_ratio"] <= 1
    assert shapes["all x0.25"]["units_ratio"] < 1 and shapes["all x0.25"]["predicted_ratio"] < 1
    for cut in ("early", "late", "all"):  # a deeper cut is never priced dearer (this net's early groups are 8-16 wide:
        # both shares snap to the 8-channel floor there)
        assert shapes[f"{cut} x0.25"]["predicted_ratio"] <= shapes[f"{cut} x0.5"]["predicted_ratio"]
        assert shapes[f"{cut} x0.25"]["units_ratio"] <= shapes[f"{cut} x0.5"]["units_ratio"]
    assert shapes["all x0.5"]["units_ratio"] <= shapes["late x0.5"]["units_ratio"]
    # the cuts themselves are strictly deeper (prices may tie: a quick table's monotone envelope flattens
    # its cheapest widths, as a clean-clone CI run read all x0.25 and all x0.5 at 0.943 both)
    deeper = shapes["all x0.25"]["widths"]
    assert all(w <= shapes["all x0.5"]["widths"][k] for k, w in deeper.items())
    assert any(w < shapes["all x0.5"]["widths"][k] for k, w in deeper.items())


def test_shape_variants_split_the_network_where_its_layers_are_defined():
    from hwprune.latency.validate import shape_variants

    loaded = load_model("resnet18")
    graph = ChannelGraph(loaded.model, torch.randn(1, 3, 64, 64))
    v = shape_variants(loaded.model, graph, 16, 8)
    full = {g.name: g.width for g in graph.prunable}
    early, late = v["early x0.5"], v["late x0.5"]
    assert any(k.startswith("layer1") for k in early) and not any(k.startswith("layer4") for k in early)
    assert any(k.startswith("layer4") for k in late) and not any(k.startswith("layer1") for k in late)
    assert abs(len(early) - len(late)) <= 1 and set(early) | set(late) == set(full)
    assert all(w == max(8, full[k] // 4 // 16 * 16) or w % 16 == 0 for k, w in v["all x0.25"].items())
    assert all(w < full[k] for k, w in v["all x0.5"].items())
    with pytest.raises(Exception, match="keep share"):
        shape_variants(loaded.model, graph, 16, 8, cuts=(1.5,))


def test_calibration_variants_bracket_the_light_end_of_validation():
    """The residual curve must interpolate, not extrapolate, at the lightest variants a search or
    `validate` visits: the lightest calibration variant is lighter than every one of 30
    validation draws, and the light end is sampled more densely than the heavy end."""
    import numpy as np

    from hwprune.latency.measure import calibration_widths, random_widths

    graph = ChannelGraph(load_model("resnet18").model, torch.randn(1, 3, 64, 64))
    full = {g.name: g.width for g in graph.prunable}

    def keep(w):  # mean kept fraction over the prunable groups
        return float(np.mean([w.get(k, v) / v for k, v in full.items()]))

    rng = np.random.default_rng(0)
    val = [keep(random_widths(graph.groups, rng, 16, 8)) for _ in range(30)]
    cal = [keep(w) for w in calibration_widths(graph.groups, 20, 10_000, 16, 8)]
    assert min(cal) < min(val)
    assert max(cal) > np.percentile(val, 75)
    mid = (min(cal) + max(cal)) / 2
    assert sum(c < mid for c in cal) > sum(c >= mid for c in cal)
    assert calibration_widths(graph.groups, 20, 10_000, 16, 8) == calibration_widths(graph.groups, 20, 10_000, 16, 8)


def test_config_validation():
    from hwprune.errors import ConfigError

    with pytest.raises(ConfigError, match="ort-cpux"):
        ProfileConfig(backend="ort-cpux")
    with pytest.raises(ConfigError, match="threads 0"):
        ProfileConfig(threads=0)
    with pytest.raises(ConfigError, match="precision"):
        ProfileConfig(precision="fp8")
    with pytest.raises(ConfigError, match="ort-cpu only"):
        ProfileConfig(backend="torch-cpu", spinning=True)


def test_ort_spinning_table_is_named_recorded_and_checked_the_same_way(tmp_path, monkeypatch):
    """--ort-spinning: units and whole models timed with ORT's workers spinning in a run; the table
    says so (fingerprint, default name), and validate and the closed loop time the same way."""
    from hwprune.prune import PruneConfig, measure_as
    from hwprune_deploy.timing import Protocol

    monkeypatch.chdir(tmp_path)
    path = profile(tiny(), ProfileConfig.quick(input_size=16, calib_variants=2, align=8, spinning=True),
                   progress=False)
    assert os.path.basename(path).endswith("-ort-cpu-spin-fp32-b1.json") and path.startswith("latency_tables")
    t = LatencyTable.load(path)
    assert t.device["spinning"] is True and next(iter(t.models.values()))["full_ms"] > 0
    r = validate(tiny(), path, samples=2, seed=1, progress=False, passes=1,
                 protocol=Protocol(warmup=1, repeats=3, min_repeat_ms=0.5))
    assert r.spinning is True and r.to_dict()["spinning"] is True
    assert all(v["measured_ms"] > 0 for v in r.variants)
    assert measure_as(PruneConfig(backend="ort-cpu"), t) == ("fp32", True)
    assert measure_as(PruneConfig(backend="torch-cpu"), t) == ("fp32", False)  # another backend: its own default
    # one table holds one protocol: extending it with blocked workers is refused, naming the flag
    with pytest.raises(TableError, match="--ort-spinning"):
        profile(tiny(), ProfileConfig.quick(input_size=16, out=path, align=8), progress=False)


def test_spinning_sessions_spin_in_runs_and_stop_between_them():
    """The session options behind each setting, read back from real ORT sessions."""
    from hwprune.latency.micro import unit_onnx
    from hwprune_deploy.ort import make_session

    data = unit_onnx(UnitFamily("conv", 8, 8, act="relu"), 8, 8)

    def entries(**kw):
        so = make_session(data, **kw).get_session_options()

        def get(k):
            try:
                return so.get_session_config_entry(k)
            except Exception:  # ORT raises for a key that was never set
                return None

        return {k: get(k) for k in ("session.intra_op.allow_spinning", "session.force_spinning_stop")}

    assert entries(spinning=False) == {"session.intra_op.allow_spinning": "0", "session.force_spinning_stop": None}
    assert entries(spinning=True, spin_between_runs=False) == {"session.intra_op.allow_spinning": "1",
                                                               "session.force_spinning_stop": "1"}
    assert entries(spinning=None) == {"session.intra_op.allow_spinning": None, "session.force_spinning_stop": None}


def test_ort_spinning_bundle_is_measured_spinning_and_read_back_so(tmp_path, monkeypatch):
    """A bundle written with --ort-spinning tells the device-side runner to time spinning; the table
    read back records it, and a blocked table refuses the result."""
    from hwprune.latency.bundle import read_bundle_result, write_bundle
    from hwprune_deploy.runner import measure_bundle
    from hwprune_deploy.timing import Protocol

    monkeypatch.chdir(tmp_path)
    q = Protocol(warmup=1, repeats=3, min_repeat_ms=0.2, statistic="p10")
    man = write_bundle(tiny(), ProfileConfig.quick(input_size=16, calib_variants=2, spinning=True), "b.zip",
                       points_per_axis=2)
    assert man["spinning"] is True
    res = measure_bundle("b.zip", progress=False, unit_protocol=q, model_protocol=q)
    assert res["fingerprint"]["spinning"] is True
    with open("r.json", "w") as f:
        json.dump(res, f)
    path = read_bundle_result("r.json")
    assert path.endswith("-ort-cpu-spin-fp32-b1.json") and LatencyTable.load(path).device["spinning"] is True
    blocked = profile(tiny(), ProfileConfig.quick(input_size=16, out="blocked.json", align=8), progress=False)
    with pytest.raises(TableError, match="--ort-spinning"):
        read_bundle_result("r.json", out=blocked)


def test_unit_check_finds_every_unit_inside_the_network():
    """tools/unit_check.py matches each unit to its ORT node in a real profiled session, also
    depthwise convs and widths ORT pads to its channel block (mobilenet_v2's 24 -> 32)."""
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import unit_check

    from hwprune.export import onnx_bytes
    from hwprune.latency.measure import build_variant

    loaded = load_model("mobilenet_v2")
    x = torch.randn(1, 3, 64, 64)
    units = extract_units(ChannelGraph(loaded.model, x))
    assert units[3].gout is not None
    widths = {units[3].gout: 40}  # an off-block width (ORT pads it to 48) in a pruned variant
    nodes, wall_ms = unit_check.node_times(onnx_bytes(build_variant(loaded.model, x, widths), x), 2, False, 3)
    m = unit_check.match_units(nodes, units, widths)
    assert len(m) == len(units) and wall_ms > 0
    assert len({id(n) for n in m.values()}) == len(units) and all(n["us"] >= 0 for n in m.values())
    assert any(u.family.kind == "dwconv" for u in units)


def test_profile_records_the_machine_state_it_calibrated_in(table_path):
    import numpy as np

    rec = next(iter(LatencyTable.load(table_path).models.values()))
    ms = rec["machine_state"]
    assert ms["probes_ms"] and all(v > 0 for v in ms["probes_ms"])
    assert ms["reference_ms"] == pytest.approx(np.median(ms["probes_ms"]), rel=1e-3)
    kept = ms["attempts"][ms["kept"]]
    assert kept["full_ms"] == pytest.approx(rec["full_ms"])
    assert kept["deviation"] == pytest.approx(kept["full_ms"] / ms["reference_ms"] - 1)
    assert ms["in_state"] == (abs(kept["deviation"]) <= ms["tolerance"])
    # a quick profile re-times nothing for the machine state (state_retries=0)
    assert len(ms["attempts"]) == 1


def test_calibration_is_timed_again_when_the_machine_state_moved(capsys):
    """The units' state set at 100 times what the full model read (as if they had been timed in a
    very slow spell): every attempt reads far off it, so the retries are spent, the attempt nearest
    the units' state is kept, and the profile warns. (100, not 2: this 50 us model's own readings
    wander by up to 3x over seconds on the 2-vCPU VM, with the cost of waking ORT's second
    thread.)"""
    from hwprune.latency.measure import Measurer
    from hwprune.latency.profile import (_calibrate_in_state, _prepare_variants, _StateProbe, calibration_variants,
                                         example_input)
    from hwprune_deploy.runner import timing_ms

    loaded = tiny()
    cfg = ProfileConfig.quick(input_size=16, calib_variants=1, align=8, state_retries=1)
    meas = Measurer("ort-cpu", 2, model_protocol=cfg.model_protocol)
    x = example_input(loaded, cfg)
    with meas.store() as prepared:  # on disk, as profile keeps them: each attempt reads them again
        _prepare_variants(meas, loaded, x, calibration_variants(graph_of(loaded).groups, cfg), prepared)
        assert set(prepared) == {"full", "calib0"}
        state = _StateProbe(meas.prober(prepared["full"], x), cfg.probe_every_s)
        state.maybe()
        state.readings = [100 * state.readings[0]]
        timings, rec = _calibrate_in_state(meas, prepared, x, cfg, state)
    assert len(rec["attempts"]) == 2 and not rec["in_state"]
    assert all(a["deviation"] < -0.5 for a in rec["attempts"])
    k = rec["kept"]
    assert abs(rec["attempts"][k]["deviation"]) == min(abs(a["deviation"]) for a in rec["attempts"])
    assert timing_ms(timings["full"]) == pytest.approx(rec["attempts"][k]["full_ms"])
    err = capsys.readouterr().err
    assert "timing the calibration again" in err and "after 2 attempts" in err


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2", "resnet18"])
def test_committed_table_covers_the_models_it_was_profiled_for(name):
    """`hwprune prune --model resnet50 --budget 0.5x` must reuse the committed table, not profile
    again into it: coverage was judged against the first unit family of the same shape (resnet50's
    downsample 1x1 at 56x56 spans cin <= 64) instead of any family that spans the layer."""
    from hwprune.graph import ChannelGraph
    from hwprune.latency import LatencyTable
    from hwprune.models import load_model

    root = os.path.join(os.path.dirname(__file__), "..", "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = LatencyTable.load(root, check_device=False)
    graph = ChannelGraph(load_model(name).model, torch.randn(1, 3, 224, 224))
    assert table.missing_units(graph) == [] and table.covers(graph)
    assert table.cost_model(graph).predict({}) > 0


@pytest.mark.slow  # timing-bound: on CI's shared 2 cores one clean-clone run read 24% errors; run with -m slow
def test_validation_error_is_bounded_on_a_real_table():
    """The committed table predicts resnet18's pruned variants within a stated bound, measured
    here: recalibrated (the table's calibration variants re-timed alongside, as `hwprune validate`
    reports), the median |ratio error| is under 10% and none is beyond 35%. Fidelity runs on a quiet
    machine meet 5% for 95% of 30 variants; here the other test worker shares the 2 cores, which
    moved single variants by up to 25% in trials, so the bound only tells a working table from a
    broken one (a prediction that ignored the widths errs by 25-230% on these variants)."""
    import numpy as np

    root = os.path.join(os.path.dirname(__file__), "..", "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = validate(load_model("resnet18"), root, samples=5, seed=3, progress=False, passes=2).to_dict()
    errs = np.abs([v["error_recalibrated"] for v in r["variants"]])
    assert len(errs) == 5 and np.median(errs) < 0.10 and errs.max() < 0.35, r["variants"]


def test_a_table_of_another_batch_names_the_batch_to_pass(table_path):
    """A batch-1 table asked to price the model traced at batch 8 says so and names --batch 1
    (before, it suggested profiling batch 8 into the same table, which profile refuses); another
    model at the table's batch still gets the command that adds it."""
    t = LatencyTable.load(table_path)
    g8 = ChannelGraph(tiny().model, torch.randn(8, 3, 16, 16))
    with pytest.raises(TableError, match=r"profiled at batch 1 .* batch 8 .*Pass --batch 1"):
        t.record_for(g8)
    with pytest.raises(TableError, match=r"Add it with `hwprune profile .*--input-size 24 --batch 1"):
        t.record_for(graph_of(tiny(), size=24))
