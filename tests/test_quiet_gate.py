"""The quiet gate (hwprune_deploy.quiet): repeat rounds timed while the host is in its slow
state are dropped and re-run; a host that stays slow is re-based to, not waited on forever.
The scripted probes below really sleep (1 ms quiet, 3 ms loud) so the gate's own timing is
exercised; the last tests use the real ORT probe on real sessions."""
import time

import pytest

from hwprune.latency.micro import probe_onnx, unit_onnx
from hwprune.latency.units import UnitFamily
from hwprune_deploy.quiet import QuietGate, ort_gate
from hwprune_deploy.runner import OrtRunnerFactory, measure_onnx_set
from hwprune_deploy.timing import Protocol, interleaved_rounds, measure_interleaved

P = Protocol(warmup=1, repeats=6, min_repeat_ms=0.1, statistic="p10")


class Host:
    """A host whose state follows a script in time: loud for ``t0 + start <= t < t0 + end``,
    with ``t0`` set by :meth:`start` (when timing begins)."""

    def __init__(self, start: float, end: float):
        self.window, self.t0 = (start, end), float("inf")

    def start(self):
        self.t0 = time.perf_counter()

    def loud(self) -> bool:
        t = time.perf_counter() - self.t0
        return self.window[0] <= t < self.window[1]

    def probe(self):
        time.sleep(0.003 if self.loud() else 0.001)

    def work(self):
        time.sleep(0.002 if self.loud() else 0.0005)


def run_rounds(host, gate, protocol=P):
    host.start()
    return interleaved_rounds({"fn": host.work}, protocol, gate)


def test_loud_rounds_are_dropped_and_rerun():
    # warm-up + inner probe call are rounds 0-1 of the counter; loud for timed rounds ~2..4
    host = Host(0.03, 0.12)
    gate = QuietGate(host.probe, tol=0.5, max_wait_s=5.0, settle_s=0.05)
    samples, inners, kept = run_rounds(host, gate)
    assert sum(kept) == P.repeats and len(kept) > P.repeats, kept
    assert gate.stats["rounds_dropped"] == len(kept) - P.repeats and gate.stats["timeouts"] == 0
    quiet = [s for s, k in zip(samples["fn"], kept) if k]
    loud = [s for s, k in zip(samples["fn"], kept) if not k]
    assert max(quiet) < min(loud)  # exactly the slow rounds went


def test_without_a_gate_every_round_counts():
    host = Host(0.0, 1.0)
    samples, inners, kept = run_rounds(host, None)
    assert kept == [True] * P.repeats


def test_a_host_that_stays_loud_is_rebased_not_waited_on_forever():
    host = Host(0.0, 1e9)  # quiet while the gate settles, loud from the moment timing starts
    gate = QuietGate(host.probe, tol=0.5, max_wait_s=0.2, settle_s=0.05)
    quiet_level = gate.level
    t0 = time.perf_counter()
    samples, inners, kept = run_rounds(host, gate)
    assert time.perf_counter() - t0 < 5
    assert gate.stats["timeouts"] >= 1 and gate.level > 2 * quiet_level  # the loud level became the norm
    assert sum(kept) == P.repeats


def test_gate_rejects_a_bad_tolerance():
    with pytest.raises(ValueError, match="tol 1.5"):
        QuietGate(lambda: None, tol=1.5)


def test_real_probe_gates_kernel_timed_units_and_wall_timed_models():
    gate = ort_gate(probe_onnx(), 2)
    assert gate is ort_gate(probe_onnx(), 2)  # one gate per process and thread count: the level carries over
    fam = UnitFamily("conv", 14, 14, act="relu")
    before = dict(gate.stats)
    units = measure_onnx_set({f"{c}": unit_onnx(fam, c, c) for c in (16, 32)}, OrtRunnerFactory(2, kernel_time=True),
                             P, gate=gate)
    assert all(t.repeats == P.repeats and t.p10_ms > 0 for t in units.values())
    assert units["16"].p10_ms < units["32"].p10_ms
    assert gate.stats["rounds_kept"] - before["rounds_kept"] == P.repeats
    wall = measure_interleaved({"probe": OrtRunnerFactory(2)(probe_onnx())}, P, gate=gate)["probe"]
    assert wall.repeats == P.repeats and wall.p10_ms >= gate.level * 0.8  # the probe itself, gated
    assert 0 < gate.summary()["level_ms"] < 50
