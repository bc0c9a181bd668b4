"""The measurement protocol every hwprune latency figure follows.

Warm up, repeat, report the median with a spread (IQR and p10/p90), and record the protocol
next to the numbers. Each repeat times ``inner`` calls and divides, so very short units are not
dominated by timer resolution; the host clock (perf_counter_ns) is used only for host backends
(CUDA backends time with device events instead).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Protocol:
    warmup: int = 10
    repeats: int = 30
    min_repeat_ms: float = 2.0  # each repeat runs enough inner calls to last at least this long
    statistic: str = "median"
    spread: str = "iqr,p10,p90"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Timing:
    median_ms: float
    p10_ms: float
    p90_ms: float
    iqr_ms: float
    repeats: int
    inner: int

    def to_dict(self) -> dict:
        return asdict(self)


def summarize_ms(samples_ms) -> Timing:
    a = np.asarray(samples_ms, dtype=float)
    q10, q25, q50, q75, q90 = np.percentile(a, [10, 25, 50, 75, 90])
    return Timing(float(q50), float(q10), float(q90), float(q75 - q25), len(a), 1)


def measure(fn: Callable[[], object], protocol: Protocol = Protocol()) -> Timing:
    """Time ``fn`` per the protocol; returns per-call statistics in milliseconds."""
    for _ in range(protocol.warmup):
        fn()
    t0 = time.perf_counter_ns()
    fn()
    once_ms = max((time.perf_counter_ns() - t0) / 1e6, 1e-4)
    inner = max(1, int(np.ceil(protocol.min_repeat_ms / once_ms)))
    samples = []
    for _ in range(protocol.repeats):
        t0 = time.perf_counter_ns()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter_ns() - t0) / 1e6 / inner)
    t = summarize_ms(samples)
    return Timing(t.median_ms, t.p10_ms, t.p90_ms, t.iqr_ms, t.repeats, inner)


def interleaved_rounds(fns: dict[str, Callable[[], object]], protocol: Protocol = Protocol(),
                       gate=None) -> tuple[dict[str, list[float]], dict[str, int], list[bool]]:
    """The rounds behind :func:`measure_interleaved`: per callable, the per-call ms of every
    round run (kept or not), the inner count, and which rounds were kept. With a ``gate``
    (:class:`hwprune_deploy.quiet.QuietGate`) a round is kept only if the host was quiet just
    before and just after it; rounds go on until ``protocol.repeats`` are kept (at most three
    times that many in all; if fewer were kept then, every round counts)."""
    inners = {}
    for name, fn in fns.items():
        for _ in range(protocol.warmup):
            fn()
        t0 = time.perf_counter_ns()
        fn()
        once = max((time.perf_counter_ns() - t0) / 1e6, 1e-4)
        inners[name] = max(1, int(np.ceil(protocol.min_repeat_ms / once)))
    samples: dict[str, list[float]] = {k: [] for k in fns}
    kept: list[bool] = []
    if gate is not None:
        gate.wait()
    max_rounds = protocol.repeats * (3 if gate is not None else 1)
    while sum(kept) < protocol.repeats and len(kept) < max_rounds:
        for name, fn in fns.items():
            t0 = time.perf_counter_ns()
            for _ in range(inners[name]):
                fn()
            samples[name].append((time.perf_counter_ns() - t0) / 1e6 / inners[name])
        quiet = gate.quiet() if gate is not None else True
        kept.append(quiet)  # quiet before it too: the first round waits, and so does any after a loud one
        if gate is not None:
            gate.record(quiet)
            if not quiet:
                gate.wait()
    if sum(kept) < min(3, protocol.repeats):
        kept = [True] * len(kept)
    return samples, inners, kept


def measure_interleaved(fns: dict[str, Callable[[], object]], protocol: Protocol = Protocol(),
                        gate=None) -> dict[str, Timing]:
    """Time several callables side by side: repeats alternate between them, so a noisy
    neighbour or frequency change hits all of them alike and their ratio stays fair. ``gate``:
    keep only rounds timed in the host's quiet state (see :func:`interleaved_rounds`)."""
    samples, inners, kept = interleaved_rounds(fns, protocol, gate)
    out = {}
    for name, s in samples.items():
        t = summarize_ms([v for v, k in zip(s, kept) if k])
        out[name] = Timing(t.median_ms, t.p10_ms, t.p90_ms, t.iqr_ms, t.repeats, inners[name])
    return out
