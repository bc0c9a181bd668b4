"""Train a copycat family from scratch, one work item per member, on an executor (issues #18, #20).

``hwprune family`` writes each member as a random-init checkpoint (``DIR/<member>.pt``): Crowley et
al. ("Pruning neural networks: is it time to nip it in the bud?", 2018) and Liu et al.
("Rethinking the Value of Network Pruning", ICLR 2019) train such architectures from scratch, and
each member trains independently of the others. :func:`train_family` hands them to an executor
(:mod:`hwprune.executor`): in this process one after another, or as Ray tasks (``--executor ray``),
one member a task. A work item carries the member's checkpoint bytes and the task returns the
trained checkpoint's bytes and its report, so a worker needs no access to the host's files --
only to the data: the data spec is resolved on the worker (``synthetic`` anywhere; a path must
exist there too). Items are read and results written one at a time (:meth:`Executor.imap`), so
this process holds one member's checkpoints, not the family's (on Ray, the items wait in Ray's
object store).

Every member is re-initialised (``init="scratch"``, its seed) and trained with the same recipe
(:class:`~hwprune.recover.RecoverConfig`: ``epochs`` each, or Scratch-B's budget of the unpruned
model's computation), so a member's result does not depend on where it ran -- except that torch
sums gradients in an order set by its thread count: a Ray worker gives the local run's numbers
with ``worker_threads`` equal to the local thread count (see :mod:`hwprune.executor`).

Writes ``DIR/trained/<member>/trained.pt`` and ``report.json`` (as ``hwprune train`` does), all
members whole or none (:func:`~hwprune.outdir.staged_output_dir`), adds each member's top-1 to
``DIR/family.json`` (``top1``, ``train_seconds``, ``trained``) and draws ``DIR/family_accuracy.png``
(top-1 against predicted latency, or FLOPs, per family).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

TRAINED = "trained"  # the members' trained checkpoints: DIR/trained/<member>/


@dataclass(frozen=True)
class FamilyTraining:
    """How each member is trained: ``recipe`` (a :class:`~hwprune.recover.RecoverConfig` with
    ``init="scratch"``; its ``out``, ``resume`` and ``progress`` are the family's business, not
    the member's) on ``data`` (a data spec; ``batch_size``, ``n_train``, ``n_val`` as ``hwprune
    train`` takes them, drawn with the recipe's seed)."""

    data: str
    recipe: Any
    batch_size: int = 64
    n_train: int = 5000
    n_val: int = 1000

    def __post_init__(self):
        if self.recipe.init != "scratch":
            raise ConfigError(f"family members train from scratch: the recipe's init is {self.recipe.init!r}, "
                              "not 'scratch'")

    def recover_config(self):
        """The recipe as each member runs it: in memory (the family writes the files), quietly."""
        return dataclasses.replace(self.recipe, out=None, resume=False, progress=False)

    def make_data(self, input_size: int):
        from .data import make_data

        return make_data(self.data, input_size=input_size, batch_size=self.batch_size, seed=self.recipe.seed,
                         n_train=self.n_train, n_val=self.n_val)

    def to_dict(self) -> dict[str, Any]:
        r = self.recipe
        return {"data": self.data, "batch_size": self.batch_size, "n_train": self.n_train, "n_val": self.n_val,
                **{k: getattr(r, k) for k in ("init", "epochs", "scratch_b", "base_epochs", "lr", "schedule",
                                              "weight_decay", "seed")}}


def train_member(training: FamilyTraining, item: tuple[str, bytes]) -> dict[str, Any]:
    """One work item: train member ``item = (name, checkpoint bytes)`` from scratch; returns its
    report (a dict) and the trained checkpoint's bytes. A pure function of its arguments."""
    from .checkpoint import save_checkpoint
    from .models import load_model
    from .recover import recover

    name, ckpt = item
    with tempfile.TemporaryDirectory(prefix="hwprune-member-") as d:
        src = os.path.join(d, f"{name}.pt")
        with open(src, "wb") as f:
            f.write(ckpt)
        loaded = load_model(src)
        result = recover(loaded, training.make_data(loaded.input_size), training.recover_config())
        out = os.path.join(d, "trained.pt")
        save_checkpoint(out, result.model, result.plan, meta=result.meta)
        with open(out, "rb") as f:
            trained = f.read()
    return {"member": name, "report": result.report.to_dict(), "checkpoint": trained}


def family_members(folder: str) -> tuple[dict[str, Any], list[str]]:
    """``folder``'s family.json and the names of its members that have a checkpoint, in its order."""
    path = os.path.join(folder, "family.json")
    if not os.path.isfile(path):
        raise ConfigError(f"{folder!r} holds no family.json: build the family first (hwprune family --plan P "
                          "--budgets B --out DIR)")
    with open(path) as f:
        summary = json.load(f)
    names = [m["name"] for m in summary["members"] if os.path.isfile(os.path.join(folder, f"{m['name']}.pt"))]
    if not names:
        raise ConfigError(f"the family in {folder!r} has no member checkpoints to train: build it without "
                          "--no-checkpoints")
    return summary, names


def train_family(folder: str, training: FamilyTraining, executor=None) -> list[dict[str, Any]]:
    """Train every member of the family in ``folder`` from scratch on ``executor`` (default: this
    process); write ``folder/trained/`` whole and the members' top-1 into ``folder/family.json``.
    Returns one row per member: ``member``, ``top1``, ``epochs``, ``seconds``, ``trained``."""
    from .executor import LocalExecutor
    from .jsonio import atomic_write_bytes, write_json
    from .outdir import staged_output_dir

    summary, names = family_members(folder)

    def items():  # read as the executor asks: one member in memory at a time here, all at once only on Ray
        for name in names:
            with open(os.path.join(folder, f"{name}.pt"), "rb") as f:
                yield name, f.read()

    executor = executor or LocalExecutor()
    rows = []
    with staged_output_dir(os.path.join(folder, TRAINED)) as work:
        for r in executor.imap(train_member, items(), shared=training):  # each written, then dropped
            os.makedirs(os.path.join(work, r["member"]))
            atomic_write_bytes(os.path.join(work, r["member"], "trained.pt"), r["checkpoint"])
            write_json(os.path.join(work, r["member"], "report.json"), r["report"])
            rep = r["report"]
            rows.append({"member": r["member"], "top1": rep["accuracy"]["after"], "epochs": rep["epochs"],
                         "seconds": rep["seconds"], "trained": os.path.join(TRAINED, r["member"], "trained.pt")})
    by_name = {r["member"]: r for r in rows}
    for m in summary["members"]:
        if m["name"] in by_name:
            r = by_name[m["name"]]
            m.update(top1=r["top1"], train_seconds=r["seconds"], trained=r["trained"])
    summary["training"] = training.to_dict()
    summary["training"]["executor"] = executor.name
    write_json(os.path.join(folder, "family.json"), summary)
    plot_trained(summary, os.path.join(folder, "family_accuracy.png"))
    return rows


def plot_trained(summary: dict[str, Any], path: str) -> str:
    """Each trained member's top-1 against its predicted latency (its FLOPs when the family was
    built without a latency table), one line per family: the copycat family against the uniform
    one at the same cost. The x axis is the table's prediction, not a measurement: bench the
    trained checkpoints (``hwprune bench``) for measured latency."""
    from .family_plots import plot_accuracy_vs_latency

    trained = [m for m in summary["members"] if m.get("top1") is not None]
    by_ms = all(m.get("predicted_ms") is not None for m in trained)
    points = [{"family": m["family"], "latency_ms": m["predicted_ms"] if by_ms else m["flops"] / 1e6,
               "top1": 100 * m["top1"], "label": m["budget"]} for m in trained]
    return plot_accuracy_vs_latency(points, path, title="family members trained from scratch",
                                    xlabel="predicted latency (ms, latency table)" if by_ms else "MFLOPs")
