"""Fig. 14 / App. C reproduction: temporal MultiDiffusion vs non-overlapping windows for the SSR.

The inflated (temporally-aware) SSR sees `window` frames at a time. With plain, non-overlapping
windows every segment is denoised on its own from its own slice of the noise, so the detail the
SSR invents agrees within a segment (its temporal layers see those frames together) but not across
segments: the frame-difference curve (squared difference between adjacent frames) peaks at every
segment boundary and the X-T slice shows horizontal cuts. MultiDiffusion (windows overlapping by
2 frames, predictions averaged at every step) ties the segments together and removes the peaks.

Without `--ssr-ckpt` the script trains a small SSR first, on CPU, with the real stage modules:
stage 0 (2D IF-II style SSR on still 8 -> 32 px pairs of a freshly generated synthetic
benchmark: 4x, where the paper's SSR does 8x), then the inflated SSR (temporal blocks only,
8-frame clips). The seams grow as the SSR learns temporally coherent detail: with 400 + 300
training steps instead of 800 + 600 the non-overlapping ratio was 1.19 instead of 1.37.
With `--ssr-ckpt` (e.g. the demo's `outputs/demo_ssr/demo/checkpoints/last.ckpt`) it upsamples
test clips of `--data-dir` instead. Both sampling runs use the same seed, hence the same noise
and noise-augmented low-res conditioning; only the windowing differs.

Prints, for both variants, the boundary-to-median ratio: mean frame difference across the
non-overlapping segment boundaries over the median frame difference (about 1: no seams), and
writes the Fig. 14 plot and X-T slices.

    python benchmarks/bench_multidiffusion.py                      # train a tiny SSR (~15 min, 2 cores)
    python benchmarks/bench_multidiffusion.py --ssr-ckpt outputs/demo_ssr/demo/checkpoints/last.ckpt \
        --data-dir data/demo
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]

# Stage configs of the in-script SSR (the tiny experiments' models, trained longer at a higher rate).
OBJECTIVE = {"_target_": "lumiere.diffusion.DiffusionObjective", "num_train_timesteps": 1000,
             "beta_schedule": "squaredcos_cap_v2", "prediction_type": "v_prediction", "loss_weighting": "min_snr"}
SAMPLER = {"scheduler": "ddim", "num_inference_steps": 25, "guidance_scale": 1.0}


def stage_config(text_encoder_path: str, low_res_size: int, lr: float, **network) -> dict:
    return {"_target_": "lumiere.training.ssr.SuperResolutionModule", "text_encoder_path": text_encoder_path,
            "low_res_size": low_res_size, "objective": OBJECTIVE, "sampler": SAMPLER, "ema_decay": 0.99,
            "lr_warmup_steps": 20, "caption_dropout": 0.1,
            "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": lr, "weight_decay": 0.0},
            **network}


def fit(model_config: dict, datamodule, steps: int, out_path: Path):
    """Train a stage with the real LightningModule for `steps` optimizer steps; save a checkpoint."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    module = instantiate(model_config, _convert_="partial")
    module.model_config = model_config
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, max_epochs=-1, logger=False,
                         enable_checkpointing=False, limit_val_batches=0, num_sanity_val_steps=0,
                         enable_model_summary=False, gradient_clip_val=1.0, enable_progress_bar=True)
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(str(out_path), weights_only=True)  # no optimizer state: for sampling
    return module


