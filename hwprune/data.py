"""Data for evaluation, calibration and fine-tuning: ``make_data(spec, input_size) -> DataBundle``.

Specs:
- ``synthetic``: a learnable 10-class image dataset generated deterministically from the seed
  (procedurally drawn shapes and textures at random position, size, rotation and colour, on a
  noisy gradient background with small distractor blobs). No download; a few seconds to build.
  Used for demos, tests and the embedded default model of ``hwprune run``.
- ``imagefolder:PATH``: torchvision ImageFolder. ``PATH/train`` + ``PATH/val`` when present,
  else ``PATH`` itself with a seeded held-out fraction as validation.
- ``cifar10:PATH``: local CIFAR-10 python batches (``cifar-10-batches-py``), read directly; never
  downloaded (torchvision's reader insists on the official checksums, so we read the format).
- ``module:function`` / ``file.py:function``: a user's function returning a :class:`DataBundle`,
  a dict or a tuple ``(train, val[, calib][, num_classes])`` of loaders.

All loaders yield ``(images, labels)`` with normalised float images and use ``num_workers=0``.
The calibration loader is a fixed, unshuffled subset of the training data (criteria, BN
recalibration and reconstruction use it; evaluation never does).
"""
from __future__ import annotations

import hashlib
import inspect
import os
import pickle
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, Subset

from .errors import ConfigError
from .specs import load_attr

SYNTHETIC_CLASSES = ("disk", "ring", "square", "frame", "triangle", "plus", "stripes", "checker",
                     "dumbbell", "half-disk")
SYNTHETIC_MEAN, SYNTHETIC_STD = 0.5, 0.25
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass
class DataBundle:
    """Loaders for one dataset. ``calib`` is a small fixed subset of train (no augmentation)."""

    train: Any
    val: Any
    calib: Any
    num_classes: int
    input_size: Optional[int] = None
    spec: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# In-memory batch dataset: indexing with a list of indices returns a whole batch (fast on CPU).
