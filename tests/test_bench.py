"""Bench: side-by-side ORT measurement of pruned ResNet/ViT, batch-list errors."""
import json

import pytest
import torch

from hwprune.bench import BenchConfig, bench, format_bench, parse_batches
from hwprune.errors import BackendUnavailableError, ConfigError
from hwprune.export import export_onnx
from hwprune.models import LoadedModel, load_model
from hwprune.prune import PruneConfig, prune

FAST = dict(warmup=1, repeats=3, min_repeat_ms=1.0)


@pytest.mark.parametrize("spec", ["tiny_resnet", "tiny_vit"])
def test_export_and_bench_pruned_model_in_ort(tmp_path, spec):
    """Done-means: a pruned ResNet and a pruned ViT export to ONNX with parity and bench in ORT."""
    base = load_model(spec)
    if spec == "tiny_vit":
        torch.nn.init.normal_(base.model.heads.head.weight, std=0.5)
    res = prune(base, PruneConfig(ratio=0.5))
    parity = export_onnx(res.model, torch.randn(1, 3, 32, 32), str(tmp_path / "p.onnx"), dynamic_batch=True,
                         parity_batches=(2,))
    assert parity.ok and not parity.degenerate
    pruned = LoadedModel(res.model, base.model_id, 32, plan=res.plan)
    out = bench({"baseline": base, "pruned": pruned}, BenchConfig(backend="ort-cpu", threads=1, batches=(1, 2), **FAST),
                progress=False)
    assert out["labels"] == ["baseline", "pruned"] and set(out["speedup"]) == {"1", "2"}
    assert len(out["rows"]) == 4
    for r in out["rows"]:
        assert r["median_ms"] > 0 and r["p90_ms"] >= r["p10_ms"]
        assert r["throughput"] == pytest.approx(r["batch"] * 1000 / r["median_ms"])
        assert r["repeats"] >= 3
    from hwprune.bench import BUDGET_STATISTIC
    from hwprune.prune import MEASURE_STATISTIC

    # the speedup bench prints is the budget's estimator, the closed loop's (README: what a budget promises)
    assert out["statistic"] == BUDGET_STATISTIC == MEASURE_STATISTIC and BUDGET_STATISTIC.startswith("p10")
    for b in ("1", "2"):
        rows = {r["model"]: r for r in out["rows"] if str(r["batch"]) == b}
        assert out["speedup"][b] == pytest.approx(rows["baseline"]["p10_ms"] / rows["pruned"]["p10_ms"])
        assert out["speedup_median"][b] == pytest.approx(rows["baseline"]["median_ms"] / rows["pruned"]["median_ms"])
    assert out["models"]["pruned"]["flops"] < out["models"]["baseline"]["flops"]
    text = format_bench(out)
    assert "speedup pruned vs baseline" in text and "img/s" in text
    json.dumps(out)


@pytest.mark.parametrize("bad, name", [("1,x", "'x'"), ("1.5", "'1.5'"), ("8,,32", "''"), ("0", "0")])
def test_batch_list_errors_name_the_value(bad, name):
    with pytest.raises(ConfigError) as e:
        parse_batches(bad)
    assert name in str(e.value) and "batch" in str(e.value)


def test_parse_batches_ok():
    assert parse_batches("1, 8,32") == (1, 8, 32) and parse_batches(4) == (4,)


def test_cli_bench_bad_batch_is_clear_and_writes_nothing(tmp_path, cli):
    out = tmp_path / "b.json"
    proc = cli("bench", "--model", "tiny_resnet", "--batch", "1,eight", "--json", str(out), check=False)
    assert proc.returncode == 2 and "'eight'" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_bench_two_models(tmp_path, cli):
    cli("prune", "--model", "tiny_resnet", "--ratio", "0.5", "--out", str(tmp_path / "p"))
    out = tmp_path / "b.json"
    proc = cli("bench", "--model", "tiny_resnet", "--model", str(tmp_path / "p" / "pruned.pt"), "--batch", "1,2",
               "--repeats", "3", "--warmup", "1", "--threads", "1", "--json", str(out))
    assert "speedup" in proc.stdout and "median ms" in proc.stdout
    res = json.loads(out.read_text())
    assert set(res["speedup"]) == {"1", "2"} and res["models"][res["labels"][1]]["pruned"]


def test_unavailable_gpu_backends_are_clear():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    for name in ("torch-cuda", "tensorrt"):
        cfg = BenchConfig(backend=name, **FAST)
        with pytest.raises(BackendUnavailableError):
            bench({"a": load_model("tiny_resnet")}, cfg, progress=False)


def test_bench_with_ort_spinning_times_one_session_at_a_time(tmp_path, cli):
    """--ort-spinning: ORT's default spinning workers, each repeat in a fresh session; the pair
    is still timed side by side, the setting is recorded, and other backends refuse it."""
    cli("prune", "--model", "tiny_resnet", "--ratio", "0.5", "--out", str(tmp_path / "p"))
    models = {"a": load_model("tiny_resnet"), "b": load_model(str(tmp_path / "p" / "pruned.pt"))}
    res = bench(models, BenchConfig(repeats=4, warmup=2, spinning=True), progress=False)
    assert res["spinning"] is True and res["fingerprint"].get("spinning") is None
    rows = {r["model"]: r for r in res["rows"]}
    assert all(r["median_ms"] > 0 and r["repeats"] == 4 for r in rows.values())
    assert res["speedup"]["1"] > 1.0  # half the channels: faster in either setting
    assert "spinning" in format_bench(res)
    with pytest.raises(ConfigError, match="ort-cpu"):
        BenchConfig(backend="torch-cpu", spinning=True)