def train_tiny_ssr(work_dir: Path, low: int, high: int, steps_2d: int, steps_temporal: int,
                   seed: int) -> tuple[str, str]:
    """Generate low -> high px data, train the 2D SSR, export it, inflate and train the temporal blocks."""
    import lightning.pytorch as pl

    from lumiere.data import VideoDataModule, generate_synthetic_benchmark
    from lumiere.models import build_tiny_text_encoder

    data_dir = work_dir / "data"
    generate_synthetic_benchmark(data_dir, num_train=128, num_val=4, num_test=16, num_frames=32, fps=16,
                                 size=low, hr_size=high, seed=seed, min_shards=4, progress=False)
    # The SSR's text conditioning: a random tiny text encoder stands in for the T2I stage's
    # (the low-res clip carries almost all of what the SSR needs).
    encoder_path = work_dir / "artifacts" / "t2i" / "text_encoder"
    if not encoder_path.is_dir():
        torch.manual_seed(seed)
        build_tiny_text_encoder().save_pretrained(encoder_path)
    pl.seed_everything(seed)
    shards = {f"{split}_shards": str(data_dir / split) for split in ("train", "val", "test")}

    t0 = time.time()
    stills = VideoDataModule(**shards, resolution=low, hr_resolution=high, image_mode=True, frames_per_clip=4,
                             batch_size=16, num_workers=1, shuffle_buffer=256, epoch_length=100, seed=seed)
    stage0 = stage_config(str(encoder_path), low, lr=1e-3,
                          unet={"_target_": "lumiere.models.build_unet", "preset": "if_stage2_tiny",
                                "sample_size": high})
    ssr_2d = fit(stage0, stills, steps_2d, work_dir / "ssr_2d.ckpt")
    ssr_2d.export_pretrained(str(work_dir / "artifacts" / "ssr"))
    print(f"stage 0 (2D SSR, {steps_2d} steps): {time.time() - t0:.0f} s", flush=True)

    t0 = time.time()
    clips = VideoDataModule(**shards, resolution=low, hr_resolution=high, num_frames=8, target_fps=16,
                            batch_size=4, num_workers=1, epoch_length=100, seed=seed)
    inflated = stage_config(str(encoder_path), low, lr=1e-3,
                            unet_path=str(work_dir / "artifacts" / "ssr" / "ssr_unet"),
                            stunet={"_target_": "lumiere.models.STUNet", "_partial_": True,
                                    "temporal_resampling": False, "num_temporal_attention_layers": 1})
    checkpoint = work_dir / "ssr_inflated.ckpt"
    fit(inflated, clips, steps_temporal, checkpoint)
    print(f"inflated SSR ({steps_temporal} steps): {time.time() - t0:.0f} s", flush=True)
    return str(checkpoint), str(data_dir)


