"""The benchmark scripts that tests can afford: the GPU script's packed path on a tiny CPU model."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from conftest import ROOT


def test_gpu_scoring_script_packed_equals_naive_on_cpu():
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_scoring.py"), "--smoke"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tiny: packed == naive" in r.stdout


def test_gpu_core_script_runs_the_production_scorer_on_cpu():
    """benchmarks/gpu_core.py waits for a GPU machine; its smoke run keeps it working meanwhile."""
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_core.py"), "--smoke"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert '"packed_equals_per_pair_fp32": true' in r.stdout


def test_bench_quality_conf_loads_from_the_shipped_conf(tmp_path):
    """make bench-quality overrides conf/local.yaml into the fixed split: the result must be a valid conf (the
    shipped daily-mode candidate negatives once made it fail before any training)."""
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "benchmarks" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    cfg = quality.bench_conf(quality.parse_args([]), tmp_path)
    assert cfg.asof.mode == "split" and cfg.model.train.cf_negatives == 0
    assert cfg.model.train.cf_pairs == 8000 and cfg.model.signals