def test_cli_bench_times_exported_onnx_files_as_they_are(tmp_path, capsys):
    """`hwprune bench --model a.onnx --model b.onnx`: the files `hwprune export` wrote (fp32 with a
    dynamic batch, int8 QDQ) timed on ORT CPU side by side, per batch; bad files and mixed specs
    are refused naming the file and the fix."""
    from hwprune.cli.main import main

    base, q8, static = tmp_path / "base.onnx", tmp_path / "q8.onnx", tmp_path / "static.onnx"
    assert main(["export", "--model", "tiny_resnet", "--input-size", "32", "--dynamic-batch", "--out", str(base)]) == 0
    assert main(["export", "--model", "tiny_resnet", "--input-size", "32", "--dynamic-batch", "--precision", "int8",
                 "--calib-data", "synthetic", "--max-int8-drop", "100", "--out", str(q8)]) == 0
    assert main(["export", "--model", "tiny_resnet", "--input-size", "32", "--out", str(static)]) == 0
    capsys.readouterr()
    out = tmp_path / "b.json"
    assert main(["bench", "--model", str(base), "--model", str(q8), "--batch", "1,2", "--repeats", "3", "--warmup", "1",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    res = json.loads(out.read_text())
    assert res["files"][str(base)]["precision"] == "fp32" and res["files"][str(q8)]["precision"] == "int8 (QDQ)"
    assert res["files"][str(base)]["input_shape"] == [2, 3, 32, 32]  # the last batch timed
    assert [(r["model"], r["batch"]) for r in res["rows"]] == [(str(base), 1), (str(q8), 1), (str(base), 2), (str(q8), 2)]
    for r in res["rows"]:
        assert 0 < r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]
        # the budget's estimator: >=4 passes, 8 for a file under 4 ms (this one runs in ~0.7 ms at batch 1)
        assert r["passes"] in (4, 8) and (r["batch"] != 1 or r["passes"] == 8)
    assert "fastest half" in res["statistic"] and "8 passes" in text
    for b in ("1", "2"):
        a, q = (next(r for r in res["rows"] if r["model"] == m and str(r["batch"]) == b) for m in (str(base), str(q8)))
        assert res["speedup"][b] == pytest.approx(a["p10_ms"] / q["p10_ms"])  # the budget's statistic, as bench's
        assert res["speedup_median"][b] == pytest.approx(a["median_ms"] / q["median_ms"])
    assert "int8 (QDQ)" in text and "speedup of B over A" in text and "note:" not in text

    # export says how to time what it wrote; files of different input sizes are benched with a note
    big = tmp_path / "big.onnx"
    assert main(["export", "--model", "tiny_resnet", "--input-size", "48", "--out", str(big)]) == 0
    assert f"time it: hwprune bench --model {big}" in capsys.readouterr().out
    assert main(["bench", "--model", str(static), "--model", str(big), "--repeats", "3", "--warmup", "1"]) == 0
    assert "note: the files take different inputs (3x32x32 and 3x48x48)" in capsys.readouterr().out

    (tmp_path / "junk.onnx").write_text("not a model")
    for argv, says in ((["--model", str(static), "--batch", "2"], "export --dynamic-batch"),
                       (["--model", str(static), "--input-size", "64"], "exported for 32x32"),
                       (["--model", str(tmp_path / "none.onnx")], "does not exist"),
                       (["--model", str(tmp_path / "junk.onnx")], "cannot load"),
                       (["--model", str(base), "--model", "tiny_resnet"], "export the checkpoint first"),
                       (["--model", str(base), "--int8"], "timed as they are")):
        code = main(["bench", *argv, "--repeats", "3", "--warmup", "1"])
        err = capsys.readouterr().err
        assert code == 2 and says in err and "Traceback" not in err, (argv, err)
    # an exported file where a PyTorch model is needed: said so, not 'unknown model'
    assert main(["prune", "--model", str(base), "--ratio", "0.5", "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "is an exported file, not a PyTorch model" in err and "hwprune bench" in err


def test_bench_says_when_its_table_describes_another_device():
    """A table's predictions set beside this machine's measurements are compared like with like
    only when the table was measured as the bench measures: a table whose fingerprint names another
    CPU, or another thread count, gets a note naming the difference (report.md shows it under
    predicted vs measured); this machine's own fingerprint gets none."""
    import os
    import warnings

    from hwprune.bench import make_bench_backend
    from hwprune.latency import LatencyTable

    path = os.path.join(os.path.dirname(__file__), "..", "latency_tables", "amd-epyc-2c-ort-cpu-fp32-b1.json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = LatencyTable.load(path)
    cfg = BenchConfig(backend="ort-cpu", threads=1, batches=(1,), input_size=32, **FAST)
    here = make_bench_backend(cfg).fingerprint()
    m = load_model("tiny_resnet")
    other = lambda res: [n for n in res["table"]["notes"] if "another device" in n]  # noqa: E731

    table.device = dict(here)
    assert other(bench({"a": m, "b": m}, cfg, table=table, progress=False)) == []
    table.device = {**here, "cpu": "Some Other CPU"}
    notes = other(bench({"a": m, "b": m}, cfg, table=table, progress=False))
    assert len(notes) == 1 and "cpu: table 'Some Other CPU'" in notes[0] and "hwprune profile" in notes[0]
    table.device = {**here, "threads": 2}
    notes = other(bench({"a": m, "b": m}, cfg, table=table, progress=False))
    assert len(notes) == 1 and "threads: table 2 vs here 1" in notes[0]
