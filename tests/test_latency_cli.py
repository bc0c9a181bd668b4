"""The profile/validate CLI for real: kill and resume, device bundles measured without torch, plots."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from hwprune.latency import LatencyTable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = ["--model", "tiny_resnet", "--input-size", "16"]


@pytest.fixture(scope="module")
def quick_table(tmp_path_factory):
    """One quick profile (3 calibration variants, grid 8, unit plots) that the tests below copy
    and use as a user would a table they profiled: each profile is ~10 s of this suite."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("quick_table")
    p = run_cli("profile", *TINY, "--quick", "--align", "8", "--calib-variants", "3", "--no-progress",
                "--out", str(root / "t.json"), "--plot", str(root / "plots"))
    assert "latency table written to" in p.stdout and "plots" in p.stdout
    # full + 3 variants: too few points to cross-validate the curve's width (a window k needs 2k+1)
    assert "+ residual curve (running median of 3)" in p.stdout, p.stdout
    return root


def _copy_table(quick_table, tmp_path):
    """The shared table (and its plots folder) as this test's own files."""
    shutil.copytree(quick_table / "plots", tmp_path / "plots")
    return shutil.copy(quick_table / "t.json", tmp_path / "t.json")


def test_kill_and_resume_keeps_finished_units(cli, tmp_path):
    out = tmp_path / "t.json"
    args = [sys.executable, "-m", "hwprune", "profile", *TINY, "--quick", "--no-progress", "--out", str(out)]
    # a hard kill leaves the running unit's ORT profile behind: keep it in this test's folder
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, env=env)
    try:
        deadline = time.time() + 300
        while not out.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert out.exists(), "no checkpoint was written"
        proc.send_signal(signal.SIGKILL)  # hard kill: no cleanup handler runs
    finally:
        proc.wait(timeout=60)
    partial = LatencyTable.load(str(out))  # the checkpoint is a complete, loadable file
    assert partial.in_progress is not None and partial.in_progress["spec"] == "tiny_resnet"
    stamps = {k: dict(f.measured_at) for k, f in partial.families.items()}
    assert stamps
    # without --resume the interrupted profile is not silently overwritten
    p = cli("profile", *TINY, "--quick", "--no-progress", "--out", str(out), check=False)
    assert p.returncode == 2 and "--resume" in p.stderr
    p = cli("profile", *TINY, "--quick", "--no-progress", "--out", str(out), "--resume")
    assert "latency table written to" in p.stdout and "machine state: the full model read" in p.stdout
    done = LatencyTable.load(str(out))
    assert done.in_progress is None and len(done.models) == 1
    for k, s in stamps.items():  # finished units were not measured again
        for pt, ts in s.items():
            assert done.families[k].measured_at[pt] == ts
    assert done.history[-1]["resumed"] is True


