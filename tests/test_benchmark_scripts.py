"""The GPU benchmark scripts run end to end on tiny CPU shapes (their numbers matter only on a GPU)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                            env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _load_bench_stunet():
    if str(ROOT / "benchmarks") not in sys.path:  # as when run as a script: its helpers (_common) sit beside it
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location("bench_stunet", ROOT / "benchmarks" / "bench_stunet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_stunet_runs_in_bf16_with_width_overrides():
    """Also the per-variant memory subprocesses, which must get the same overrides."""
    out = _run("bench_stunet.py", "--preset", "if_stage1_tiny", "--block-out-channels", "16,32,32", "--size", "16",
               "--frames", "8", "--reps", "1", "--threads", "1", "--dtype", "bf16")
    assert "dtype=bf16" in out and "'block_out_channels': (16, 32, 32)" in out
    assert "targets at 8 frames:" in out
    memory_ratio = next(line for line in out.splitlines() if "memory stunet / fixed_resolution" in line)
    assert "not measured" not in memory_ratio


def test_bench_stunet_reports_a_variant_out_of_memory_instead_of_failing():
    bench = _load_bench_stunet()

    def out_of_memory():
        raise torch.OutOfMemoryError("CUDA out of memory")

    assert bench._fits(out_of_memory, torch.device("cpu")) is False
    assert bench._fits(lambda: None, torch.device("cpu")) is True


@pytest.mark.slow
def test_check_sdpa_backends_runs_on_cpu():
    out = _run("check_sdpa_backends.py", "--device", "cpu", "--preset", "if_stage1_tiny", "--size", "16",
               "--frames", "8", "--reps", "1")
    assert "temporal attention block" in out
    math_row = next(line for line in out.splitlines() if line.strip().startswith("math "))
    assert math_row.split()[-1] == "0.00e+00"  # the reference agrees with itself
    assert "caption mask fwd+bwd" in out and "no mask" in out
