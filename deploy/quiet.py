"""Time only while the host is in its quiet state (shared VMs). Torch-free.

Measured on the 2-vCPU EPYC VM this project is developed on (ORT 1.32, 2 intra-op threads, no
spinning): the cost of handing work to ORT's second thread switches between two levels, and each
level lasts from under a second to tens of seconds. In the slow level a chain of twenty 1x1
convs (64 channels, 14x14) takes 33% longer, a 0.3x-pruned resnet18 13% longer and the full
resnet18 3.5% longer -- so the slow level is not a common factor that side-by-side ratios
cancel: it bends the staircase, and a table measured in one level mispredicts variants measured
in the other by 5-8% at the heavily pruned end. (One thread shows nothing of the kind: the
ratio of the same two models varied by 0.2% over twelve fresh sessions.)

:class:`QuietGate` tells the two levels apart with that probe chain (a few ms per reading) and
lets the interleaved timers keep only *repeat rounds* with a quiet reading before and after them
(:func:`hwprune_deploy.timing.measure_interleaved`). Quiet means within ``tol`` of the fastest
reading seen so far in this process. A wait that finds no quiet reading within ``max_wait_s``
re-bases the level to the best reading of that wait (a machine that stays slower is measured as
it is, not waited on forever) and is counted in :attr:`QuietGate.stats`, which profiles and
validations record next to their numbers. On a dedicated machine every reading is quiet and the
gate costs one probe per round.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Optional

#: readings within this fraction of the quiet level count as quiet (the slow level is ~+30%)
QUIET_TOL = 0.12
#: longest wait for a quiet reading before the level is re-based (seconds); env HWPRUNE_QUIET_MAX_WAIT
MAX_WAIT_S = 60.0
#: how tables and reports describe the gate
QUIET_GATE_TEXT = (f"repeat rounds kept only with the host in its quiet state: a probe (twenty 1x1 convs, 64 channels, "
                   f"14x14, fastest of 8 calls) after each round within {int(QUIET_TOL * 100)}% of its fastest reading "
                   f"(hwprune_deploy.quiet)")


class QuietGate:
    """See the module doc. ``probe``: a zero-arg callable whose time tracks the host's state
    (:func:`ort_gate` builds the standard one)."""

    def __init__(self, probe: Callable[[], object], tol: float = QUIET_TOL, max_wait_s: Optional[float] = None,
                 calls: int = 8, settle_s: float = 1.0):
        if not 0 < tol < 1:
            raise ValueError(f"tol {tol} must be in (0, 1), e.g. {QUIET_TOL}")
        self.probe, self.tol, self.calls = probe, float(tol), int(calls)
        if max_wait_s is None:
            max_wait_s = float(os.environ.get("HWPRUNE_QUIET_MAX_WAIT", MAX_WAIT_S))
        self.max_wait_s = float(max_wait_s)
        self.level = math.inf
        self.stats = {"readings": 0, "rounds_kept": 0, "rounds_dropped": 0, "waits": 0, "waited_s": 0.0,
                      "timeouts": 0}
        for _ in range(3):
            probe()
        t_end = time.perf_counter() + settle_s  # a first look at the level before anything is timed
        while time.perf_counter() < t_end:
            self.reading()

    def reading(self) -> float:
        """One probe reading (ms): the fastest of ``calls`` back-to-back calls; lowers the level."""
        best = math.inf
        for _ in range(self.calls):
            t0 = time.perf_counter_ns()
            self.probe()
            best = min(best, (time.perf_counter_ns() - t0) / 1e6)
        self.stats["readings"] += 1
        self.level = min(self.level, best)
        return best

    def quiet(self) -> bool:
        """Is the host in its quiet state now (one reading)?"""
        return self.reading() <= self.level * (1 + self.tol)

    def wait(self) -> None:
        """Block until a quiet reading, or ``max_wait_s`` (then the level is re-based to the best
        reading of this wait: the machine's current state becomes the quiet one)."""
        t0 = time.perf_counter()
        self.stats["waits"] += 1
        best = math.inf
        while True:
            r = self.reading()
            if r <= self.level * (1 + self.tol):
                break
            best = min(best, r)
            if time.perf_counter() - t0 >= self.max_wait_s:
                self.level = best
                self.stats["timeouts"] += 1
                break
        self.stats["waited_s"] += time.perf_counter() - t0

    def record(self, kept: bool) -> None:
        self.stats["rounds_kept" if kept else "rounds_dropped"] += 1

    def summary(self) -> dict:
        """What a table or report records about the gate."""
        return {"tol": self.tol, "level_ms": round(self.level, 4), "max_wait_s": self.max_wait_s,
                **{k: round(v, 1) if isinstance(v, float) else v for k, v in self.stats.items()}}


_SHARED: dict = {}


def ort_gate(probe_onnx: bytes, threads: int) -> QuietGate:
    """The process-wide gate for ORT on ``threads`` intra-op threads (the level learnt by one
    measurement carries over to the next), probing with ``probe_onnx`` (see
    ``hwprune.latency.micro.probe_onnx``, shipped in bundles as ``probe.onnx``)."""
    key = (int(threads), hash(probe_onnx))
    if key not in _SHARED:
        from .ort import make_session, random_feed

        sess = make_session(probe_onnx, threads=threads)
        feed = random_feed(sess)
        _SHARED[key] = QuietGate(lambda: sess.run(None, feed))
    return _SHARED[key]


def gate_enabled() -> bool:
    """``HWPRUNE_QUIET_GATE=0`` turns gating off (e.g. to see the unfiltered machine)."""
    return os.environ.get("HWPRUNE_QUIET_GATE", "1") not in ("0", "false", "no", "off")
