"""hwprune.data: synthetic, imagefolder, cifar10 and user-function specs on tiny real files."""
from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from hwprune.data import DataBundle, SYNTHETIC_CLASSES, make_data, synthetic_arrays, synthetic_fingerprint
from hwprune.errors import ConfigError


def test_synthetic_is_deterministic_and_shaped():
    a = make_data("synthetic", input_size=32, batch_size=16, n_train=64, n_val=32, calib_size=32)
    b = make_data("synthetic", input_size=32, batch_size=16, n_train=64, n_val=32, calib_size=32)
    xa, ya = next(iter(a.val))
    xb, yb = next(iter(b.val))
    assert xa.shape == (16, 3, 32, 32) and xa.dtype == torch.float32
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert a.num_classes == len(SYNTHETIC_CLASSES) == 10
    assert sum(len(y) for _, y in a.calib) == 32
    assert sum(len(y) for _, y in a.val) == 32
    assert all(len(y) == 16 for _, y in a.train)
    # balanced labels, all classes present; different seed -> different images
    _, labels = synthetic_arrays(200, 32, seed=0)
    assert np.bincount(labels, minlength=10).tolist() == [20] * 10
    assert synthetic_fingerprint(32, 0) == synthetic_fingerprint(32, 0) != synthetic_fingerprint(32, 1)


def test_synthetic_images_are_the_pinned_ones():
    # hashes of the images the all-at-once generator drew before the lazy one replaced it: the
    # shipped tiny_resnet was trained on them, so the lazy generator must draw the same pixels
    assert synthetic_fingerprint(32, 0) == "33b93c406f66d335"
    assert synthetic_fingerprint(224, 3) == "6f8fa2edd28bc7c3"
    # random access agrees with sequential access (per-image noise state)
    from hwprune.data import SyntheticImages

    a, b = SyntheticImages(40, 32, seed=5), SyntheticImages(40, 32, seed=5)
    late = a.render(37)
    assert np.array_equal(late, b.render(37)) and np.array_equal(a.render(3), b.render(3))
    assert np.array_equal(synthetic_arrays(40, 32, seed=5)[0][37], late)


_MEMORY_CHILD = """
import itertools, resource, sys
limit = 4 * 2 ** 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from hwprune.data import make_data
d = make_data("synthetic", input_size=224, batch_size=64, seed=0)  # 6000 images: ~3.6 GB as float32
for loader in (d.calib, d.val, d.train):
    for xb, yb in itertools.islice(loader, 2):
        assert xb.shape == (64, 3, 224, 224)
from hwprune.memory import peak_rss_mb  # this process's own peak, not the forking worker's (VmHWM)
print("peak_mb", int(peak_rss_mb()))
"""


def test_synthetic_224_streams_under_a_4gb_address_space_limit():
    """The default synthetic set at 224 pixels used to be drawn whole (killed at 24 GB in a prune);
    under a 4 GiB address-space limit the old generator fails with a MemoryError at once."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _MEMORY_CHILD], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout.split("peak_mb")[1]) < 2048


def _write_png_tree(root, classes, per_class, size=12):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        os.makedirs(os.path.join(root, c), exist_ok=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(os.path.join(root, c, f"{i}.png"))


def test_imagefolder_split_and_train_val(tmp_path):
    _write_png_tree(tmp_path / "flat", ["a", "b", "c"], 5)
    d = make_data(f"imagefolder:{tmp_path / 'flat'}", input_size=16, batch_size=4, val_fraction=0.2)
    assert d.num_classes == 3 and d.meta["n_val"] == 3 and d.meta["n_train"] == 12
    x, y = next(iter(d.val))
    assert x.shape[1:] == (3, 16, 16) and y.max() < 3
    _write_png_tree(tmp_path / "split" / "train", ["a", "b"], 4)
    _write_png_tree(tmp_path / "split" / "val", ["a", "b"], 2)
    d = make_data(f"imagefolder:{tmp_path / 'split'}", input_size=16, batch_size=4)
    assert d.num_classes == 2 and d.meta["n_val"] == 4 and d.meta["n_train"] == 8
    assert sum(len(y) for _, y in d.calib) == 8


def test_cifar10_local_batches(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name, n in [("data_batch_1", 20), ("data_batch_2", 12), ("test_batch", 10)]:
        with open(root / name, "wb") as f:
            pickle.dump({"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, n).tolist()}, f)
    d = make_data(f"cifar10:{tmp_path}", input_size=32, batch_size=8)
    assert d.num_classes == 10 and d.meta == {"n_train": 32, "n_val": 10}
    x, y = next(iter(d.train))
    assert x.shape == (8, 3, 32, 32)
    assert sum(len(y) for _, y in d.val) == 10
    d24 = make_data(f"cifar10:{root}", input_size=24, batch_size=8)
    assert next(iter(d24.val))[0].shape == (8, 3, 24, 24)


def test_user_function_spec(tmp_path):
    (tmp_path / "mydata.py").write_text(
        "import torch\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "def make(batch_size=4):\n"
        "    ds = TensorDataset(torch.randn(8, 3, 8, 8), torch.arange(8) % 4)\n"
        "    return DataLoader(ds, batch_size=batch_size), DataLoader(ds, batch_size=batch_size), 4\n")
    d = make_data(f"{tmp_path / 'mydata.py'}:make", input_size=8, batch_size=4)
    assert isinstance(d, DataBundle) and d.num_classes == 4 and d.calib is d.train


@pytest.mark.parametrize("spec, words", [
    ("nonsense", ["'nonsense'", "synthetic"]),
    ("", ["empty", "synthetic"]),
    ("imagefolder:/no/such/dir", ["/no/such/dir", "sub-folder"]),
    ("cifar10:/no/such/dir", ["/no/such/dir", "data_batch"]),
    ("/no/such/file.py:make", ["/no/such/file.py", ".py"]),
    ("hwprune.zoo:no_such_fn", ["no_such_fn"]),
])
def test_bad_specs_name_value_and_fix(spec, words):
    with pytest.raises(ConfigError) as e:
        make_data(spec)
    for w in words:
        assert w in str(e.value)
