"""Executors: where independent work items of a search run (issue #20).

A search that scores many candidates -- evolution's population, NetAdapt's proposals -- hands
them to an executor as a list; one small interface covers running them here or on a Ray cluster:

    ex = make_executor("local")                           # in this process, in order (the default)
    ex = make_executor("ray", address="auto")             # Ray tasks, one CPU each
    results = ex.map(fn, items, shared=payload)           # [fn(payload, item) for item in items]
    for r in ex.imap(fn, items, shared=payload): ...      # the same, one result at a time

``fn`` must be a module-level function (Ray pickles it by reference). ``shared`` is what every item
needs (the unpruned model, calibration data, the evaluator, the seed): Ray puts it in its object
store once per map and each task gets the same bytes. Items carry only what differs (a plan and
how to score it). Results come back in the order of ``items``, so a search is identical whatever
executes it -- each evaluation is a pure function of (shared, item); see :func:`evaluate_candidate`.

Ray is optional (``pip install 'hwprune[ray]'``) and imported only when asked for. Each Ray task
sets ``torch.set_num_threads(worker_threads)`` (default 1) and holds that many CPUs, so that N
workers on N cores do not each start a thread per core and fight over them. A task whose worker
dies is re-run by Ray (``max_retries``), so a killed worker costs time, not the search.

One limit of "identical": a score that *trains* (NetAdapt's short fine-tune) sums gradients in an
order that depends on torch's thread count, so with workers on another thread count than the local
run the scores differ in the last bits and, now and then, a different proposal wins (seen: netadapt
with 10 fine-tune steps, 2 local threads against 1 per worker). Inference-only scores (fidelity,
adaptive BN) and least-squares reconstruction gave the same plans. :func:`thread_mismatch` says
when a search is in that case; ``--worker-threads`` equal to the local thread count gives the
local plan.
"""
from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

from .errors import ConfigError

RAY_HINT = "pip install 'hwprune[ray]'"


class Executor:
    """Runs ``fn(shared, item)`` for every item and returns the results in item order."""

    name = "local"

    def imap(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], shared: Any = None) -> Iterator[Any]:
        """The results one at a time, in item order. ``items`` may be a generator: an executor
        draws from it only as it can run them, and the caller may drop each result once used, so
        work whose items or results are large (a family's checkpoints) holds only what is in
        flight instead of every item and every result at once."""
        raise NotImplementedError

    def map(self, fn: Callable[[Any, Any], Any], items: Iterable[Any], shared: Any = None) -> list[Any]:
        return list(self.imap(fn, items, shared))

    def close(self) -> None:
        """Release what the executor started (a Ray runtime it initialised itself)."""


class LocalExecutor(Executor):
    """In this process, one item after another."""

    name = "local"

    def imap(self, fn, items, shared=None):
        for item in items:  # the next item is drawn only after the last result was taken
            yield fn(shared, item)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--executor ray needs Ray, which is not installed here: {RAY_HINT} "
                          "(or leave --executor at local)") from None
    return ray


def _check_answers(address: str, timeout: float = 3.0) -> None:
    """A HOST:PORT that does not accept a connection fails now, with the address, not after Ray's
    own minute-long retries."""
    host, _, port = address.rpartition(":")
    if address.startswith("ray://"):
        host, _, port = address[len("ray://"):].rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--ray-address {address!r}: write auto (a cluster started on this machine with `ray start "
                          "--head`) or HOST:PORT of its head node, e.g. 10.0.0.5:6379")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ConfigError(f"Ray address {address} does not answer ({e.strerror or e}); start the cluster's head "
                          f"there (`ray start --head --port {port}`), fix the address, or use --executor local") from None


_PAYLOADS: dict[str, Any] = {}  # in a Ray worker process: the payload it last deserialised, by token


def _run_task(fn, token: str, boxed_ref: list, item, threads: int):
    """What one Ray task runs: pin torch's threads, then ``fn(shared, item)``.

    The shared payload arrives as its object ref inside a list (``boxed_ref``), which Ray leaves
    unresolved, and is fetched and deserialised only when this worker process has not already done
    so for ``token`` (one upload of the payload). Ray resolves a top-level ref argument afresh for
    every task, and deserialising an unpruned resnet18 and its evaluator (50 MB) costs about 0.05 s,
    a sixth of scoring one candidate. A worker keeps one payload, so its memory stays that of one
    copy; ``fn`` must not change ``shared`` (the local executor shares one object the same way)."""
    import torch

    torch.set_num_threads(threads)
    if token not in _PAYLOADS:
        import ray

        shared = ray.get(boxed_ref[0])
        _PAYLOADS.clear()
        _PAYLOADS[token] = shared
    return fn(_PAYLOADS[token], item)


