"""Bytes moved by layout copies in one STUNet training step, before and after folding once per stack (issue 21, item 7).

Three variants share one frozen 2D U-Net (``--preset``, default the paper-shaped narrow IF stage I):

- ``per_frame_2d``: the U-Net on every frame as a batch of images (frozen weights, backward with
  respect to the input, as in ``bench_stunet.py``);
- ``stunet_per_block``: the STUNet with the per-block folding it used before: every temporal
  attention block converts ``((b t), c, h, w)`` to tokens ``((b h w), t, c)`` and back itself, as
  strided views (``TemporalStack.forward`` replaced, inside this script only, by the previous
  block loop and attention forward, copied here from git d7ccf72);
- ``stunet``: the STUNet as it is (``lumiere.models.temporal_layout``: a stack's consecutive
  attention blocks share one conversion each way).

Copies: ``torch.profiler`` records every aten op of forward and backward, also those called inside
other kernels (a layer norm or matmul on a permuted input makes it contiguous internally, which a
dispatch-level count would miss: with batch 1 the conversion itself is only a view). Every op that
materialises a tensor in a new layout (``clone``, ``contiguous``, ``_to_copy``, a reshape of a
permuted tensor) ends in ``aten::copy_``; the bytes are the sum of its source sizes (float32: 4 bytes
per element; the script runs in float32 only). Time: median over ``--reps`` rounds, round-robin.

    python benchmarks/temporal_layout.py --threads 1       # CPU: 32 frames, 32x32, batch 1
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch
import torch.nn.functional as F
from bench_stunet import make_step  # beside this script
from einops import rearrange
from torch.profiler import ProfilerActivity, profile

from lumiere.models import STUNet, build_unet
from lumiere.models.temporal import TemporalAttentionBlock, frame_position_encoding
from lumiere.models.temporal_layout import TemporalStack

from _common import add_unet_arguments, call_seconds, unet_overrides  # beside this script

VARIANTS = ("per_frame_2d", "stunet_per_block", "stunet")


def copy_bytes(step) -> tuple[int, int]:
    """Bytes written and calls of ``aten::copy_`` during one ``step()`` (forward and backward), from the profiler."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    copies = [e for e in prof.events() if e.name == "aten::copy_"]
    return sum(math.prod(e.input_shapes[1]) * 4 for e in copies), len(copies)


def _head_attention(block: TemporalAttentionBlock, x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """TemporalAttentionBlock.forward as it was before (git d7ccf72), unmodulated: fold, attend, unfold."""
    h, w = x.shape[-2:]
    tokens = rearrange(x, "(b t) c h w -> (b h w) t c", t=num_frames)
    normed = block.norm(tokens)
    normed = normed + frame_position_encoding(num_frames, normed.shape[-1], normed.device, normed.dtype)
    q, k, v = rearrange(block.to_qkv(normed), "n t (three heads d) -> three n heads t d", three=3, heads=block.num_heads)
    attended = rearrange(F.scaled_dot_product_attention(q, k, v), "n heads t d -> n t (heads d)")
    tokens = tokens + block.proj_out(attended)
    return rearrange(tokens, "(b h w) t c -> (b t) c h w", h=h, w=w)


def _per_block_forward(stack: TemporalStack, x, num_frames, emb=None):
    """TemporalStack.forward as it was before: every block folds and unfolds its own input."""
    for block in stack.blocks:
        x = _head_attention(block, x, num_frames) if isinstance(block, TemporalAttentionBlock) else block(x, num_frames, emb)
    return x


class _PerBlockFolding:
    """Within the context, every TemporalStack folds per block (the previous layout handling)."""

    def __enter__(self):
        self._forward = TemporalStack.forward
        TemporalStack.forward = _per_block_forward

    def __exit__(self, *exc):
        TemporalStack.forward = self._forward


class _Nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_unet_arguments(parser)
    parser.add_argument("--device", default="cpu", help="cpu (the copies counted are the CPU kernels')")
    parser.set_defaults(preset="if_stage1_paper_narrow", size=32)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    unet = build_unet(args.preset, **unet_overrides(args)).to(device).eval().requires_grad_(False)
    stunet = STUNet(unet).to(device)
    models = {"per_frame_2d": unet, "stunet_per_block": stunet, "stunet": stunet}
    contexts = {"per_frame_2d": _Nothing, "stunet_per_block": _PerBlockFolding, "stunet": _Nothing}
    steps = {}
    for v in VARIANTS:
        steps[v] = make_step("stunet" if v.startswith("stunet") else v, models[v], args.batch, args.frames, args.size,
                             device)

    copies = {}
    for v in VARIANTS:
        with contexts[v]():
            steps[v]()  # warm-up outside the profiler
            copies[v] = copy_bytes(steps[v])
    samples = {v: [] for v in VARIANTS}
    for round_ in range(args.reps + 1):  # round 0 warms up
        for v in VARIANTS:
            with contexts[v]():
                seconds = call_seconds(steps[v], device)
            if round_:
                samples[v].append(seconds)
    times = {v: statistics.median(s) for v, s in samples.items()}

    print(f"device={device} dtype=fp32 threads={args.threads} preset={args.preset} "
          f"overrides={unet_overrides(args)} frames={args.frames} batch={args.batch}")
    print(f"{'variant':>16} | {'copy MiB':>9} {'copy ops':>8} | {'step s':>7} {'vs 2D':>6}")
    for v in VARIANTS:
        print(f"{v:>16} | {copies[v][0] / 2**20:>9.1f} {copies[v][1]:>8} | "
              f"{times[v]:>7.3f} {times[v] / times['per_frame_2d']:>6.2f}")
    before, after = copies["stunet_per_block"][0], copies["stunet"][0]
    print(f"copy bytes stunet / stunet_per_block = {after / before:.3f} ({(before - after) / 2**20:.1f} MiB fewer per step)")


if __name__ == "__main__":
    main()
