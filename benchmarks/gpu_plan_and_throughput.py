"""On a GPU: the memory planner beside measured peaks, and bf16 training throughput at the paper's base shape.

1. Memory. IF stage I's four levels at an eighth of its width, 128x128, batch 1, bf16 autocast, 32
   text tokens without a mask (``bench_stunet.py``'s step): the planner's step memory (fake tensors,
   ``lumiere.plan``) beside ``torch.cuda.max_memory_allocated`` growth of one forward + backward
   at 16/32/64/80 frames, and at 80 frames with every block checkpointed; the growth of
   ``max_memory_reserved`` too, to check the planner's allocator slack.
2. Throughput. A full bf16-mixed training step (forward, backward, AdamW step on the temporal
   weights) at the paper's base shape, 80 frames at 128x128, batch 1: at IF-I-XL's width if the
   planner says it fits this card, else the widest of IF stage I's widths that does (without
   checkpointing if that fits, else with every block checkpointed); the script reports which.
   Clips/s from the median of 5 timed steps (fewer if a step takes over 18 s) after 2 warm-up steps; model FLOP utilisation = the
   model's FLOPs of forward + backward (``torch.utils.flop_counter.FlopCounterMode`` on fake
   tensors, without the recomputation of checkpointing) / step time / the device's dense bf16 peak.

Every case runs in its own try/except: out of memory is recorded as a result. Writes
``bench_gpu.json`` and ``bench_gpu.md`` under ``--out``.

    python benchmarks/gpu_plan_and_throughput.py --out outputs/bench-gpu
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils import flop_counter
from torch.utils.flop_counter import FlopCounterMode

from lumiere.models import STUNet
from lumiere.models.t2i import unet_text_dim
from lumiere.plan import ModelSpec, StepShape, TrainingSetup, measure_fake_step, plan_memory
from lumiere.plan.budget import GiB
from lumiere.plan.fake_step import build_meta_network

from _common import sync  # beside this script: the benchmarks' shared helpers

EIGHTH = (64, 128, 192, 256)
WIDTHS = {  # widest first: IF-I-XL's, the if_stage1_paper preset's, then halves
    "IF-I-XL (704)": ("if_i_xl_width", {}),
    "512": ("if_stage1_paper", {}),
    "1/2 (256)": ("if_stage1_paper", {"block_out_channels": (256, 512, 768, 1024)}),
    "1/4 (128)": ("if_stage1_paper", {"block_out_channels": (128, 256, 384, 512)}),
    "1/8 (64)": ("if_stage1_paper", {"block_out_channels": EIGHTH}),
}
# The fake step runs on CPU tensors, whose attention kernel FlopCounterMode has no formula for:
# the CUDA kernels' formulas (same arithmetic). Without them attention's FLOPs would be left out.
def _as_raw(registered):
    """A registered (already shape-wrapped) flop formula, marked so that custom_mapping does not wrap it again."""
    def formula(*args, **kwargs):
        return registered(*args, **kwargs)
    formula._get_raw = True
    return formula


aten = torch.ops.aten
CPU_ATTENTION_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _as_raw(flop_counter.sdpa_flop),
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _as_raw(flop_counter.sdpa_backward_flop),
}
PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1}  # dense, SXM where both exist
PCIE_PEAK_BF16_TFLOPS = {"H100": 756.5}
TIMED_SECONDS = 90  # at most about this long for the timed steps (fewer than --reps when a step is slow)


def peak_tflops(name: str, override: float | None) -> float | None:
    if override:
        return override
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in name:
            return PCIE_PEAK_BF16_TFLOPS.get(key, value) if "PCIe" in name else value
    return None


def build_real(source: str, overrides: dict, resolution: int, checkpointing: str, device) -> STUNet:
    torch.manual_seed(0)
    spec = ModelSpec(source, "stunet", {**overrides, "sample_size": resolution}, {}, checkpointing)
    network = build_meta_network(spec)
    network.to_empty(device=device)
    with torch.no_grad():  # random weights: memory and time do not depend on the values
        for param in network.parameters():
            param.normal_(0.0, 0.02)
    for buffer in network.buffers():
        buffer.zero_()
    return network


def inputs(network: STUNet, frames: int, resolution: int, tokens: int, mask: bool, device):
    g = torch.Generator(device=device).manual_seed(0)
    video = torch.randn(1, 3, frames, resolution, resolution, device=device, generator=g)
    text = torch.randn(1, tokens, unet_text_dim(network.unet), device=device, generator=g)
    attention_mask = torch.ones(1, tokens, dtype=torch.bool, device=device) if mask else None
    return video, torch.randint(0, 1000, (1,), device=device, generator=g), text, attention_mask


def measured_step_memory(frames: int, checkpointing: str, device) -> dict:
    """bench_stunet.py's step on the GPU: max_memory_allocated / reserved growth (GiB) of one forward + backward."""
    network = build_real("if_stage1_paper", {"block_out_channels": EIGHTH}, 128, checkpointing, device)
    video, timestep, text, _ = inputs(network, frames, 128, 32, False, device)
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    allocated, reserved = torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = network(video, timestep, text)
    out.float().square().mean().backward()
    sync(device)
    return {"allocated_gib": (torch.cuda.max_memory_allocated(device) - allocated) / GiB,
            "reserved_gib": (torch.cuda.max_memory_reserved(device) - reserved) / GiB}


