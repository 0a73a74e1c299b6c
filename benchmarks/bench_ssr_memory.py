"""Peak memory of SSR sampling grows with the MultiDiffusion window, not with the clip (Sec. 3.2).

"Since the SSR network operates at high spatial resolution, applying it on the entire video
duration is infeasible in terms of memory requirements": with temporal MultiDiffusion the network
only ever sees `window` frames, so its activations are bounded by the window; what grows with the
clip are the few clip-sized buffers (the noisy video, the low-res conditioning, the averaging
buffers).

Each measurement runs in a fresh subprocess (peak RSS is a process-lifetime maximum): an inflated
SSR with random weights (the demo SSR preset at `--size` px; memory does not depend on training)
upsamples one clip with `--steps` DDIM steps, one window per forward. Reported: the peak RSS of the
process and the sampling increment (peak minus the RSS just before sampling, i.e. without the
Python/torch runtime and the weights).

    python benchmarks/bench_ssr_memory.py            # ~3 min on 2 cores
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import current_rss_bytes, peak_rss_bytes  # beside this script: the benchmarks' shared helpers


def prepare(folder: Path, size: int) -> None:
    """A random 2D SSR export and text encoder that the measuring subprocesses inflate and load."""
    import torch

    from lumiere.diffusion import DiffusionObjective
    from lumiere.models import build_tiny_text_encoder, build_unet
    from lumiere.training.ssr import SuperResolutionModule

    torch.manual_seed(0)
    build_tiny_text_encoder().save_pretrained(folder / "text_encoder")
    module = SuperResolutionModule(unet=build_unet("if_stage2_demo", sample_size=size),
                                   text_encoder_path=str(folder / "text_encoder"), low_res_size=size // 2,
                                   objective=DiffusionObjective(), optimizer=torch.optim.AdamW, ema_decay=None)
    module.export_pretrained(str(folder))


def measure(folder: Path, size: int, frames: int, window: int, steps: int, threads: int) -> dict:
    """Runs inside the subprocess: build the inflated SSR, upsample one clip, report memory."""
    import torch

    from lumiere.diffusion import DiffusionObjective
    from lumiere.models import STUNet
    from lumiere.training.ssr import SuperResolutionModule

    torch.set_num_threads(threads)
    ssr = SuperResolutionModule(
        unet_path=str(folder / "ssr_unet"), text_encoder_path=str(folder / "text_encoder"),
        stunet=functools.partial(STUNet, temporal_resampling=False, num_temporal_attention_layers=1),
        low_res_size=size // 2, objective=DiffusionObjective(), optimizer=torch.optim.AdamW, ema_decay=None,
        sampler={"scheduler": "ddim", "num_inference_steps": steps, "guidance_scale": 1.0}).eval()
    low_res = torch.rand(1, 3, frames, size // 2, size // 2) * 2 - 1
    before = current_rss_bytes() / 2**20
    video = ssr.upsample(low_res, ["a red circle moving right"], window=window, overlap=2, progress=False)
    assert video.shape == (1, 3, frames, size, size)
    peak = peak_rss_bytes() / 2**20
    return {"frames": frames, "window": window, "peak_rss_mb": peak, "rss_before_mb": before,
            "sampling_mb": peak - before}


def run_child(folder: Path, args, frames: int, window: int) -> dict:
    command = [sys.executable, __file__, "--child", str(folder), "--frames", str(frames), "--window", str(window),
               "--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"measurement failed ({frames} frames, window {window}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=128, help="high-resolution frame size (low-res is half)")
    parser.add_argument("--steps", type=int, default=2, help="DDIM steps (the peak is reached in the first)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clip-lengths", type=int, nargs=2, default=(16, 64))
    parser.add_argument("--window", type=int, default=8, help="window for the clip-length comparison")
    parser.add_argument("--windows", type=int, nargs=2, default=(4, 16))
    parser.add_argument("--clip", type=int, default=32, help="clip length for the window comparison")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(measure(args.child, args.size, args.frames, args.window, args.steps, args.threads)))
        return

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        prepare(folder, args.size)
        short, long = (run_child(folder, args, frames, args.window) for frames in args.clip_lengths)
        small, large = (run_child(folder, args, args.clip, window) for window in args.windows)
        whole = run_child(folder, args, args.clip_lengths[1], args.clip_lengths[1])  # no windows at all

    print(f"SSR sampling at {args.size // 2} -> {args.size} px, {args.steps} DDIM steps, one window per forward")
    print(f"{'frames':>7} {'window':>7} {'peak RSS MB':>12} {'sampling MB':>12}")
    for row in (short, long, small, large, whole):
        print(f"{row['frames']:7d} {row['window']:7d} {row['peak_rss_mb']:12.0f} {row['sampling_mb']:12.0f}")
    clip_factor = args.clip_lengths[1] / args.clip_lengths[0]
    window_factor = args.windows[1] / args.windows[0]
    print(f"clip {args.clip_lengths[0]} -> {args.clip_lengths[1]} frames (x{clip_factor:g}) at window {args.window}: "
          f"peak RSS x{long['peak_rss_mb'] / short['peak_rss_mb']:.2f}, "
          f"sampling memory x{long['sampling_mb'] / short['sampling_mb']:.2f}")
    print(f"window {args.windows[0]} -> {args.windows[1]} frames (x{window_factor:g}) on a {args.clip}-frame clip: "
          f"peak RSS x{large['peak_rss_mb'] / small['peak_rss_mb']:.2f}, "
          f"sampling memory x{large['sampling_mb'] / small['sampling_mb']:.2f}")
    per_clip_frame = (long["peak_rss_mb"] - short["peak_rss_mb"]) / (long["frames"] - short["frames"])
    per_window_frame = (large["peak_rss_mb"] - small["peak_rss_mb"]) / (large["window"] - small["window"])
    print(f"peak RSS per extra frame: {per_clip_frame:.1f} MB of clip, {per_window_frame:.1f} MB of window "
          f"(x{per_window_frame / per_clip_frame:.1f})")
    print(f"the whole {whole['frames']}-frame clip as one window: sampling memory "
          f"x{whole['sampling_mb'] / long['sampling_mb']:.2f} that of windows of {args.window}")


if __name__ == "__main__":
    main()