class ArrayImageDataset(Dataset):
    """uint8 images (N, 3, H, W) + labels, normalised (and optionally augmented) per batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, size: int | None = None,
                 augment: bool = False, seed: int = 0):
        self.images, self.labels = images, labels.long()
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).expand(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).expand(1, 3, 1, 1)
        self.size, self.augment = size, augment
        self._gen = torch.Generator().manual_seed(seed + 7919)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx):
        single = isinstance(idx, int)
        idx = [idx] if single else list(idx)
        x = self.images[idx].float().div_(255.0)
        if self.size is not None and x.shape[-1] != self.size:
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.augment:  # random horizontal flip + 4-pixel padded random crop (the CIFAR recipe)
            flip = torch.rand(len(idx), generator=self._gen) < 0.5
            x[flip] = x[flip].flip(-1)
            pad = 4
            xp = torch.nn.functional.pad(x, (pad, pad, pad, pad))
            h, w = x.shape[-2:]
            dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=self._gen).tolist()
            x = xp[..., dy:dy + h, dx:dx + w].contiguous()
        x = (x - self.mean) / self.std
        y = self.labels[idx]
        return (x[0], y[0]) if single else (x, y)


def _batch_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False) -> DataLoader:
    sampler = RandomSampler(ds, generator=torch.Generator().manual_seed(seed)) if shuffle else SequentialSampler(ds)
    return DataLoader(ds, batch_size=None, sampler=BatchSampler(sampler, batch_size, drop_last), num_workers=0)


# ---------------------------------------------------------------------------------------------
# synthetic
class SyntheticImages(Dataset):
    """The synthetic shapes task, drawn lazily and deterministically per index.

    The class is the *shape* of one large object; its colour, position, scale and rotation are
    random, the background is a noisy two-colour gradient, and 0-2 small distractor blobs are
    added, so the task needs shape features (not colour statistics) and is not trivially easy.

    Memory is O(n) small per-sample parameters plus one image at a time: the pixels are rendered
    when an index is read, never stored (at 224 pixels, 6000 images held at once were ~30 GB of
    float intermediates). The random stream is the one the earlier all-at-once generator used:
    every per-sample parameter is drawn up front in the same order, and each image's pixel noise
    is the next slice of the same normal stream, reached through the generator state recorded at
    the start of each image (recorded the first time the stream walks past it). So image ``i`` is
    bit-identical to what the all-at-once generator made, for every seed and size.
    """

    def __init__(self, n: int, size: int = 32, seed: int = 0):
        if n < 1:
            raise ConfigError(f"synthetic data needs at least 1 image, got n={n}")
        self.n, self.size, self.seed = int(n), int(size), int(seed)
        rng = np.random.default_rng(seed)
        self.labels = rng.permutation(np.arange(n) % len(SYNTHETIC_CLASSES)).astype(np.int64)
        f32 = np.float32
        self.r = rng.uniform(0.20, 0.36, n).astype(f32) * size
        self.cx = rng.uniform(self.r, size - self.r).astype(f32)
        self.cy = rng.uniform(self.r, size - self.r).astype(f32)
        th = rng.uniform(0, 2 * np.pi, n).astype(f32)
        self.cos, self.sin = np.cos(th), np.sin(th)
        self.freq = rng.uniform(2.2, 3.4, n).astype(f32) * np.pi
        self.c0, self.c1 = rng.uniform(0, 1, (n, 3)).astype(f32), rng.uniform(0, 1, (n, 3)).astype(f32)
        phi = rng.uniform(0, 2 * np.pi, n).astype(f32)
        self.cphi, self.sphi = np.cos(phi), np.sin(phi)
        bg_mean = (self.c0 + self.c1) / 2
        sign = np.where(bg_mean.mean(1, keepdims=True) > 0.5, -1.0, 1.0).astype(f32)
        self.fg = np.clip(bg_mean + sign * rng.uniform(0.3, 0.55, (n, 1)).astype(f32)
                          + rng.uniform(-0.25, 0.25, (n, 3)).astype(f32), 0, 1)
        self.blobs = []
        for _ in range(2):  # distractors: up to two small blobs of random colour
            present = rng.uniform(0, 1, n) < 0.6
            br = rng.uniform(1.5, 3.2, n).astype(f32)
            bx, by = rng.uniform(0, size, n).astype(f32), rng.uniform(0, size, n).astype(f32)
            self.blobs.append((present, br, bx, by, rng.uniform(0, 1, (n, 3)).astype(f32)))
        self._bitgen = rng.bit_generator
        self._noise_states = [self._bitgen.state]  # state at the start of image i's noise
        coords = np.arange(size, dtype=f32) + 0.5
        self._yy, self._xx = np.meshgrid(coords, coords, indexing="ij")

    def __len__(self) -> int:
        return self.n

    def _noise(self, i: int) -> np.ndarray:
        shape = (3, self.size, self.size)
        while len(self._noise_states) <= i:  # walk the stream forward, recording each start
            self._bitgen.state = self._noise_states[-1]
            np.random.Generator(self._bitgen).normal(0, 0.08, shape)
            self._noise_states.append(self._bitgen.state)
        self._bitgen.state = self._noise_states[i]
        return np.random.Generator(self._bitgen).normal(0, 0.08, shape).astype(np.float32)

    def render(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 (3, size, size)."""
        if not 0 <= i < self.n:
            raise IndexError(f"synthetic image index {i} out of range [0, {self.n})")
        size, xx, yy, k = self.size, self._xx, self._yy, int(self.labels[i])
        dx, dy = xx - self.cx[i], yy - self.cy[i]
        c, s, r = self.cos[i], self.sin[i], self.r[i]
        u = (dx * c + dy * s) / r
        v = (-dx * s + dy * c) / r
        freq = self.freq[i]
        rad = np.sqrt(u * u + v * v)
        box = np.maximum(np.abs(u), np.abs(v))
        if k == 0:
            mask = rad < 1.0
        elif k == 1:
            mask = (rad < 1.0) & (rad > 0.55)
        elif k == 2:
            mask = box < 0.8
        elif k == 3:
            mask = (box < 0.85) & (box > 0.5)
        elif k == 4:
            mask = (v > -0.55) & (v < 0.95 - 1.7 * np.abs(u))
        elif k == 5:
            mask = ((np.abs(u) < 0.3) & (np.abs(v) < 1.0)) | ((np.abs(v) < 0.3) & (np.abs(u) < 1.0))
        elif k == 6:
            mask = (np.sin(u * freq) > 0) & (box < 0.9)
        elif k == 7:
            mask = ((np.sin(u * freq) * np.sin(v * freq)) > 0) & (box < 0.9)
        elif k == 8:
            mask = (((u - 0.55) ** 2 + v * v) < 0.2) | (((u + 0.55) ** 2 + v * v) < 0.2) | ((np.abs(v) < 0.12) & (np.abs(u) < 0.6))
        else:
            mask = (rad < 1.0) & (u > 0.0)
        # background: gradient between two colours along a random direction
        t = np.clip(((xx * self.cphi[i] + yy * self.sphi[i]) / size + 1) / 2, 0, 1)[None]
        img = self.c0[i][:, None, None] * (1 - t) + self.c1[i][:, None, None] * t
        img = np.where(mask[None], self.fg[i][:, None, None], img)
        for present, br, bx, by, col in self.blobs:
            blob = ((xx - bx[i]) ** 2 + (yy - by[i]) ** 2) < br[i] ** 2
            blob &= present[i]
            img = np.where(blob[None], col[i][:, None, None], img)
        img = img + self._noise(i)
        return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


