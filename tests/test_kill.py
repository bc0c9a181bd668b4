"""Hard kills (SIGKILL: no cleanup runs) at random points never leave a half-written table, and
leave nothing behind in the system temp; a killed writer's temp file is swept by the next write."""
import json
import os
import random
import signal
import subprocess
import sys
import time

from hwprune.latency import LatencyTable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ours(tmp) -> list[str]:
    """hwprune's entries in a temp folder (torch and onnx keep caches of their own there)."""
    return [p.name for p in tmp.iterdir() if "hwprune" in p.name or p.name.startswith(".tmp-")]


def _kill_after(args, delay: float, env: dict) -> int:
    """Run, SIGKILL after ``delay`` s; returns the process id."""
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=env)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return proc.pid


def test_a_dead_measurements_profile_folder_is_swept(tmp_path):
    from hwprune_deploy.runner import _SWEPT, _sweep_dead_profiles

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / f"hwprune-prof-{dead.pid}-abc123").mkdir()
    (tmp_path / f"hwprune-prof-{os.getpid()}-def456").mkdir()  # a live process's (ours): kept
    (tmp_path / "hwprune-q8-xyz").mkdir()  # not a profile folder: kept
    _SWEPT.discard(str(tmp_path))
    _sweep_dead_profiles(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"hwprune-prof-{os.getpid()}-def456", "hwprune-q8-xyz"])


def test_profile_killed_at_random_points_leaves_a_whole_table_and_no_temp(tmp_path):
    tmp = tmp_path / "systemtmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    out = tmp_path / "t.json"
    args = [sys.executable, "-m", "hwprune", "profile", "--model", "tiny_resnet", "--input-size", "16", "--quick",
            "--no-progress", "--out", str(out)]
    rng = random.Random(7)
    killed: list[int] = []
    for delay in sorted(rng.uniform(1.5, 9.0) for _ in range(4)):
        before = out.read_bytes() if out.exists() else None
        pid = _kill_after(args + (["--resume"] if before is not None else []), delay, env)
        if out.exists():
            LatencyTable.load(str(out))  # a complete, loadable table: the old one or a newer checkpoint
        # SIGKILL skips every cleanup: between creating ORT's profile folder and unlinking the file in
        # it (a few ms per session) a kill can leave that one folder, named with the killed pid, which
        # the next run sweeps (asserted at the end); anything else left is a bug
        killed.append(pid)
        left = [n for n in _ours(tmp) if not any(n.startswith(f"hwprune-prof-{k}-") for k in killed)]
        assert left == [], f"temp left after a kill at {delay:.1f} s: {_ours(tmp)}"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    # one more (complete) run sweeps a killed writer's temp file, if a kill hit a write, and a killed
    # measurement's profile folder
    resume = out.exists() and LatencyTable.load(str(out)).in_progress
    subprocess.run(args + ["--resume"] if resume else args, cwd=ROOT, env=env, check=True, capture_output=True,
                   timeout=600)
    LatencyTable.load(str(out))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == [], leftovers
    assert _ours(tmp) == []


_WRITER = """
import sys
from hwprune.latency import LatencyTable
from hwprune.latency.units import UnitFamily
from hwprune.latency.table import Family
path = sys.argv[1]
tables = []
for v in (1.0, 2.0):
    t = LatencyTable({"cpu": "test"}, "ort-cpu")
    for i in range(300):  # ~2 MB of JSON: a write takes long enough to be hit
        spec = UnitFamily("conv", 8 + i, 8 + i, act="relu")
        pts = {f"{a},{b}": v * (a + b) for a in range(8, 264, 16) for b in range(8, 264, 16)}
        t.families[spec.key] = Family(spec, list(range(8, 264, 16)), list(range(8, 264, 16)), pts, {}, {})
    tables.append(t)
import json
from hwprune.jsonio import atomic_write_bytes
docs = [json.dumps(t.to_dict()).encode() for t in tables]  # what LatencyTable.save writes, serialised once
tables[0].save(path)
print("ready", flush=True)
i = 0
while True:  # nothing but writes: a kill lands inside one almost every time
    atomic_write_bytes(path, docs[i % 2])
    i += 1
"""


def test_table_write_killed_mid_write_is_old_or_new_never_half(tmp_path):
    out = tmp_path / "t.json"
    rng = random.Random(3)
    seen, hit = set(), 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        hit += any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # killed inside a write
        doc = json.loads(out.read_text())  # never half a file
        seen.add(next(iter(doc["families"].values()))["points"]["8,8"])
        t = LatencyTable.load(str(out))
        assert len(t.families) == 300
    assert seen <= {16.0, 32.0} and hit >= 1  # the test did kill writers mid-write
    # a killed writer's temp file (if the kill hit a write) is removed by the next save
    LatencyTable.load(str(out)).save(str(out))
    assert [p.name for p in tmp_path.iterdir()] == ["t.json"]
