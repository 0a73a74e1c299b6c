"""The memory planner (``python -m lumiere.plan``) against the H100 measurements, then the paper's cases.

1. Validation: the planner's step memory (fake tensors on this CPU) beside the H100's
   ``torch.cuda.max_memory_allocated`` growth that ``bench_stunet.py`` measured (docs/benchmarks.md,
   "H100, the paper's base size"): IF stage I's four levels at an eighth of its width, 128x128,
   batch 1, bf16 autocast, 32 text tokens without a mask, for the STUNet, the per-frame 2D U-Net and
   the fixed-resolution inflation at 16/32/64/80 frames. Target: within 15%.
2. Linearity: how far a line through the 16- and 80-frame steps is from the 32- and 64-frame
   steps (the fit search of ``largest_fitting`` extrapolates such lines).
3. The paper's cases: IF-I-XL's width (``if_i_xl_width``, 4.3B frozen) at 64x64 and 128x128, 80
   frames, batch 1, bf16-mixed, with each checkpointing policy; then the same with the frozen
   weights in bf16 and with FSDP over 8 GPUs; and what fits a 40 / 80 / 141 GiB card.

    python benchmarks/plan_memory.py                 # all three, markdown on stdout (minutes on a CPU)
    python benchmarks/plan_memory.py --only validate --json outputs/plan_memory.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import time
from pathlib import Path

import torch

from lumiere.models import STUNet
from lumiere.plan import ModelSpec, StepShape, TrainingSetup, largest_fitting, measure_fake_step, plan_memory
from lumiere.plan.budget import GiB

EIGHTH_WIDTH = {"block_out_channels": (64, 128, 192, 256), "sample_size": 128}
H100_GIB = {  # docs/benchmarks.md, "H100, the paper's base size": STUNet / 2D / fixed
    16: (8.5, 8.1, 14.7),
    32: (16.9, 16.1, 29.3),
    64: (33.7, 32.2, 58.6),
    80: (42.0, 40.2, 73.1),
}
VARIANTS = ("stunet", "per_frame_2d", "fixed_resolution")
TOLERANCE = 0.15


def _policies() -> list:
    if "activation_checkpointing" in inspect.signature(STUNet).parameters:
        return ["none", "spatial", "temporal", "all"]
    return ["none", "all"]


def validate(results: dict) -> None:
    print("## Planner against the H100 (eighth width, 128x128, bf16, batch 1)\n")
    print("| frames | " + " | ".join(f"{v} planned / measured GiB (ratio)" for v in VARIANTS) + " |")
    print("|---|" + "---|" * len(VARIANTS))
    rows = []
    for frames, measured in H100_GIB.items():
        cells = []
        for variant, gib in zip(VARIANTS, measured):
            spec = ModelSpec("if_stage1_paper", variant, EIGHTH_WIDTH)
            step = measure_fake_step(spec, StepShape(1, frames, 128, text_tokens=32, text_mask=False), "bf16-mixed")
            planned = step.peaks[(1.0, 1.0)] / GiB
            ratio = planned / gib
            rows.append({"frames": frames, "variant": variant, "planned_gib": planned, "measured_gib": gib, "ratio": ratio})
            cells.append(f"{planned:.1f} / {gib} ({ratio:.2f}){'' if abs(ratio - 1) <= TOLERANCE else ' OUTSIDE 15%'}")
        print(f"| {frames} | " + " | ".join(cells) + " |", flush=True)
    worst = max(abs(r["ratio"] - 1) for r in rows)
    print(f"\nlargest deviation: {worst:.1%} (target <= {TOLERANCE:.0%})\n")
    results["validation"] = rows


def linearity(results: dict) -> None:
    print("## Linearity in frames (STUNet, eighth width, 128x128)\n")
    spec = ModelSpec("if_stage1_paper", "stunet", EIGHTH_WIDTH)
    peaks = {f: measure_fake_step(spec, StepShape(1, f, 128), "bf16-mixed").peaks[(1.0, 1.0)] for f in (16, 32, 64, 80)}
    slope = (peaks[80] - peaks[16]) / 64
    rows = []
    for f in (32, 64):
        line = peaks[16] + slope * (f - 16)
        rows.append({"frames": f, "fake_gib": peaks[f] / GiB, "line_gib": line / GiB, "deviation": line / peaks[f] - 1})
        print(f"- {f} frames: fake step {peaks[f] / GiB:.2f} GiB, line through 16 and 80 frames {line / GiB:.2f} GiB "
              f"({line / peaks[f] - 1:+.2%})")
    print()
    results["linearity"] = rows


def paper_cases(results: dict, cards) -> None:
    print("## The paper's cases: IF-I-XL width, 80 frames, batch 1, bf16-mixed\n")
    cases = []
    for resolution in (64, 128):
        for policy in _policies():
            cases.append((resolution, policy, TrainingSetup()))
        cases.append((resolution, "all", TrainingSetup(frozen_dtype=torch.bfloat16)))
        cases.append((resolution, "all", TrainingSetup(fsdp_world_size=8)))
    header = ("| resolution | checkpointing | setup | frozen | trainable + grads + AdamW + EMA | step | of which kept "
              "for backward | total GiB | " + " | ".join(f"fits {c:g} GiB: frames / batch" for c in cards) + " |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    rows = []
    for resolution, policy, setup in cases:
        start = time.perf_counter()
        spec = ModelSpec("if_i_xl_width", "stunet", {"sample_size": resolution}, {}, policy)
        plan = plan_memory(spec, StepShape(1, 80, resolution), setup)
        fits = largest_fitting(spec, plan, cards)
        lines = {k: v / GiB for k, v in plan.lines.items()}
        state = sum(lines[k] for k in ("trainable parameters", "gradients", "optimizer state", "EMA"))
        what = ("frozen bf16" if setup.frozen_dtype is not None else f"FSDP x{setup.fsdp_world_size}"
                if setup.fsdp_world_size > 1 else "one GPU")
        step_name = "step (activations, their gradients, weight copies, gradients)"
        print(f"| {resolution} | {policy} | {what} | {lines['frozen parameters']:.1f} | {state:.1f} | "
              f"{lines[step_name]:.1f} | {lines['activations kept for backward']:.1f} | {lines['total']:.1f} | "
              + " | ".join(f"{f.largest_frames} / {f.largest_batch}" for f in fits) + " |", flush=True)
        rows.append({"resolution": resolution, "checkpointing": policy, "setup": what, "gib": lines,
                     "fits": [vars(f) for f in fits], "seconds": time.perf_counter() - start,
                     "frozen_params": plan.params.frozen, "trainable_params": plan.params.trainable})
    first = rows[0]
    print(f"\n{first['frozen_params'] / 1e9:.2f}B frozen, {first['trainable_params'] / 1e9:.2f}B trainable parameters; "
          "fits: the longest clip at batch 1 / the largest batch at 80 frames\n")
    results["paper_cases"] = rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("validate", "linearity", "paper"), default=None)
    parser.add_argument("--cards", default="40,80,141")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cards = tuple(float(c) for c in args.cards.split(","))
    results: dict = {}
    start = time.perf_counter()
    if args.only in (None, "validate"):
        validate(results)
    if args.only in (None, "linearity"):
        linearity(results)
    if args.only in (None, "paper"):
        paper_cases(results, cards)
    print(f"planner wall time: {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
