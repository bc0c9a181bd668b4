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


def test_verdict_compares_each_search_with_uniform_under_the_same_recipe():
    b = _bench()
    acc = {("uniform", "ft"): (0.60, 0.62), ("halp", "ft"): (0.65, 0.66), ("uniform", "kd"): (0.70, 0.70),
           ("halp", "kd"): (0.69, 0.70)}
    rows = [{"seed": s, "budget": 0.5, "strategy": st, "recipe": rc, "top1": t[s]}
            for (st, rc), t in acc.items() for s in (0, 1)]
    rows.append({"seed": 0, "budget": 0.5, "strategy": "halp", "recipe": "cut", "top1": 0.1})
    text = b.verdict(rows)
    assert "**0.5x**: best uniform / kd 70.0% (n=2)" in text
    assert "- halp vs uniform, both `ft`: +4.50 points (paired, 2 seeds; per seed +5.0, +4.0" in text
    assert "- halp vs uniform, both `kd`: -0.50 points" in text
    assert "vs uniform / `ft` (the peers' recipe): +9.00 points (paired, 2 seeds; per seed +10.0, +8.0" in text


def test_strategy_names_carry_their_cap_and_steps():
    """NAME-mpF and NAME-itK (and both) parse to the strategy's options; too many steps for the
    recovery epochs is refused before any training."""
    import pytest

    b = _bench()
    assert [b.iterative_steps(s) for s in ("halp", "halp-mp0.75", "halp-it3", "halp-mp0.75-it2")] == [1, 1, 3, 2]
    P = b.PRESETS["default"]
    with pytest.raises(SystemExit, match="leave none"):
        b.iterative_rows(0, 0.5, f"halp-it{P.recover_epochs + 1}", None, None, None, None, None, P, None)
    with pytest.raises(SystemExit, match="no iterative form"):
        b.cut(None, "flops-it2", 0.5, 0, None, None, None, P, 2)