def test_bundle_measured_without_torch_and_read_back(cli, tmp_path):
    bundle = tmp_path / "b.zip"
    p = cli("profile", *TINY, "--quick", "--calib-variants", "3", "--bundle", str(bundle))
    assert bundle.exists() and "hwprune_deploy.cli measure" in p.stdout
    result = tmp_path / "result.json"
    code = ("import sys\n"
            "from hwprune_deploy.cli import main\n"
            f"rc = main(['measure', {str(bundle)!r}, '--out', {str(result)!r}, '--threads', '2', "
            "'--repeats', '3', '--min-repeat-ms', '0.5', '--no-progress'])\n"
            "assert 'torch' not in sys.modules, 'device runner imported torch'\n"
            "sys.exit(rc)\n")
    env = dict(os.environ)
    run = subprocess.run([sys.executable, "-c", code], cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    res = json.loads(result.read_text())
    assert res["format"] == "hwprune-bundle-result" and all(v["p10_ms"] > 0 for v in res["results"].values())
    assert res["unit_protocol"]["unit_time"].startswith("kernel")  # units by ORT kernel time, device side too
    table = tmp_path / "from_bundle.json"
    p = cli("profile", "--from-bundle-result", str(result), "--out", str(table))
    assert str(table) in p.stdout
    t = LatencyTable.load(str(table))
    rec = next(iter(t.models.values()))
    assert rec["source"] == "bundle" and rec["full_ms"] > 0
    # the table read back is a working cost model for the model
    import torch

    from hwprune.graph import ChannelGraph
    from hwprune.models import load_model

    loaded = load_model("tiny_resnet")
    g = ChannelGraph(loaded.model, torch.randn(1, 3, 16, 16))
    assert t.cost_model(g).predict({}) > 0
    # validate can recalibrate it: the calibration variants it draws again are the bundle's own
    from hwprune.latency.validate import calibration_set

    shipped = [m["widths"] for m in res["manifest"]["models"].values() if m["role"] == "calibration"]
    assert len(shipped) == 3 and calibration_set(t, g, 8, 8) == shipped
    assert [v["widths"] for v in rec["calibration"]["variants"].values()] == shipped


def test_validate_cli_prints_errors_and_plots(cli, tmp_path, quick_table):
    table = _copy_table(quick_table, tmp_path)
    p = cli("validate", *TINY, "--table", str(table), "--samples", "2", "--no-progress", "--shapes", "--passes", "9",
            "--json", str(tmp_path / "v.json"), "--plot", str(tmp_path / "plots"))
    assert "median |error|" in p.stdout and "within +-5%" in p.stdout and "recalibrated (residual curve" in p.stdout
    assert "timed alongside, running median of 3)" in p.stdout
    assert "structured variants" in p.stdout and "late x0.25" in p.stdout and "worst: " in p.stdout
    d = json.loads((tmp_path / "v.json").read_text())
    assert d["samples"] == 2 and len(d["shapes"]) == 6 and d["passes"] == 9
    pngs = [f for f in os.listdir(tmp_path / "plots") if f.endswith(".png")]
    assert any(f.startswith("unit_") for f in pngs) and any(f.startswith("validate_") for f in pngs)


def test_profile_errors_are_clear(cli, tmp_path):
    p = cli("profile", *TINY, "--backend", "ort-gpu", check=False)
    assert p.returncode == 2 and "ort-gpu" in p.stderr and "Traceback" not in p.stderr
    p = cli("validate", *TINY, "--table", str(tmp_path / "missing.json"), check=False)
    assert p.returncode == 2 and "does not exist" in p.stderr
    p = cli("validate", *TINY, "--table", str(tmp_path / "missing.json"), "--passes", "0", check=False)
    assert p.returncode == 2 and "passes 0 must be >= 1" in p.stderr and "Traceback" not in p.stderr


def test_recalibrate_refits_the_curve_and_keeps_units(cli, tmp_path, quick_table):
    table = tmp_path / "t.json"
    table.write_bytes((quick_table / "t.json").read_bytes())
    before = json.loads(table.read_text())
    p = cli("profile", *TINY, "--recalibrate", "--out", str(table))
    assert "recalibrated tiny_resnet" in p.stdout and "3 calibration variants" in p.stdout
    after = json.loads(table.read_text())
    assert after["families"] == before["families"]  # units untouched
    (rb,), (ra,) = before["models"].values(), after["models"].values()
    widths = lambda r: [v["widths"] for v in r["calibration"]["variants"].values()]  # noqa: E731
    assert widths(ra) == widths(rb) and len(widths(ra)) == 3  # the same variants, timed again
    assert ra["recalibrated"]["seconds"] > 0 and after["history"][-1]["recalibrated"] is True
    assert ra["full_ms"] > 0 and ra["calibration"]["variants"] != rb["calibration"]["variants"]  # new timings
    # a table profiled without calibration variants keeps none: only the full model is re-timed
    bare = tmp_path / "bare.json"
    cli("profile", *TINY, "--quick", "--calib-variants", "0", "--no-progress", "--out", str(bare))
    p = cli("profile", *TINY, "--recalibrate", "--out", str(bare))
    assert "(0 calibration variants" in p.stdout and "only the full model was re-timed" in p.stdout
    (rec,) = json.loads(bare.read_text())["models"].values()
    assert rec["calibration"]["variants"] == {} and rec["recalibrated"]["seconds"] > 0
    p = cli("validate", *TINY, "--table", str(bare), "--samples", "1", "--no-progress")
    assert "no recalibrated figure" in p.stdout and "recalibrated (residual curve" not in p.stdout
    missing = tmp_path / "none.json"
    p = cli("profile", *TINY, "--recalibrate", "--out", str(missing), check=False)
    assert p.returncode != 0 and "none.json" in p.stderr and "profile first" in p.stderr


def test_prune_recalibrates_a_given_table_before_searching(cli, tmp_path, quick_table):
    table = tmp_path / "t.json"
    table.write_bytes((quick_table / "t.json").read_bytes())
    before = json.loads(table.read_text())
    p = cli("prune", *TINY, "--budget", "0.8x", "--table", str(table), "--align", "8", "--recalibrate", "--quiet",
            "--out", str(tmp_path / "p"))
    assert "latency table recalibrated (3 calibration variants" in p.stderr
    after = json.loads(table.read_text())
    assert after["history"][-1]["recalibrated"] is True and after["families"] == before["families"]
    assert (tmp_path / "p" / "plan.json").exists()


def test_ort_spinning_through_the_cli(cli, tmp_path):
    table = tmp_path / "spin.json"
    cli("profile", *TINY, "--quick", "--ort-spinning", "--calib-variants", "2", "--no-progress", "--out", str(table))
    assert json.loads(table.read_text())["device"]["spinning"] is True
    p = cli("validate", *TINY, "--table", str(table), "--samples", "2")
    assert "on ort-cpu (ORT workers spinning), 2 variants" in p.stdout
    p = cli("profile", *TINY, "--quick", "--no-progress", "--out", str(table), check=False)
    assert p.returncode != 0 and "--ort-spinning" in p.stderr and "Traceback" not in p.stderr
