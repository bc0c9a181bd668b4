"""tools/bench_accuracy.py's task and report (the benchmark itself is a measurement: it runs by hand)."""
import importlib.util
import os
import sys

import torch

from hwprune.data import SyntheticImages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    spec = importlib.util.spec_from_file_location("bench_accuracy", os.path.join(ROOT, "tools", "bench_accuracy.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_accuracy"] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_mosaic_label_is_the_top_left_tile():
    b = _bench()
    x, y = b.mosaic_arrays(3, seed=5)
    src = SyntheticImages(12, size=16, seed=5)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [int(src.labels[4 * i]) for i in range(3)]
    for i in range(3):
        assert torch.equal(x[i, :, :16, :16], torch.from_numpy(src.render(4 * i)))
        assert torch.equal(x[i, :, 16:, 16:], torch.from_numpy(src.render(4 * i + 3)))
    data = b.make_task("mosaic", 64, 32, batch=16)
    xb, yb = next(iter(data.train))
    assert xb.shape == (16, 3, 32, 32) and data.num_classes == 10


def test_markdown_has_mean_and_std_per_budget_strategy_recipe():
    b = _bench()
    rows = [{"seed": s, "budget": 0.5, "strategy": "halp", "recipe": "ft", "top1": t, "latency_ratio": 0.5,
             "flops_ratio": 0.4} for s, t in ((0, 0.8), (1, 0.9))]
    rows.append({"seed": 0, "budget": 0.5, "strategy": "halp+tpp", "recipe": "error", "error": "boom"})
    md = b.markdown(rows, {"task": "mosaic", "preset": "quick", "seeds": [0, 1], "n_val": 10, "threads": 2,
                           "width": 16})
    assert "| 0.5x | halp | ft | 85.000 ± 7.071 | 0.500 ± 0.000 | 0.400 ± 0.000 | 2 |" in md
    assert "failed: halp+tpp" in md
