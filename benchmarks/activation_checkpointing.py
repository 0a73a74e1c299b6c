"""Memory saved and time spent by each activation-checkpointing policy of the STUNet (issue 21, item 2).

One STUNet (``--preset``, default the paper-shaped narrow IF stage I, four levels) and one training
step (forward + backward of a mean-square loss) per policy of ``lumiere.models.checkpointing``:
``none`` (the paper), ``spatial``, ``temporal``, ``all``.

- Peak memory: each policy runs one step in a fresh subprocess and reports the peak RSS growth
  over the RSS before it (``VmHWM``, its mark reset through ``/proc/self/clear_refs``), the median
  over ``--memory-repeats`` subprocesses (the C allocator's reuse makes single RSS peaks vary; a
  warm-up step in the same process would leave its freed memory resident and hide the growth); on
  CUDA, ``torch.cuda.max_memory_allocated`` growth after one warm-up step.
- Time: one model, the policy switched between steps, round-robin over ``--reps`` rounds so machine
  load hits every policy alike; the median per policy, and its ratio to ``none``.

    python benchmarks/activation_checkpointing.py --threads 1       # CPU: 32 frames, 64x64, batch 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch
from bench_stunet import make_step

from lumiere.models import STUNet, build_unet
from lumiere.models.checkpointing import CheckpointPolicy

from _common import (  # beside this script: the benchmarks' shared helpers
    add_device_arguments,
    add_unet_arguments,
    call_seconds,
    cuda_peak_mib,
    current_rss_bytes,
    peak_rss_bytes,
    reset_peak_rss,
    unet_overrides,
)

POLICIES = ("none", "spatial", "temporal", "all")


def build(args, device: torch.device, policy: str) -> STUNet:
    torch.manual_seed(0)
    unet = build_unet(args.preset, **unet_overrides(args)).to(device).eval().requires_grad_(False)
    return STUNet(unet, activation_checkpointing=policy).to(device)


def measure_memory_here(policy: str, args) -> float:
    """Peak memory growth (MiB) of one training step with ``policy``, in this process."""
    device = torch.device(args.device)
    step = make_step("stunet", build(args, device, policy), args.batch, args.frames, args.size, device, args.dtype)
    if device.type == "cuda":
        step()
        return cuda_peak_mib(device, step)[1]
    before = current_rss_bytes()
    reset_peak_rss()
    peak_before = peak_rss_bytes()
    step()
    peak_after = peak_rss_bytes()
    return (peak_after - before) / 2**20 if peak_after > peak_before else float("nan")


def measure_memory(policy: str, args) -> float:
    cmd = [sys.executable, __file__, "--memory-of", policy, "--frames", str(args.frames), "--size", str(args.size),
           "--batch", str(args.batch), "--preset", args.preset, "--threads", str(args.threads), "--device", args.device,
           "--dtype", args.dtype, "--block-out-channels", args.block_out_channels,
           "--layers-per-block", str(args.layers_per_block)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def measure_times(args) -> dict[str, float]:
    device = torch.device(args.device)
    model = build(args, device, "none")
    step = make_step("stunet", model, args.batch, args.frames, args.size, device, args.dtype)
    policies = {p: CheckpointPolicy.parse(p, len(model.down_temporal)) for p in POLICIES}
    samples = {p: [] for p in POLICIES}
    for round_ in range(args.reps + 1):  # round 0 warms up
        for name, policy in policies.items():
            model.checkpointing = policy
            seconds = call_seconds(step, device)
            if round_:
                samples[name].append(seconds)
    return {p: statistics.median(s) for p, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_unet_arguments(parser)
    add_device_arguments(parser, dtype="fp32")
    parser.set_defaults(preset="if_stage1_paper_narrow", size=64)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-repeats", type=int, default=3, help="fresh processes per policy for the peak")
    parser.add_argument("--memory-of", choices=POLICIES, help=argparse.SUPPRESS)  # internal: subprocess mode
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_of:
        print(json.dumps({"peak_mib": measure_memory_here(args.memory_of, args)}))
        return

    print(f"device={args.device} dtype={args.dtype} threads={args.threads} preset={args.preset} "
          f"overrides={unet_overrides(args)} frames={args.frames} batch={args.batch}")
    memory = {p: statistics.median(measure_memory(p, args) for _ in range(args.memory_repeats)) for p in POLICIES}
    times = measure_times(args)
    print(f"{'policy':>9} | {'peak MiB':>9} {'vs none':>8} | {'step s':>7} {'vs none':>8}")
    for p in POLICIES:
        print(f"{p:>9} | {memory[p]:>9.0f} {memory[p] / memory['none']:>8.2f} | {times[p]:>7.3f} {times[p] / times['none']:>8.2f}")


if __name__ == "__main__":
    main()
