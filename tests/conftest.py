import os
import subprocess
import sys

import pytest
import torch

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args: str, check: bool = True, timeout: int = 600, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run the real ``hwprune`` CLI in a subprocess (same interpreter) and return the result."""
    proc = subprocess.run([sys.executable, "-m", "hwprune", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd or ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"hwprune {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def cli():
    return run_cli