def run_case(fn, *args) -> dict:
    """fn(*args), or the out-of-memory / error it raised as a result; the GPU cache is emptied after."""
    try:
        result = fn(*args)
    except torch.OutOfMemoryError:
        result = {"status": "OOM"}
    except Exception as err:  # one failing case must not cost the others
        traceback.print_exc()
        result = {"status": f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
    torch.cuda.empty_cache()
    return result


def memory_section(device) -> list[dict]:
    rows = []
    for frames, checkpointing in ((16, "none"), (32, "none"), (64, "none"), (80, "none"), (80, "all")):
        spec = ModelSpec("if_stage1_paper", "stunet", {"block_out_channels": EIGHTH, "sample_size": 128}, {}, checkpointing)
        planned = measure_fake_step(spec, StepShape(1, frames, 128, text_tokens=32, text_mask=False), "bf16-mixed")
        row = {"frames": frames, "checkpointing": checkpointing, "planned_gib": planned.peaks[(1.0, 1.0)] / GiB}
        row.update(run_case(measured_step_memory, frames, checkpointing, device))
        if "allocated_gib" in row:
            row["planned_over_measured"] = row["planned_gib"] / row["allocated_gib"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def model_flops(source: str, overrides: dict, frames: int, resolution: int) -> float:
    """FLOPs of one forward + backward (no checkpointing: the model's, not the hardware's), on fake tensors."""
    network = build_meta_network(ModelSpec(source, "stunet", {**overrides, "sample_size": resolution}))
    with FakeTensorMode(allow_non_fake_inputs=True):
        network.to_empty(device="cpu")
        video, timestep, text, mask = inputs_on_cpu(network, frames, resolution)
        with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS) as counter:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = network(video, timestep, text, mask)
            out.float().square().mean().backward()
    return float(counter.get_total_flops())


def inputs_on_cpu(network, frames, resolution):
    text = torch.zeros(1, 77, unet_text_dim(network.unet))
    return (torch.zeros(1, 3, frames, resolution, resolution), torch.zeros(1, dtype=torch.long), text,
            torch.ones(1, 77, dtype=torch.bool))


def fitting_widths(capacity: int):
    """(width, checkpointing) pairs whose planned total fits ``capacity`` bytes at 80 frames, 128x128, widest
    first (without checkpointing where that fits, else with every block checkpointed)."""
    for label, (source, overrides) in WIDTHS.items():
        for checkpointing in ("none", "all"):
            spec = ModelSpec(source, "stunet", {**overrides, "sample_size": 128}, {}, checkpointing)
            total = plan_memory(spec, StepShape(1, 80, 128), TrainingSetup()).total
            print(f"plan: width {label}, checkpointing {checkpointing}: {total / GiB:.1f} GiB", flush=True)
            if total <= capacity:
                yield label, checkpointing
                break


def training_throughput(label: str, checkpointing: str, device, reps: int) -> dict:
    source, overrides = WIDTHS[label]
    network = build_real(source, overrides, 128, checkpointing, device)
    optimizer = torch.optim.AdamW(network.trainable_parameters(), lr=1e-4, foreach=True)
    video, timestep, text, mask = inputs(network, 80, 128, 77, True, device)
    target = torch.randn(1, network.out_channels, 80, 128, 128, device=device)

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = network(video, timestep, text, mask)
        torch.nn.functional.mse_loss(out.float(), target).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats(device)
    sync(device)
    start = time.perf_counter()
    step()  # warm-up: allocator, kernel selection
    sync(device)
    reps = max(1, min(reps, int(TIMED_SECONDS / (time.perf_counter() - start))))  # slow steps: fewer repeats
    step()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {"step_seconds": seconds, "clips_per_second": 1.0 / seconds,
            "max_allocated_gib": torch.cuda.max_memory_allocated(device) / GiB,
            "max_reserved_gib": torch.cuda.max_memory_reserved(device) / GiB}


def throughput_section(device, reps: int, peak: float | None) -> dict:
    """The widest width the planner fits; if it runs out of memory all the same, the next one (recorded)."""
    capacity = torch.cuda.get_device_properties(device).total_memory
    attempts = []
    for label, checkpointing in fitting_widths(capacity):
        source, overrides = WIDTHS[label]
        result = {"width": label, "checkpointing": checkpointing, "frames": 80, "resolution": 128, "batch": 1}
        result["model_flops_per_step"] = model_flops(source, overrides, 80, 128)
        result.update(run_case(training_throughput, label, checkpointing, device, reps))
        if "step_seconds" in result and peak:
            result["model_flop_utilisation"] = result["model_flops_per_step"] / result["step_seconds"] / (peak * 1e12)
        print(json.dumps(result), flush=True)
        if "step_seconds" in result:
            return {**result, "attempts": attempts}
        attempts.append(result)
    return {"status": "no width ran at 80 frames, 128x128", "attempts": attempts}


def write_markdown(path: Path, record: dict) -> None:
    lines = [f"# make bench-gpu: {record['device']}", "",
             "## Step memory, eighth width, 128x128, bf16, batch 1 (GiB)", "",
             "| frames | checkpointing | planned | measured allocated | planned / measured | measured reserved |",
             "|---|---|---:|---:|---:|---:|"]
    for row in record["memory"]:
        measured = f"{row['allocated_gib']:.2f}" if "allocated_gib" in row else row.get("status", "")
        ratio = f"{row['planned_over_measured']:.2f}" if "planned_over_measured" in row else ""
        reserved = f"{row['reserved_gib']:.2f}" if "reserved_gib" in row else ""
        lines.append(f"| {row['frames']} | {row['checkpointing']} | {row['planned_gib']:.2f} | {measured} | {ratio} | {reserved} |")
    t = record["throughput"]
    lines += ["", "## bf16-mixed training step, 80 frames at 128x128, batch 1", ""]
    if "width" in t:
        lines.append(f"width {t['width']}, checkpointing {t['checkpointing']}: "
                     + (f"{t['step_seconds']:.3f} s/step, {t['clips_per_second']:.2f} clips/s, "
                        f"{t['model_flops_per_step'] / 1e12:.1f} model TFLOP/step, MFU "
                        f"{t.get('model_flop_utilisation', float('nan')):.1%}, peak allocated {t['max_allocated_gib']:.1f} GiB"
                        if "step_seconds" in t else t.get("status", "")))
    else:
        lines.append(t.get("status", ""))
    for attempt in t.get("attempts", []):  # wider widths the planner fitted but the card did not
        lines.append(f"- tried first: width {attempt['width']}, checkpointing {attempt['checkpointing']}: "
                     f"{attempt.get('status', '')}")
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench-gpu"))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak (default: by name)")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: bench-gpu needs a CUDA device and a CUDA build of torch (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    record = {"device": name, "torch": torch.__version__,
              "total_memory_gib": torch.cuda.get_device_properties(device).total_memory / GiB,
              "peak_bf16_tflops": peak_tflops(name, args.peak_tflops)}
    print(json.dumps(record), flush=True)
    start = time.perf_counter()
    record["memory"] = memory_section(device)
    record["throughput"] = {"status": "skipped"} if args.skip_throughput else throughput_section(
        device, args.reps, record["peak_bf16_tflops"])
    record["wall_seconds"] = time.perf_counter() - start
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gpu.json").write_text(json.dumps(record, indent=2))
    write_markdown(args.out / "bench_gpu.md", record)
    print((args.out / "bench_gpu.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