class LazyImageDataset(Dataset):
    """Normalised float images from a renderer ``render(i) -> uint8 (3, H, W)``, one batch at a time.

    Indexing with a list returns a whole batch, like :class:`ArrayImageDataset`, but only that
    batch's pixels ever exist in memory.
    """

    def __init__(self, source: SyntheticImages, indices: range, mean, std):
        self.source, self.indices = source, indices
        self.labels = torch.from_numpy(source.labels[indices.start:indices.stop])
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).expand(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1).expand(1, 3, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, idx):
        single = isinstance(idx, int)
        idx = [idx] if single else list(idx)
        x = torch.from_numpy(np.stack([self.source.render(self.indices[j]) for j in idx])).float().div_(255.0)
        x = (x - self.mean) / self.std
        y = self.labels[idx]
        return (x[0], y[0]) if single else (x, y)


def synthetic_arrays(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (uint8, N x 3 x size x size) and labels of :class:`SyntheticImages`, as arrays.

    For small ``n`` (fingerprints, tests); data paths use the lazy dataset.
    """
    src = SyntheticImages(n, size, seed)
    return np.stack([src.render(i) for i in range(n)]), src.labels.copy()


def synthetic_fingerprint(size: int = 32, seed: int = 0) -> str:
    """Hash of a small synthetic sample: changes whenever the generator's output changes."""
    x, y = synthetic_arrays(64, size, seed)
    return hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]


def _synthetic(input_size: int, batch_size: int, seed: int, n_train: int, n_val: int, calib_size: int) -> DataBundle:
    src = SyntheticImages(n_train + n_val, input_size, seed)
    norm = ((SYNTHETIC_MEAN,) * 3, (SYNTHETIC_STD,) * 3)
    train = LazyImageDataset(src, range(0, n_train), *norm)
    val = LazyImageDataset(src, range(n_train, n_train + n_val), *norm)
    calib = Subset(train, range(min(calib_size, n_train)))
    return DataBundle(
        train=_batch_loader(train, batch_size, True, seed, drop_last=True),
        val=_batch_loader(val, batch_size, False, seed),
        calib=_batch_loader(calib, batch_size, False, seed),
        num_classes=len(SYNTHETIC_CLASSES), input_size=input_size, spec="synthetic",
        meta={"classes": list(SYNTHETIC_CLASSES), "n_train": n_train, "n_val": n_val, "seed": seed},
    )


