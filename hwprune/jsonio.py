"""Atomic, plain-JSON file writing: a reader never sees a half-written table, plan or report."""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_stale_temps(folder: str, name: str) -> None:
    """Remove temp files of ``name`` left by writers that were killed mid-write (SIGKILL runs no
    cleanup): their names carry the writer's pid, and a dead pid's file is never renamed."""
    prefix = f".tmp-{name}-"
    for entry in os.listdir(folder):
        if not entry.startswith(prefix):
            continue
        pid = entry[len(prefix):].split("-", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            try:
                os.unlink(os.path.join(folder, entry))
            except OSError:
                pass


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over ``path``: a reader or a
    kill sees the old file or the new one, never half of one. Temp files of earlier writers that
    were killed mid-write are removed first."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    name = os.path.basename(path)
    _sweep_stale_temps(folder, name)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{name}-{os.getpid()}-", dir=folder)
    try:
        # mkstemp creates 0600; files a user keeps or ships should get the usual umask-based mode
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)
