"""``hwprune run --quick`` end to end through the real CLI, in a temp folder."""
import json
import os

from conftest import assert_ran


def test_run_quick_end_to_end(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))  # the subprocess inherits it: hermetic
    out = tmp_path / "run"
    proc = cli("run", "--quick", "--n-val", "96", "--out", str(out), "--batch", "1", "--no-progress", cwd=str(tmp_path),
               check=False)
    assert_ran(proc.returncode, proc.stdout + proc.stderr, "run --quick")
    assert f"report: {out}/report.md" in proc.stdout
    assert "measured speedup" in proc.stdout
    for f in ("report.md", "report.json", "summary.png", "latency_throughput.png", "width_profile.png",
              "baseline.onnx", "pruned.onnx", "pruned.pt", "plan.json", "bench.json"):
        assert (out / f).is_file(), f
    rep = json.loads((out / "report.json").read_text())
    assert rep["latency"]["1"]["speedup"] > 0
    assert rep["accuracy"]["before"] is not None and rep["accuracy"]["after"] is not None
    assert rep["accuracy"]["split"] == "synthetic val, 96 images"  # --n-val (--quick alone: 128)
    assert "| top-1 (synthetic val, 96 images) |" in (out / "report.md").read_text()
    assert rep["parity"]["pruned"]["ok"]
    p = rep["predicted"]  # a table is always there (profiled quickly when none matches): measured next to predicted
    assert p["speedup"] > 0 and p["measured_speedup"] == rep["latency"]["1"]["speedup"]
    md = (out / "report.md").read_text()
    assert "predicted" in md and "measured" in md
    assert (out / "predicted_vs_measured.png").is_file()
    cl = rep["prune"]["latency"]["speedup_measured"]  # the prune step's closed loop, next to the bench's
    assert p["closed_loop_speedup"] == cl and f"closed loop {cl:.2f}x" in proc.stdout
    assert "closed loop measured" in md
    if rep["prune"]["latency"]["met_budget"]:  # the verdict, its line and the exit code agree
        assert "budget: measured" in proc.stdout and proc.returncode == 0
    else:  # a busy machine (the other xdist worker) can slow a round past the budget: exit 3, said plainly
        assert "budget: MISSED" in proc.stdout and proc.returncode == 3
    # ort-cpu: also timed with ORT's default spinning workers, reported next to the rest
    sp = json.loads((out / "bench.json").read_text())["ort_spinning"]["speedup"]["1"]
    assert p["spinning_speedup"] == sp > 0 and f"ORT spinning {sp:.2f}x" in proc.stdout
    assert "default spinning worker threads" in md
    assert not os.path.exists(tmp_path / "hwprune_run")


def test_default_model_trained_here_when_the_asset_fails(tmp_path, monkeypatch):
    """Without a loadable shipped checkpoint, ``get_model`` trains the default model with
    hwprune.train, caches the weights, and a second run loads them from the cache."""
    import torch

    from hwprune import pipeline, train
    from hwprune.data import make_data

    monkeypatch.setenv("HWPRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(train, "DEFAULT_ASSET", str(tmp_path / "missing.pt"))
    config = pipeline.RunConfig(quick=True, train_epochs=1, progress=False, out=str(tmp_path / "o"))

    def data_factory(size):
        return make_data("synthetic", input_size=size, batch_size=32, n_train=128, n_val=32, calib_size=32)

    run = pipeline.Run(config)
    loaded, _ = pipeline.get_model(config, run, data_factory)
    assert any("load_default_model() failed" in n for n in run.notes)
    assert any("trained here for 1 epochs" in n for n in run.notes), run.notes
    cached = list((tmp_path / "cache").glob("default-*.pt"))
    assert len(cached) == 1 and not loaded.model.training
    fresh = pipeline.load_model("tiny_resnet", kwargs=pipeline.sizes(config)["model_kwargs"]).model
    assert any(not torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), fresh.state_dict().values()))

    run2 = pipeline.Run(config)
    again, _ = pipeline.get_model(config, run2, data_factory)
    assert any("from the cache" in n for n in run2.notes), run2.notes
    for a, b in zip(loaded.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)


def test_run_reuses_only_tables_timed_its_way(tmp_path):
    """`hwprune run --ort-spinning` reuses a spinning table and never a blocked one, and the
    reverse; a --table timed the other way is refused with the flag to fix it."""
    import pytest

    from hwprune import pipeline
    from hwprune.errors import ConfigError
    from hwprune.latency import ProfileConfig, profile

    loaded = pipeline.load_model("tiny_resnet", kwargs={"width": 8, "depth": 1})
    folder = tmp_path / "tables"
    spin = profile(loaded, ProfileConfig.quick(input_size=16, align=8, spinning=True,
                                               out=str(folder / "spin.json")), progress=False)
    cfg = {"out": str(tmp_path / "o"), "progress": False, "align": 8}
    assert pipeline.find_table(pipeline.RunConfig(spinning=True, **cfg), loaded, 16, folders=(str(folder),)) == spin
    assert pipeline.find_table(pipeline.RunConfig(**cfg), loaded, 16, folders=(str(folder),)) is None
    run = pipeline.Run(pipeline.RunConfig(**cfg))
    with pytest.raises(ConfigError, match="add --ort-spinning"):
        pipeline.get_table(pipeline.RunConfig(table=spin, **cfg), run, loaded, 16)
    with pytest.raises(ConfigError, match="ort-cpu only"):
        pipeline.RunConfig(backend="torch-cpu", spinning=True)


def test_report_command_line_parses_back_to_the_same_config():
    """The reproduce command in report.md uses the CLI's real flags (--ort-spinning, --batch)."""
    import shlex

    from hwprune import pipeline
    from hwprune.cli.main import build_parser

    cfg = pipeline.RunConfig(spinning=True, budget="0.6x", batches=(1, 4), quick=True, seed=3, out="o")
    argv = shlex.split(pipeline.command_line(cfg))
    assert argv[:2] == ["hwprune", "run"] and "--ort-spinning" in argv
    args = build_parser().parse_args(argv[1:])
    assert (args.ort_spinning, args.budget, args.batch, args.quick, args.seed, args.out) == \
        (True, ["0.6x"], "1,4", True, 3, "o")


def test_run_takes_the_synthetic_data_sizes_as_prune_does():
    """`hwprune run --n-train/--n-val` (prune's flags; `run` used to refuse them): they reach the
    data the run builds, survive into the reproducing command line, and bad values name the flag."""
    import pytest

    from hwprune import pipeline
    from hwprune.cli.main import build_parser
    from hwprune.data import make_data
    from hwprune.errors import ConfigError

    args = build_parser("run").parse_args(["run", "--quick", "--n-train", "300", "--n-val", "50"])
    config = pipeline.RunConfig(quick=True, n_train=args.n_train, n_val=args.n_val)
    s = pipeline.sizes(config)
    assert (s["n_train"], s["n_val"]) == (300, 50) and pipeline.sizes(pipeline.RunConfig(quick=True))["n_val"] == 128
    data = pipeline.load_data(config, 16)
    assert (len(data.train.dataset), len(data.val.dataset)) == (300, 50)
    assert pipeline.command_line(config) == "hwprune run --quick --n-train 300 --n-val 50"
    with pytest.raises(ConfigError, match=r"--n-val 0 must be >= 1"):
        pipeline.RunConfig(n_val=0)
    with pytest.raises(ConfigError, match=r"--n-train >= the batch size \(64\).*got 32 and 50"):
        make_data("synthetic", input_size=16, batch_size=64, n_train=32, n_val=50)