# ---------------------------------------------------------------------------------------------
# imagefolder
def _imagefolder(path: str, input_size: int, batch_size: int, seed: int, val_fraction: float,
                 calib_size: int) -> DataBundle:
    from torchvision import datasets, transforms

    if not os.path.isdir(path):
        raise ConfigError(f"imagefolder path {path!r} is not a folder; give a folder with one sub-folder per class "
                          "(or train/ and val/ sub-folders), e.g. --data imagefolder:/data/imagenette")
    resize = int(round(input_size * 256 / 224))
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    t_val = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(input_size), transforms.ToTensor(), norm])
    t_train = transforms.Compose([transforms.Resize(resize), transforms.CenterCrop(input_size),
                                  transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm])

    def folder(root, tf):
        try:
            return datasets.ImageFolder(root, transform=tf)
        except (FileNotFoundError, RuntimeError) as e:
            raise ConfigError(f"imagefolder {root!r} has no readable images ({e}); put images in one sub-folder "
                              "per class") from None

    train_root = os.path.join(path, "train") if os.path.isdir(os.path.join(path, "train")) else path
    train_aug, train_plain = folder(train_root, t_train), folder(train_root, t_val)
    n = len(train_plain)
    if os.path.isdir(os.path.join(path, "val")):
        val = folder(os.path.join(path, "val"), t_val)
        if val.classes != train_plain.classes:
            raise ConfigError(f"{path}/val has classes {val.classes[:5]}... but train has {train_plain.classes[:5]}...; "
                              "both need the same class sub-folders")
        train_idx = list(range(n))
    else:
        if not 0.0 < val_fraction < 1.0:
            raise ConfigError(f"val_fraction {val_fraction} must be in (0, 1)")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = max(1, int(round(n * val_fraction)))
        if n - n_val < 1:
            raise ConfigError(f"imagefolder {path!r} has only {n} images; too few to hold out a validation split")
        val = Subset(train_plain, sorted(perm[:n_val]))
        train_idx = sorted(perm[n_val:])
    g = torch.Generator().manual_seed(seed)
    train_ds = Subset(train_aug, train_idx)
    calib_ds = Subset(train_plain, train_idx[:calib_size])
    return DataBundle(
        train=DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=g, num_workers=0,
                         drop_last=len(train_ds) > batch_size),
        val=DataLoader(val, batch_size=batch_size, shuffle=False, num_workers=0),
        calib=DataLoader(calib_ds, batch_size=batch_size, shuffle=False, num_workers=0),
        num_classes=len(train_plain.classes), input_size=input_size, spec=f"imagefolder:{path}",
        meta={"classes": list(train_plain.classes), "n_train": len(train_ds), "n_val": len(val)},
    )


# ---------------------------------------------------------------------------------------------
# cifar10 (local python batches)
def _read_cifar_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
    # The CIFAR-10 distribution format is a Python pickle of numpy arrays; read it like
    # torchvision does, from the user's own local files only.
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    y = np.asarray(d.get("labels", d.get("fine_labels")), dtype=np.int64)
    return x, y


def _cifar10(path: str, input_size: int, batch_size: int, seed: int, calib_size: int) -> DataBundle:
    root = path
    if os.path.isdir(os.path.join(path, "cifar-10-batches-py")):
        root = os.path.join(path, "cifar-10-batches-py")
    train_files = sorted(os.path.join(root, f) for f in (os.listdir(root) if os.path.isdir(root) else [])
                         if f.startswith("data_batch_"))
    test_file = os.path.join(root, "test_batch")
    if not train_files or not os.path.isfile(test_file):
        raise ConfigError(f"cifar10 path {path!r} has no CIFAR-10 python batches (data_batch_1..5 and test_batch); "
                          "download cifar-10-python.tar.gz yourself, extract it and pass the folder, "
                          "e.g. --data cifar10:/data/cifar-10-batches-py (hwprune never downloads)")
    try:
        parts = [_read_cifar_batch(f) for f in train_files]
        xv, yv = _read_cifar_batch(test_file)
    except Exception as e:
        raise ConfigError(f"cannot read CIFAR-10 batches in {root!r}: {type(e).__name__}: {e}") from None
    xt, yt = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    size = input_size if input_size != 32 else None
    train = ArrayImageDataset(torch.from_numpy(xt), torch.from_numpy(yt), CIFAR_MEAN, CIFAR_STD, size, augment=True, seed=seed)
    train_plain = ArrayImageDataset(torch.from_numpy(xt), torch.from_numpy(yt), CIFAR_MEAN, CIFAR_STD, size)
    val = ArrayImageDataset(torch.from_numpy(xv), torch.from_numpy(yv), CIFAR_MEAN, CIFAR_STD, size)
    calib = Subset(train_plain, range(min(calib_size, len(train_plain))))
    return DataBundle(
        train=_batch_loader(train, batch_size, True, seed, drop_last=len(train) > batch_size),
        val=_batch_loader(val, batch_size, False, seed),
        calib=_batch_loader(calib, batch_size, False, seed),
        num_classes=10, input_size=input_size, spec=f"cifar10:{path}",
        meta={"n_train": len(train), "n_val": len(val)},
    )


