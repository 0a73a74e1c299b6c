"""Cost of the STUNet against the per-frame 2D U-Net and a fixed-temporal-resolution inflation (paper Sec. 3.1).

The claim checked: by downsampling in time as well as space, the STUNet does most of its work on a
compact space-time representation, so a full clip costs less than running the text-to-image
U-Net on every frame, and far less than the conventional inflation that keeps every frame at
every level (temporal conv + temporal attention everywhere, as AnimateDiff / ModelScope).

Three variants share one frozen 2D U-Net (``--preset``, default the CPU demo's ``if_stage1_demo``):

- ``stunet``: ``STUNet(unet)`` with its defaults; forward + backward of a mean-square loss
  (gradients for the temporal parameters, activation gradients through the frozen layers).
- ``per_frame_2d``: the U-Net on every frame as a batch of images; forward + backward with respect
  to the *input* (its weights are frozen, as in the STUNet: the same activation-gradient work a
  frozen backbone needs, no weight gradients).
- ``fixed_resolution``: ``build_fixed_resolution_inflation(unet)``: no temporal resampling, a
  factorized conv block and a temporal attention block after every pre-trained layer.

Time: median over ``--reps`` rounds; the variants run round-robin within each round so machine
load hits all of them alike (on a shared CPU machine times are noisy, so the arithmetic cost,
GFLOP of forward + backward from ``torch.utils.flop_counter``, is printed too). Peak memory: on CPU, each (variant, frames) runs one forward +
backward in a fresh subprocess and reports the peak RSS growth over the RSS after building the
model and inputs (``VmHWM``, its mark reset through ``/proc/self/clear_refs``); on CUDA,
``torch.cuda.max_memory_allocated`` growth.

    python benchmarks/bench_stunet.py                              # CPU, 2 threads, 16/32/80 frames, 32x32
    python benchmarks/bench_stunet.py --frames 80 --size 128       # e.g. on a GPU
    # the paper's base size on a GPU: IF stage I's four levels at an eighth of its width, 128x128, bf16
    # (at a quarter, 80 frames need activation checkpointing on an 80 GB card)
    python benchmarks/bench_stunet.py --device cuda --dtype bf16 --preset if_stage1_paper \
        --block-out-channels 64,128,192,256 --size 128 --frames 16 32 64 80

``--dtype bf16`` runs every variant under bf16 autocast (as ``trainer.precision=bf16-mixed`` trains);
the weights stay float32.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from lumiere.models import STUNet, build_fixed_resolution_inflation, build_unet
from lumiere.models.t2i import unet_text_dim

from _common import (  # beside this script: the benchmarks' shared helpers
    add_device_arguments,
    add_unet_arguments,
    autocast,
    call_seconds,
    cuda_peak_mib,
    current_rss_bytes,
    peak_rss_bytes,
    reset_peak_rss,
    unet_overrides,
)

VARIANTS = ("stunet", "per_frame_2d", "fixed_resolution")
TARGETS = {  # at the longest clip (Sec. 3.1's motivation, the lead's acceptance bar)
    "time stunet / per_frame_2d": 0.8,
    "time stunet / fixed_resolution": 0.4,
    "memory stunet / fixed_resolution": 0.5,
}


def build(variant: str, args, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    unet = build_unet(args.preset, **unet_overrides(args)).to(device).eval().requires_grad_(False)
    if variant == "stunet":
        return STUNet(unet).to(device)
    if variant == "fixed_resolution":
        return build_fixed_resolution_inflation(unet).to(device)
    return unet


def make_step(variant: str, model: torch.nn.Module, batch: int, frames: int, size: int, device: torch.device,
              dtype: str = "fp32"):
    """A closure running one forward + backward of the variant on a (batch, 3, frames, size, size) clip."""
    g = torch.Generator().manual_seed(0)
    unet = model if variant == "per_frame_2d" else model.unet
    video = torch.randn(batch, 3, frames, size, size, generator=g).to(device)
    text = torch.randn(batch, 32, unet_text_dim(unet), generator=g).to(device)
    timestep = torch.randint(0, 1000, (batch,), generator=g).to(device)

    if variant == "per_frame_2d":
        images = video.permute(0, 2, 1, 3, 4).reshape(batch * frames, 3, size, size).requires_grad_(True)
        text_per_frame = text.repeat_interleave(frames, dim=0)
        timestep_per_frame = timestep.repeat_interleave(frames)

        def step():
            images.grad = None
            with autocast(device, dtype):
                out = model(images, timestep_per_frame, text_per_frame).sample
            out.float().square().mean().backward()

        return step

    def step():
        model.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            out = model(video, timestep, text)
        out.float().square().mean().backward()

    return step


def _fits(step, device: torch.device) -> bool:
    """Run ``step`` once; False if it ran out of GPU memory (the memory is released again)."""
    try:
        step()
        return True
    except torch.OutOfMemoryError:
        pass
    if device.type == "cuda":  # outside the except block: its traceback no longer holds the step's tensors
        torch.cuda.empty_cache()
    return False


def measure_memory_here(variant: str, args) -> float:
    """Peak memory growth (MiB) of one forward + backward, in this process."""
    device = torch.device(args.device)
    model = build(variant, args, device)
    step = make_step(variant, model, args.batch, args.frames[0], args.size, device, args.dtype)
    if device.type == "cuda":
        fits, peak_mib = cuda_peak_mib(device, lambda: _fits(step, device))
        return peak_mib if fits else float("nan")
    before = current_rss_bytes()
    reset_peak_rss()  # import-time peaks do not count
    peak_before = peak_rss_bytes()
    step()
    peak_after = peak_rss_bytes()
    if peak_after <= peak_before:  # the step never exceeded an earlier peak that could not be reset: unknown
        return float("nan")
    return (peak_after - before) / 2**20


def measure_memory(variant: str, frames: int, args) -> float:
    if args.device.startswith("cuda"):
        sub_args = argparse.Namespace(**{**vars(args), "frames": [frames]})
        torch.cuda.empty_cache()
        return measure_memory_here(variant, sub_args)
    cmd = [
        sys.executable, __file__, "--memory-of", variant, "--frames", str(frames), "--size", str(args.size),
        "--batch", str(args.batch), "--preset", args.preset, "--threads", str(args.threads), "--device", args.device,
        "--dtype", args.dtype, "--block-out-channels", args.block_out_channels, "--layers-per-block", str(args.layers_per_block),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def measure_flops(frames: int, args, models: dict) -> dict[str, float]:
    """GFLOP of one forward + backward (matmuls, convolutions, attention): independent of machine load."""
    device = torch.device(args.device)
    flops = {}
    for variant in VARIANTS:
        step = make_step(variant, models[variant], args.batch, frames, args.size, device, args.dtype)
        with FlopCounterMode(display=False) as counter:
            fits = _fits(step, device)
        flops[variant] = counter.get_total_flops() / 1e9 if fits else float("nan")
    return flops


def measure_times(frames: int, args, models: dict) -> dict[str, float]:
    device = torch.device(args.device)
    steps = {v: make_step(v, models[v], args.batch, frames, args.size, device, args.dtype) for v in VARIANTS}
    for variant in VARIANTS:  # warm-up (allocator, kernel selection); a variant out of GPU memory is left out
        if not _fits(steps[variant], device):
            print(f"  {variant} at {frames} frames: out of GPU memory", flush=True)
            del steps[variant]
    samples = {v: [] for v in VARIANTS}
    for _ in range(args.reps):
        for variant, step in steps.items():  # round-robin: load spikes hit every variant
            samples[variant].append(call_seconds(step, device))
    return {v: statistics.median(s) if s else float("nan") for v, s in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 32, 80])
    add_unet_arguments(parser)
    add_device_arguments(parser, dtype="fp32")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: subprocess mode
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.memory_of:
        print(json.dumps({"peak_mib": measure_memory_here(args.memory_of, args)}))
        return

    device = torch.device(args.device)
    if args.dtype == "bf16" and device.type == "cpu":
        print("note: bf16 autocast on CPU is slow and not what the targets are about", file=sys.stderr)
    models = {v: build(v, args, device) for v in VARIANTS}
    frozen = sum(p.numel() for p in models["per_frame_2d"].parameters())
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device={device} ({name}) dtype={args.dtype} threads={args.threads} preset={args.preset} "
          f"overrides={unet_overrides(args)} batch={args.batch}")
    print(f"frozen 2D U-Net: {frozen / 1e6:.2f}M params; STUNet temporal factor N={models['stunet'].temporal_factor}")
    for v in ("stunet", "fixed_resolution"):
        print(f"  {v}: {sum(p.numel() for p in models[v].trainable_parameters()) / 1e6:.2f}M trainable temporal params")
    print("per_frame_2d: frozen weights, backward w.r.t. the input frames (activation gradients, no weight gradients)")
    print("memory: peak RSS growth of one fwd+bwd in a fresh process" if device.type == "cpu" else "memory: CUDA peak allocated growth")
    print()
    header = (
        f"{'frames':>6} | {'stunet':>8} {'2D':>8} {'fixed':>8} {'st/2D':>6} {'st/fix':>6} | "
        f"{'stunet':>7} {'2D':>7} {'fixed':>7} {'st/2D':>6} {'st/fix':>6} | "
        f"{'stunet':>7} {'2D':>7} {'fixed':>7} {'st/2D':>6} {'st/fix':>6}"
    )
    print(f"{'':>6} | {'time (s, median of ' + str(args.reps) + ')':<46} | {'GFLOP (fwd+bwd)':<44} | peak memory (MiB)")
    print(header)
    print("-" * len(header))
    ratios = {}
    for frames in args.frames:
        models["stunet"].check_num_frames(frames)
        times = measure_times(frames, args, models)
        flops = measure_flops(frames, args, models)
        if args.skip_memory:
            memory = {v: float("nan") for v in VARIANTS}
        else:
            memory = {v: measure_memory(v, frames, args) for v in VARIANTS}
        row = [f"{frames:>6}"]
        for name, values, fmt in (("time", times, "8.3f"), ("flops", flops, "7.1f"), ("memory", memory, "7.0f")):
            ratios[f"{name} stunet / per_frame_2d"] = values["stunet"] / values["per_frame_2d"]
            ratios[f"{name} stunet / fixed_resolution"] = values["stunet"] / values["fixed_resolution"]
            cells = " ".join(format(values[v], fmt) for v in VARIANTS)
            row.append(
                f"{cells} {ratios[f'{name} stunet / per_frame_2d']:>6.2f} {ratios[f'{name} stunet / fixed_resolution']:>6.2f}"
            )
        print(" | ".join(row), flush=True)
    print()
    print(f"targets at {args.frames[-1]} frames:")
    for name, bound in TARGETS.items():
        value = ratios[name]
        verdict = "met" if value <= bound else "not measured" if value != value else "NOT met"
        print(f"  {name} = {value:.2f} (target <= {bound}): {verdict}")
        if name.startswith("time"):
            flops_name = name.replace("time", "flops", 1)
            print(f"    (arithmetic: {flops_name} = {ratios[flops_name]:.2f})")


if __name__ == "__main__":
    main()
