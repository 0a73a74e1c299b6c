"""What the benchmark scripts share: device sync, timing with medians, peak memory, the U-Net arguments.

The scripts run as ``python benchmarks/<script>.py``, so this folder is on ``sys.path`` and they
import this module as ``_common``.

- :func:`sync`, :func:`call_seconds`, :func:`median_seconds`: wall time of a step, synchronised
  with the GPU, and the median over repeats (machine load on a shared CPU makes means noisy).
- :func:`current_rss_bytes`, :func:`peak_rss_bytes`, :func:`reset_peak_rss`: this process's
  resident memory and its peak (``VmHWM``), for CPU memory measured in a fresh subprocess;
  :func:`cuda_peak_mib`: the growth of CUDA's peak allocated memory over one call.
- :func:`add_unet_arguments`, :func:`unet_overrides`, :func:`add_device_arguments`,
  :func:`autocast`: the frozen 2D U-Net's preset and overrides, the device and the autocast dtype.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch

# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def sync(device: torch.device | None) -> None:
    """Wait for the GPU's queued work (no-op elsewhere): a step's time must include its kernels."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def call_seconds(step: Callable[[], Any], device: torch.device | None = None) -> float:
    """Wall seconds of one ``step()``, synchronised with the device before and after."""
    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - start


def median_seconds(step: Callable[[], Any], reps: int, device: torch.device | None = None, warmup: int = 1) -> float:
    """Median wall seconds of ``step()`` over ``reps`` calls, after ``warmup`` untimed calls
    (allocator, kernel selection)."""
    for _ in range(warmup):
        step()
    return statistics.median(call_seconds(step, device) for _ in range(reps))


# ----------------------------------------------------------------------------------------------
# Memory
# ----------------------------------------------------------------------------------------------


def current_rss_bytes() -> int:
    """This process's resident set size now (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: ru_maxrss also keeps the parent's RSS at
    fork/exec time, which would hide the child's own peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def reset_peak_rss() -> None:
    """Reset the peak-RSS mark to the current RSS (Linux >= 4.0), so that earlier peaks (imports,
    building the model) do not count; elsewhere nothing happens."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def cuda_peak_mib(device: torch.device, fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()``'s result and the growth of CUDA's peak allocated memory (MiB) while it ran; NaN off CUDA."""
    if device.type != "cuda":
        return fn(), float("nan")
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    result = fn()
    sync(device)
    return result, (torch.cuda.max_memory_allocated(device) - before) / 2**20


# ----------------------------------------------------------------------------------------------
# Arguments: the frozen 2D U-Net, the device and the autocast dtype
# ----------------------------------------------------------------------------------------------


def add_unet_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--block-out-channels``, ``--layers-per-block`` and ``--size`` of the 2D U-Net."""
    parser.add_argument("--preset", default="if_stage1_demo")
    parser.add_argument("--block-out-channels", default="", help="override the preset's widths, e.g. 128,256,384,512")
    parser.add_argument("--layers-per-block", type=int, default=0, help="override the preset's depth (0: keep)")
    parser.add_argument("--size", type=int, default=32, help="frame height and width")


def unet_overrides(args: argparse.Namespace) -> dict:
    """Config overrides of the preset from the command line (widths, depth)."""
    overrides = {"sample_size": args.size}
    if args.block_out_channels:
        overrides["block_out_channels"] = tuple(int(c) for c in args.block_out_channels.split(","))
    if args.layers_per_block:
        overrides["layers_per_block"] = args.layers_per_block
    return overrides


def add_device_arguments(parser: argparse.ArgumentParser, dtype: str = "fp32") -> None:
    """``--device`` (default: the GPU when there is one) and ``--dtype`` (bf16: autocast, float32 weights)."""
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default=dtype, help="bf16: autocast, float32 weights")


def autocast(device: torch.device, dtype: str):
    """bf16 autocast (as ``trainer.precision=bf16-mixed``) or nothing for fp32."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