# ---------------------------------------------------------------------------------------------
# user function
def _load_function(spec: str) -> Callable:
    fn = load_attr(spec, "data", ConfigError)
    if not callable(fn):
        raise ConfigError(f"data spec {spec!r} names a {type(fn).__name__}, not a function")
    return fn


def _num_classes_of(loader) -> Optional[int]:
    ds = getattr(loader, "dataset", None)
    while isinstance(ds, Subset):
        ds = ds.dataset
    classes = getattr(ds, "classes", None)
    return len(classes) if classes is not None else None


def _user(spec: str, input_size: int, batch_size: int, seed: int) -> DataBundle:
    fn = _load_function(spec)
    offer = {"input_size": input_size, "batch_size": batch_size, "seed": seed}
    params = inspect.signature(fn).parameters
    takes_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in offer.items() if takes_kw or k in params}
    try:
        out = fn(**kwargs)
    except Exception as e:
        raise ConfigError(f"data function {spec!r} failed: {type(e).__name__}: {e}") from e
    if isinstance(out, DataBundle):
        out.spec = out.spec or spec
        return out
    if isinstance(out, dict):
        train, val, calib, nc = out.get("train"), out.get("val"), out.get("calib"), out.get("num_classes")
    elif isinstance(out, (tuple, list)) and 2 <= len(out) <= 4:
        train, val = out[0], out[1]
        rest = list(out[2:])
        nc = rest.pop() if rest and isinstance(rest[-1], int) else None
        calib = rest[0] if rest else None
    else:
        raise ConfigError(f"data function {spec!r} returned {type(out).__name__}; return a DataBundle, a dict with "
                          "train/val[/calib/num_classes] or a tuple (train, val[, calib][, num_classes])")
    if train is None or val is None:
        raise ConfigError(f"data function {spec!r} must provide both a train and a val loader")
    nc = nc or _num_classes_of(val) or _num_classes_of(train)
    if nc is None:
        raise ConfigError(f"data function {spec!r}: cannot tell the number of classes; return num_classes too")
    return DataBundle(train=train, val=val, calib=calib if calib is not None else train, num_classes=int(nc),
                      input_size=input_size, spec=spec)


def make_data(spec: str, input_size: int = 32, batch_size: int = 64, seed: int = 0, *, n_train: int = 5000,
              n_val: int = 1000, calib_size: int = 256, val_fraction: float = 0.1) -> DataBundle:
    """Resolve a data spec (see module doc) into train/val/calib loaders and the class count."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError(f"data spec {spec!r} is empty; use synthetic, imagefolder:PATH, cifar10:PATH or module:function")
    if input_size < 8:
        raise ConfigError(f"input size {input_size} is too small; use at least 8 pixels")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be >= 1")
    if spec == "synthetic":
        if n_train < batch_size or n_val < 1:
            raise ConfigError(f"synthetic data needs --n-train >= the batch size ({batch_size}) and --n-val >= 1; "
                              f"got {n_train} and {n_val}")
        return _synthetic(input_size, batch_size, seed, n_train, n_val, calib_size)
    kind, sep, rest = spec.partition(":")
    if sep and kind == "imagefolder":
        return _imagefolder(rest, input_size, batch_size, seed, val_fraction, calib_size)
    if sep and kind == "cifar10":
        return _cifar10(rest, input_size, batch_size, seed, calib_size)
    if sep and rest and kind not in ("imagefolder", "cifar10"):
        return _user(spec, input_size, batch_size, seed)
    raise ConfigError(f"unknown data spec {spec!r}; use synthetic, imagefolder:PATH, cifar10:PATH, "
                      "package.module:function or file.py:function")
