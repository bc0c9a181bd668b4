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


def measure_interleaved(fns: dict[str, Callable[[], object]], protocol: Protocol = Protocol()) -> dict[str, Timing]:
    """Time several callables side by side: repeats alternate between them, so a noisy
    neighbour or frequency change hits all of them alike and their ratio stays fair."""
    inners = {}
    for name, fn in fns.items():
        for _ in range(protocol.warmup):
            fn()
        t0 = time.perf_counter_ns()
        fn()
        once = max((time.perf_counter_ns() - t0) / 1e6, 1e-4)
        inners[name] = max(1, int(np.ceil(protocol.min_repeat_ms / once)))
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(protocol.repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter_ns()
            for _ in range(inners[name]):
                fn()
            samples[name].append((time.perf_counter_ns() - t0) / 1e6 / inners[name])
    out = {}
    for name, s in samples.items():
        t = summarize_ms(s)
        out[name] = Timing(t.median_ms, t.p10_ms, t.p90_ms, t.iqr_ms, t.repeats, inners[name])
    return out