def load_test_clips(data_dir: str, low_res_size: int, hr_size: int, num_clips: int, num_frames: int):
    """The first `num_clips` test clips: low-res input, high-res ground truth, captions."""
    from lumiere.data import VideoDataModule

    datamodule = VideoDataModule(test_shards=os.path.join(data_dir, "test"), resolution=low_res_size,
                                 hr_resolution=hr_size, num_frames=num_frames, frame_stride=1,
                                 batch_size=num_clips, num_workers=0)
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    return batch["video"].float(), batch["video_hr"].float(), list(batch["caption"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ssr-ckpt", help="an inflated SSR checkpoint (default: train a tiny one here)")
    parser.add_argument("--data-dir", help="synthetic benchmark with test clips (needed with --ssr-ckpt)")
    parser.add_argument("--out-dir", default=str(REPO_ROOT / "outputs" / "bench_multidiffusion"))
    # 4x, as a stand-in for the paper's 8x (128 -> 1024 px): the SSR has detail to invent, and the
    # invented detail is what disagrees between independently denoised windows.
    parser.add_argument("--low-res", type=int, default=8, help="in-script SSR: low-resolution frame size")
    parser.add_argument("--high-res", type=int, default=32, help="in-script SSR: output frame size")
    parser.add_argument("--steps-2d", type=int, default=800, help="stage-0 (2D SSR) training steps")
    parser.add_argument("--steps-temporal", type=int, default=600, help="inflated SSR training steps")
    parser.add_argument("--num-clips", type=int, default=16)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--inference-steps", type=int, default=25)
    parser.add_argument("--noise-level", type=int, default=None, help="low-res augmentation level (default: the SSR's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from lumiere.diffusion import segment_boundaries
    from lumiere.training import load_module_from_checkpoint
    from lumiere.training.ssr import upsample_video
    from lumiere.viz import boundary_to_median_ratio, frame_difference_curve, plot_frame_difference, save_xt_slice

    torch.set_num_threads(args.threads)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.ssr_ckpt:
        if not args.data_dir:
            parser.error("--ssr-ckpt needs --data-dir (a synthetic benchmark with test clips at the SSR's sizes)")
        ckpt, data_dir = args.ssr_ckpt, args.data_dir
    else:
        ckpt, data_dir = train_tiny_ssr(out_dir / "train", args.low_res, args.high_res, args.steps_2d,
                                        args.steps_temporal, args.seed)

    ssr = load_module_from_checkpoint(ckpt).eval()
    low_res, high_res, captions = load_test_clips(data_dir, ssr.low_res_size, ssr.sample_size,
                                                  args.num_clips, args.frames)
    boundaries = segment_boundaries(args.frames, args.window)
    videos = {}
    for name, non_overlapping in (("non-overlapping windows", True), ("MultiDiffusion", False)):
        t0 = time.time()
        videos[name] = ssr.upsample(low_res, captions, seed=args.seed, window=args.window, overlap=args.overlap,
                                    num_inference_steps=args.inference_steps, noise_level=args.noise_level,
                                    non_overlapping=non_overlapping)
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)

    # References: the data's own motion (ground truth) and the seam-free bilinear upsampling.
    references = {"ground truth": high_res, "bilinear": upsample_video(low_res, ssr.sample_size)}
    curves = {name: frame_difference_curve(video) for name, video in {**videos, **references}.items()}
    ratios = {name: boundary_to_median_ratio(curve, boundaries) for name, curve in curves.items()}
    # The same on the detail the SSR adds (output minus bilinear upsampling): the clips' own motion,
    # which both variants share, mostly cancels, leaving what the SSR invents frame by frame.
    detail_curves = {name: frame_difference_curve(video - references["bilinear"]) for name, video in videos.items()}
    detail_ratios = {name: boundary_to_median_ratio(curve, boundaries) for name, curve in detail_curves.items()}

    plot_path = out_dir / "frame_difference.png"
    plot_frame_difference({name: curves[name] for name in (*videos, "ground truth")}, plot_path,
                          window_boundaries=boundaries,
                          title=f"SSR frame difference (window {args.window}, {len(captions)} clips)")
    plot_frame_difference(detail_curves, out_dir / "frame_difference_detail.png", window_boundaries=boundaries,
                          title="frame difference of the SSR's detail (output - bilinear)")
    for name, video in {**videos, **references}.items():
        stem = name.replace(" ", "_").replace("-", "_")
        for index in range(min(2, video.shape[0])):
            save_xt_slice(out_dir / f"xt_{stem}_{index}.png", video[index])
    result = {"checkpoint": ckpt, "window": args.window, "overlap": args.overlap, "frames": args.frames,
              "clips": args.num_clips, "boundaries": boundaries,
              "boundary_to_median_ratio": ratios, "detail_boundary_to_median_ratio": detail_ratios,
              "curves": {name: curve.tolist() for name, curve in curves.items()},
              "detail_curves": {name: curve.tolist() for name, curve in detail_curves.items()},
              "plot": str(plot_path)}
    (out_dir / "result.json").write_text(json.dumps(result, indent=1))

    print(f"\nboundary-to-median frame-difference ratio (boundaries at frames {boundaries}):")
    for name in (*videos, *references):
        detail = f"   detail only: {detail_ratios[name]:.2f}" if name in detail_ratios else ""
        print(f"  {name:24s} {ratios[name]:6.2f}{detail}")
    print(f"plot: {plot_path}\nX-T slices: {out_dir}/xt_*.png")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
