"""The benchmark scripts that tests can afford: the GPU script's packed path on a tiny CPU model."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT


def test_gpu_scoring_script_packed_equals_naive_on_cpu():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_scoring.py"), "--smoke"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tiny: packed == naive" in r.stdout
