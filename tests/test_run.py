"""``hwprune run --quick`` end to end through the real CLI, in a temp folder."""
import json
import os


def test_run_quick_end_to_end(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))  # the subprocess inherits it: hermetic
    out = tmp_path / "run"
    proc = cli("run", "--quick", "--out", str(out), "--batch", "1", "--no-progress", cwd=str(tmp_path))
    assert f"report: {out}/report.md" in proc.stdout
    assert "measured speedup" in proc.stdout
    for f in ("report.md", "report.json", "summary.png", "latency_throughput.png", "width_profile.png",
              "baseline.onnx", "pruned.onnx", "pruned.pt", "plan.json", "bench.json"):
        assert (out / f).is_file(), f
    rep = json.loads((out / "report.json").read_text())
    assert rep["latency"]["1"]["speedup"] > 0
    assert rep["accuracy"]["before"] is not None and rep["accuracy"]["after"] is not None
    assert rep["parity"]["pruned"]["ok"]
    p = rep.get("predicted")
    if p is not None:  # latency tables installed: measured next to predicted
        assert p["speedup"] > 0 and p["measured_speedup"] == rep["latency"]["1"]["speedup"]
        md = (out / "report.md").read_text()
        assert "predicted" in md and "measured" in md
        assert (out / "predicted_vs_measured.png").is_file()
    assert not os.path.exists(tmp_path / "hwprune_run")
