"""Resumable training state: what ``hwprune train`` writes after every epoch so a killed run
continues where it stopped and ends with the result an uninterrupted run gives.

A state file holds the model, optimizer and scheduler state, the epoch and step counters, the
loss history and every random-number state the next epoch draws from: torch's global generator
(and CUDA's), numpy's and Python's, and the generators the data loader owns (the shuffling
sampler's, a dataset's augmentation generator). Restoring them at an epoch boundary replays the
next epoch's data order, augmentation and dropout exactly. The file is written atomically (temp
file + fsync + rename, :func:`hwprune.jsonio.atomic_write_bytes`), so a kill mid-write leaves the
previous epoch's state, never half of one; it is read back with ``weights_only=True``.

The state lives in ``OUT.partial/`` next to the output folder until the run finishes, so the
output folder itself is written whole or not at all (:mod:`hwprune.outdir`).
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import random
import shutil
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .jsonio import atomic_write_bytes

STATE_FORMAT = "hwprune-train-state"
STATE_VERSION = 1
STATE_FILE = "state.pt"


def partial_dir(out: str) -> str:
    """The folder holding the per-epoch state of a run whose output folder is ``out``."""
    return os.path.abspath(out).rstrip(os.sep) + ".partial"


def weights_digest(model: nn.Module) -> str:
    """sha256 of a module's state_dict (names, shapes and values): tells whether a resumed run
    starts from the same weights (and distils from the same teacher) as the interrupted one."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# random-number states
def loader_generators(loader) -> list[torch.Generator]:
    """The torch generators a data loader draws from: its own, its sampler's and batch sampler's
    (shuffling) and any its dataset (or a Subset's dataset) holds as an attribute (augmentation).
    Found by walking ``generator``/``sampler``/``batch_sampler``/``dataset`` attributes, in a
    fixed order, each generator once."""
    found: list[torch.Generator] = []
    seen: set[int] = set()

    def visit(obj, depth: int) -> None:
        if obj is None or depth > 6 or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Generator):
            found.append(obj)
            return
        attrs = getattr(obj, "__dict__", None)
        if not isinstance(attrs, dict):
            return
        for name in sorted(attrs):
            value = attrs[name]
            if isinstance(value, torch.Generator) or name in ("generator", "sampler", "batch_sampler", "dataset"):
                visit(value, depth + 1)

    visit(loader, 0)
    return found


def capture_rng(loader) -> dict[str, Any]:
    """Every random state the next epoch draws from, as plain tensors/ints (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
        "loader": [g.get_state() for g in loader_generators(loader)],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], loader) -> None:
    """Put back what :func:`capture_rng` saved (the loader must be built the same way)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    gens = loader_generators(loader)
    if len(gens) != len(state["loader"]):
        raise ConfigError(f"the data loader has {len(gens)} random generators but the saved state has "
                          f"{len(state['loader'])}: --resume needs the same --data settings as the interrupted run")
    for g, s in zip(gens, state["loader"]):
        g.set_state(s)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# the state file
def save_state(folder: str, model: nn.Module, loop: dict[str, Any], fingerprint: dict[str, Any],
               extra: Optional[dict[str, Any]] = None) -> str:
    """Write ``folder/state.pt`` atomically; returns its path. ``loop`` is what
    :func:`hwprune.recover.fit` hands its epoch callback (epoch, steps, loss, optimizer,
    scheduler, rng); ``fingerprint`` the settings a resume must match (JSON-able)."""
    buf = io.BytesIO()
    torch.save({
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "fingerprint": json.dumps(fingerprint, sort_keys=True, default=str),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "loop": loop,
        "extra": dict(extra or {}),
    }, buf)
    path = os.path.join(folder, STATE_FILE)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_state(folder: str) -> Optional[dict[str, Any]]:
    """The state in ``folder`` (None when there is none); a file that is not one is an error."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.isfile(path):
        return None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ConfigError(f"cannot read the training state {path!r} ({type(e).__name__}: {e}); delete "
                          f"{os.path.dirname(path)!r} to start over") from e
    if not isinstance(obj, dict) or obj.get("format") != STATE_FORMAT or obj.get("version") != STATE_VERSION:
        raise ConfigError(f"{path!r} is not a training state this hwprune reads (format {STATE_FORMAT} version "
                          f"{STATE_VERSION}); delete {os.path.dirname(path)!r} to start over")
    obj["fingerprint"] = json.loads(obj["fingerprint"])
    return obj


def check_partial_dir(folder: str) -> None:
    """Refuse a state folder holding anything but a state file (and temp files of killed writes):
    it is deleted when the run finishes, so it must not be someone's folder."""
    if not os.path.lexists(folder):
        return
    if not os.path.isdir(folder) or os.path.islink(folder):
        raise ConfigError(f"{folder!r} exists and is not a folder; hwprune train keeps its per-epoch state there: "
                          "move it away or pass another --out")
    foreign = [e for e in sorted(os.listdir(folder)) if e != STATE_FILE and not e.startswith(f".tmp-{STATE_FILE}-")]
    if foreign:
        raise ConfigError(f"{folder!r} holds {foreign[0]!r}, which hwprune did not write; hwprune train keeps its "
                          "per-epoch state in that folder and deletes it when done: move it away or pass another --out")


def fingerprint_mismatch(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """``key: saved -> now`` for each setting that differs (after a JSON round trip)."""
    now = json.loads(json.dumps(now, sort_keys=True, default=str))
    keys = sorted(set(saved) | set(now))
    return [f"{k}: {saved.get(k)!r} -> {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


def remove_partial_dir(folder: str) -> None:
    shutil.rmtree(folder, ignore_errors=True)