class RayExecutor(Executor):
    """Ray tasks (``worker_threads`` CPUs each, 1 by default), results gathered in item order.

    ``address``: None joins a Ray runtime this process already initialised (``ray.init`` in a test or
    a notebook) or starts a local one; ``"auto"`` joins the cluster started on this machine with
    ``ray start --head``; ``HOST:PORT`` the head node there (checked to answer first)."""

    name = "ray"

    def __init__(self, address: Optional[str] = None, worker_threads: int = 1, max_retries: int = 3):
        ray = _import_ray()
        self.worker_threads, self.max_retries = int(worker_threads), int(max_retries)
        self._started = False
        if address not in (None, "auto"):
            _check_answers(address)  # even with a runtime up here: an address that does not answer is a mistake
        if not ray.is_initialized():
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False,
                         ignore_reinit_error=True)
            except ConnectionError as e:
                raise ConfigError(f"cannot join Ray at {address or 'a new local cluster'}: {e}. Start one with "
                                  "`ray start --head`, pass --ray-address HOST:PORT, or use --executor local") from None
            self._started = True
        self._ray = ray
        biggest = max((n.get("Resources", {}).get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=0)
        if self.worker_threads > biggest:  # Ray would wait forever for a node that fits the task
            self.close()
            raise ConfigError(f"--worker-threads {self.worker_threads}: each Ray task holds that many CPUs, and the "
                              f"largest node of this cluster has {biggest:g}; pass --worker-threads {max(1, int(biggest))} "
                              "or fewer")
        # a task holds as many CPUs as it runs threads, so Ray never packs more threads than cores on a node
        self._remote = ray.remote(num_cpus=self.worker_threads, max_retries=self.max_retries)(_run_task)
        self._shared_obj, self._shared_ref, self._shared_token = None, None, None

    def imap(self, fn, items, shared=None):
        """Submits every item at once (they run in parallel): Ray copies each argument into its
        object store, so the caller's copy of an item can go as soon as it is submitted. A result
        reaches this process when it is asked for and is not kept here after it is yielded."""
        ray = self._ray
        refs = []
        for item in items:
            if not refs and (self._shared_ref is None or self._shared_obj is not shared):
                # one upload per payload, kept (with the object, so its identity is not reused) for the next map
                self._shared_obj, self._shared_ref = shared, ray.put(shared)
                self._shared_token = uuid.uuid4().hex
            refs.append(self._remote.remote(fn, self._shared_token, [self._shared_ref], item, self.worker_threads))
        item = None  # noqa: F841 -- the last item too is Ray's to keep, not this generator's
        for i in range(len(refs)):
            ref, refs[i] = refs[i], None
            yield ray.get(ref)

    def close(self) -> None:
        self._shared_obj, self._shared_ref, self._shared_token = None, None, None  # the payload's object-store copy can go
        if self._started:
            self._ray.shutdown()
            self._started = False


def thread_mismatch(executor: Executor, finetune_steps: int) -> Optional[str]:
    """Why this search's scores may differ from a local run's, or None: candidates that are
    fine-tuned (``finetune_steps`` > 0) on Ray workers running another number of torch threads than
    this process (see the module doc)."""
    if not finetune_steps or getattr(executor, "name", "local") != "ray":
        return None
    import torch

    here = torch.get_num_threads()
    if executor.worker_threads == here:
        return None
    return (f"candidates are fine-tuned on Ray workers with {executor.worker_threads} torch thread(s) where a local "
            f"run uses {here}: gradients are summed in another order, so scores can differ in the last bits and the "
            f"plan from a local run's; pass --worker-threads {here} for the local plan")


def check_executor(name: str, address: Optional[str] = None) -> None:
    """What :func:`make_executor` would refuse, checked before any work: Ray missing, an address
    that does not answer (the CLI calls this before loading the model)."""
    if name == "ray":
        _import_ray()
        if address not in (None, "auto"):
            _check_answers(address)


def make_executor(name: str = "local", address: Optional[str] = None, worker_threads: int = 1) -> Executor:
    """The executor called ``name`` (``local`` or ``ray``); see the module doc."""
    if name == "local":
        if address is not None:
            raise ConfigError(f"--ray-address {address} needs --executor ray")
        return LocalExecutor()
    if name == "ray":
        return RayExecutor(address, worker_threads)
    raise ConfigError(f"executor {name!r} is unknown; use local (default) or ray")


# ------------------------------------------------------------------ evaluation work items

@dataclass
class EvalShared:
    """What every candidate evaluation of one search shares: the unpruned model, the calibration
    batches, the evaluator and the seed of short fine-tunes."""

    model: Any
    calib: Any
    evaluator: Any
    seed: int = 0


def evaluate_candidate(shared: EvalShared, item) -> float:
    """Score one candidate: cut ``plan`` out of the unpruned model, optionally reconstruct its kept
    weights by least squares and/or fine-tune it ``finetune_steps`` steps (seeded), then run the
    evaluator. ``item`` = (plan, reconstruct, finetune_steps). A pure function of its inputs, which
    is what makes Ray's results the local ones."""
    from .plan import apply

    plan, reconstruct, finetune_steps = item
    model = apply(shared.model, plan)
    if reconstruct:
        if shared.calib is None:
            raise ConfigError("reconstruction needs calibration data: pass --data")
        from .evaluate import reconstruct_  # least squares (EAPruning / He et al. 2017), as search.reconstruct_model

        reconstruct_(model, shared.model, shared.calib, 4)
    if finetune_steps:
        from .strategies._common import short_finetune

        short_finetune(model, shared.calib, finetune_steps, seed=shared.seed)
    return float(shared.evaluator(model))
