"""Which kernels ``scaled_dot_product_attention`` uses inside the STUNet, and what each backend costs.

Every attention in the repo goes through ``torch.nn.functional.scaled_dot_product_attention``: the
STUNet's temporal attention (``TemporalAttentionBlock``, no mask) and the frozen U-Net's spatial
attention (diffusers' 2.0 processors; IF-style blocks attend to image and text tokens with a
padding mask for the caption). PyTorch picks a kernel per call. This script shows, on a GPU:

1. ``temporal attention block``: one ``TemporalAttentionBlock`` at the coarsest level's shape,
   forward + backward, forced onto each backend in turn (flash, memory-efficient, cuDNN, math):
   time, peak memory and the largest output difference from the math kernel. Flash must work
   here in bf16: the block has no mask and its head dimension is a multiple of 8.
2. ``whole STUNet``: forward + backward under bf16 autocast with PyTorch's own choice, and the
   attention kernels the CUDA profiler saw (their names say flash / efficient / cudnn / math).
   Forcing flash on the whole model fails by design where the caption's padding mask is passed.

Not a timed test; compare rows of one run. On CPU only the math kernel exists and the script says so.

    python benchmarks/check_sdpa_backends.py --device cuda --preset if_stage1_paper \\
        --block-out-channels 64,128,192,256 --size 128 --frames 80
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from lumiere.models import STUNet, build_unet
from lumiere.models.t2i import unet_text_dim
from lumiere.models.temporal import TemporalAttentionBlock

from _common import (  # beside this script: the benchmarks' shared helpers
    add_device_arguments,
    add_unet_arguments,
    autocast,
    cuda_peak_mib,
    median_seconds,
    sync,
    unet_overrides,
)

BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "math": SDPBackend.MATH,
}
KERNEL_FAMILIES = ("flash", "efficient", "cudnn", "fmha", "math", "softmax")


def timed(step, device: torch.device, reps: int) -> tuple[float, float]:
    """(median seconds, peak memory growth in MiB, NaN on CPU) of ``step``, after one warm-up call."""
    step()
    return cuda_peak_mib(device, lambda: median_seconds(step, reps, device, warmup=0))


def check_temporal_block(stunet: STUNet, args, device: torch.device) -> None:
    """Each backend on one temporal attention block shaped like the coarsest level's."""
    channels = stunet.unet.config.block_out_channels[-1]
    frames = args.frames // stunet.temporal_factor
    side = args.size // 2 ** (len(stunet.unet.config.block_out_channels) - 1)
    # the head count of the STUNet's own coarsest-level block
    heads = next(m.num_heads for m in stunet.modules()
                 if isinstance(m, TemporalAttentionBlock) and m.norm.normalized_shape[0] == channels)
    torch.manual_seed(0)
    block = TemporalAttentionBlock(channels, heads).to(device)
    torch.nn.init.normal_(block.proj_out.weight, std=0.02)  # non-zero, so the attention's output matters
    x = torch.randn(args.batch * frames, channels, side, side, device=device, requires_grad=True)
    print(f"temporal attention block: {channels} channels, {heads} heads of {channels // heads}, {frames} frames, "
          f"{side}x{side} pixels x batch {args.batch} = {args.batch * side * side} sequences; {args.dtype}")

    def run():
        with autocast(device, args.dtype):
            out = block(x, frames)
        return out

    with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        reference = run().float()
    print(f"  {'backend':<10} {'time ms':>9} {'peak MiB':>9} {'max |out - math|':>17}")
    for name, backend in BACKENDS.items():
        def step():
            x.grad = None
            block.zero_grad(set_to_none=True)
            run().float().square().mean().backward()

        try:
            with sdpa_kernel(backend):
                seconds, peak = timed(step, device, args.reps)
                with torch.no_grad():
                    difference = (run().float() - reference).abs().max().item()
        except RuntimeError as error:  # this backend cannot serve these shapes / dtype / device
            print(f"  {name:<10} unavailable: {str(error).splitlines()[0][:110]}")
            continue
        print(f"  {name:<10} {seconds * 1e3:9.2f} {peak:9.0f} {difference:17.2e}")


def check_whole_stunet(stunet: STUNet, args, device: torch.device) -> None:
    """PyTorch's own kernel choice inside the whole STUNet, as the profiler sees it."""
    g = torch.Generator().manual_seed(0)
    video = torch.randn(args.batch, 3, args.frames, args.size, args.size, generator=g).to(device)
    text = torch.randn(args.batch, 32, unet_text_dim(stunet.unet), generator=g).to(device)
    mask = torch.ones(args.batch, 32, dtype=torch.bool, device=device)
    mask[:, 20:] = False  # a padded caption, as the text encoder hands over
    timestep = torch.randint(0, 1000, (args.batch,), generator=g).to(device)

    def step(with_mask: bool):
        stunet.zero_grad(set_to_none=True)
        with autocast(device, args.dtype):
            out = stunet(video, timestep, text, encoder_attention_mask=mask if with_mask else None)
        out.float().square().mean().backward()

    print(f"whole STUNet: {args.frames} frames at {args.size}x{args.size}, batch {args.batch}, {args.dtype}, "
          f"N = {stunet.temporal_factor}")
    for with_mask in (True, False):
        seconds, peak = timed(lambda with_mask=with_mask: step(with_mask), device, args.reps)
        kernels = Counter()
        if device.type == "cuda":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                step(with_mask)
                sync(device)
            for event in prof.key_averages():
                name = event.key.lower()
                if any(word in name for word in ("attention", "fmha", "flash", "sdpa", "cudnn")):
                    family = next((f for f in KERNEL_FAMILIES if f in name), "other")
                    kernels[f"{family}: {event.key[:90]}"] += event.count
        label = "caption mask" if with_mask else "no mask     "
        print(f"  {label} fwd+bwd {seconds * 1e3:8.1f} ms, peak {peak:8.0f} MiB")
        for kernel, count in sorted(kernels.items()):
            print(f"      {count:5d} x {kernel}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_device_arguments(parser, dtype="bf16")
    add_unet_arguments(parser)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        print("note: on CPU only the math kernel exists; run this with --device cuda on a GPU", file=sys.stderr)
    overrides = unet_overrides(args)
    torch.manual_seed(0)
    unet = build_unet(args.preset, **overrides).to(device).eval().requires_grad_(False)
    stunet = STUNet(unet).to(device)
    stunet.check_num_frames(args.frames)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, preset {args.preset} {overrides}")
    check_temporal_block(stunet, args, device)
    check_whole_stunet(stunet, args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
