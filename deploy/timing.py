"""The measurement protocol every hwprune latency figure follows.

Warm up, repeat, report the median with a spread (IQR and p10/p90), and record the protocol
next to the numbers. Each repeat times ``inner`` calls and divides, so very short units are not
dominated by timer resolution; the host clock (perf_counter_ns) is used only for host backends
(CUDA backends time with device events instead).
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

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


#: default number of full passes over the models when a whole model's latency is checked
#: (``hwprune.latency.measure.Measurer.models``, ONNX-file bench)
MODEL_PASSES = 4
#: a model faster than this (ms, the p10 of its fastest half of passes) ...
FAST_MS = 4.0
#: ... gets this many passes in all: a 2 ms model's readings move far more with the machine's state
FAST_PASSES = 8


def mean_timing(*ts: Timing) -> Timing:
    """Readings of one model pooled field by field (their repeats add up)."""
    n = len(ts)
    return Timing(sum(t.median_ms for t in ts) / n, sum(t.p10_ms for t in ts) / n, sum(t.p90_ms for t in ts) / n,
                  sum(t.iqr_ms for t in ts) / n, sum(t.repeats for t in ts), ts[0].inner)


def fastest_half(history: Sequence[Timing]) -> Timing:
    """The mean of the fastest half of a model's passes (by p10, the statistic latency budgets
    use; at least two), field by field: the two fastest of 2-5 passes, 3 of 6, 4 of 8. One pass
    is returned as it is. Why this estimator: ``hwprune.latency.measure.Measurer.models``."""
    v = sorted(history, key=lambda t: t.p10_ms)
    return v[0] if len(v) == 1 else mean_timing(*v[:max(2, len(v) // 2)])


def summarize_ms(samples_ms) -> Timing:
    a = np.asarray(samples_ms, dtype=float)
    q10, q25, q50, q75, q90 = np.percentile(a, [10, 25, 50, 75, 90])
    return Timing(float(q50), float(q10), float(q90), float(q75 - q25), len(a), 1)


def _calls_per_repeat(fn: Callable[[], object], min_repeat_ms: float) -> int:
    """Time one call of (warmed-up) ``fn``: how many calls make a repeat of ``min_repeat_ms``."""
    t0 = time.perf_counter_ns()
    fn()
    once_ms = max((time.perf_counter_ns() - t0) / 1e6, 1e-4)
    return max(1, int(np.ceil(min_repeat_ms / once_ms)))


def _repeat_ms(fn: Callable[[], object], inner: int) -> float:
    """One repeat: ``inner`` back-to-back calls, per-call milliseconds."""
    t0 = time.perf_counter_ns()
    for _ in range(inner):
        fn()
    return (time.perf_counter_ns() - t0) / 1e6 / inner


def _timings(samples: dict[str, list[float]], inners: dict[str, int]) -> dict[str, Timing]:
    out = {}
    for name, s in samples.items():
        t = summarize_ms(s)
        out[name] = Timing(t.median_ms, t.p10_ms, t.p90_ms, t.iqr_ms, t.repeats, inners[name])
    return out


def measure(fn: Callable[[], object], protocol: Protocol = Protocol()) -> Timing:
    """Time ``fn`` per the protocol; returns per-call statistics in milliseconds."""
    for _ in range(protocol.warmup):
        fn()
    inner = _calls_per_repeat(fn, protocol.min_repeat_ms)
    return _timings({"fn": [_repeat_ms(fn, inner) for _ in range(protocol.repeats)]}, {"fn": inner})["fn"]


def measure_interleaved(fns: dict[str, Callable[[], object]], protocol: Protocol = Protocol()) -> dict[str, Timing]:
    """Time several callables side by side: repeats alternate between them, so a noisy
    neighbour or frequency change hits all of them alike and their ratio stays fair."""
    inners = {}
    for name, fn in fns.items():
        for _ in range(protocol.warmup):
            fn()
        inners[name] = _calls_per_repeat(fn, protocol.min_repeat_ms)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(protocol.repeats):
        for name, fn in fns.items():
            samples[name].append(_repeat_ms(fn, inners[name]))
    return _timings(samples, inners)


def measure_interleaved_fresh(makers: dict[str, Callable[[], Callable[[], object]]],
                              protocol: Protocol = Protocol()) -> dict[str, Timing]:
    """:func:`measure_interleaved` for runners that must not be alive together (ORT sessions whose
    worker threads spin after a run and take the CPU from the one being timed): each repeat asks
    ``makers[name]()`` for a fresh runner, warms it up (at least one call), times one repeat and
    drops it before the next model's. Repeats still alternate between models."""
    inners: dict[str, int] = {}
    samples: dict[str, list[float]] = {k: [] for k in makers}
    for _ in range(protocol.repeats):
        for name, make in makers.items():
            fn = make()
            for _ in range(max(1, protocol.warmup)):
                fn()
            if name not in inners:
                inners[name] = _calls_per_repeat(fn, protocol.min_repeat_ms)
            samples[name].append(_repeat_ms(fn, inners[name]))
            del fn
    return _timings(samples, inners)


def parse_batches(spec: "str | Sequence[int] | int") -> tuple[int, ...]:
    """'1,8,32' -> (1, 8, 32), duplicates dropped; a non-integer or non-positive entry is a
    ValueError naming it (``hwprune.bench.parse_batches`` raises it as a ConfigError)."""
    if isinstance(spec, int):
        items = [spec]
    elif isinstance(spec, str):
        items = [s.strip() for s in spec.split(",")]
    else:
        items = list(spec)
    out = []
    for s in items:
        try:
            if isinstance(s, float) or (isinstance(s, str) and not s.lstrip("+").isdigit()):
                raise ValueError
            b = int(s)
        except (TypeError, ValueError):
            raise ValueError(f"batch size {s!r} in batch list {spec!r} is not an integer; "
                             "give comma-separated positive integers, e.g. --batch 1,8,32") from None
        if b < 1:
            raise ValueError(f"batch size {b} in batch list {spec!r} must be >= 1")
        out.append(b)
    if not out:
        raise ValueError(f"batch list {spec!r} is empty; e.g. --batch 1,8,32")
    return tuple(dict.fromkeys(out))
