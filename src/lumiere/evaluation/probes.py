"""How well does a demo checkpoint follow its prompts? Probes on the CPU demo's slice of the benchmark.

- ``t2i`` (a stage-0 T2I checkpoint): 12 prompts (4 colours x 3 shapes) x 4 samples; the
  colour accuracy is the fraction of samples whose dominant palette colour (and at least 4 pixels
  of it) is the prompted one. Chance: 0.25. Also ``colour_from_pure_noise``: whether the colour
  word moves the x0 guess at t = T at all.
- ``stunet`` (a base STUNet checkpoint): 16 linear-motion prompts (each direction 4 times); the
  tracked direction accuracy (``lumiere.metrics.tracking``) of the prompted colour, and the same
  for any palette colour (motion right, colour wrong). Lost or static objects count as wrong.
- ``caption-gap`` (a base STUNet checkpoint and the slice's folder): how much the loss rises when
  the caption's direction word is flipped, against shuffling the frames, at fixed timesteps; and
  what the word is worth to an ideal model at t = T (``ideal_direction_gain_at_T``).
- ``fit-at-T`` (a base STUNet checkpoint and the slice's folder): fine-tunes a copy for a few
  minutes at t near T only and reports whether its x0 guess from pure noise gets any better than
  the slice's average clip, and whether that guess has the prompted colour. A fast check (about
  1 s a step on 2 cores) of whether a configuration *can* learn what the caption says at high noise.

The prompts are captions of the demo slice (``lumiere.data.vocabulary.DEMO_SLICE``), written by
the benchmark's own caption writer; the measurements are those of ``lumiere.metrics.tracking``.
A stage is used through its public interface only: ``generate``, ``encode_text``, the denoiser
``network_forward`` with its ``objective`` (the ``denoise(x, t, cond)`` boundary of
``lumiere.diffusion``), called inside ``frozen_compute_scope``, ``sample_shape`` and ``sample_size``. ``fit-at-T`` trains with its own
short loop because it draws t from a narrow range near T, which the stage's training step does
not offer.

Not a timed benchmark: these numbers are about quality. The README's demo section lists what the
demo configurations scored. Usage::

    python -m lumiere.evaluation.probes t2i outputs/demo_t2i/demo/checkpoints/last.ckpt
    python -m lumiere.evaluation.probes stunet outputs/demo_stunet/demo/checkpoints/last.ckpt --scheduler ddpm
    python -m lumiere.evaluation.probes caption-gap outputs/demo_stunet/demo/checkpoints/last.ckpt --data data/demo
    python -m lumiere.evaluation.probes fit-at-T outputs/demo_stunet/demo/checkpoints/last.ckpt --data data/demo --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

import numpy as np
import torch

from lumiere.data.rendering import render_clip
from lumiere.data.vocabulary import (
    DEMO_SLICE,
    DIRECTIONS_BY_MOTION,
    OPPOSITE_DIRECTION,
    RGB,
    caption_from_labels,
    parse_restrictions,
    sample_labels,
)
from lumiere.errors import ConfigError, InputFileError, LumiereError
from lumiere.metrics.tracking import (
    centroid_and_area,
    colour_masks,
    direction_from_track,
    nearest_palette_colour,
    palette_table,
    track_colour,
    tracked_direction_accuracy,
)

COLOURS = tuple(DEMO_SLICE["color"])                  # red, green, blue, yellow
SHAPES = tuple(DEMO_SLICE["shape"])                   # circle, square, triangle
DIRECTIONS = tuple(DIRECTIONS_BY_MOTION["linear"])    # left, right, up, down
PALETTE_NAMES, PALETTE = palette_table(RGB)           # every colour of the benchmark, (K, 3)
MIN_PIXELS = 4                                        # a frame shows an object with at least this many pixels


def demo_caption(colour: str, shape: str, direction: str) -> str:
    """The caption of a demo-slice clip, e.g. "a red circle moving left at medium speed on a plain background"."""
    labels = {"shape": shape, "color": colour, "motion": "linear", "direction": direction,
              "speed": DEMO_SLICE["speed"][0], "period": "none", "background": DEMO_SLICE["background"][0],
              "num_objects": DEMO_SLICE["num_objects"][0], "second_shape": "none", "second_color": "none"}
    return caption_from_labels(labels)


def flip_direction(labels: list[dict]) -> list[str]:
    """The caption of each clip with its direction word replaced by the opposite one."""
    return [caption_from_labels({**label, "direction": OPPOSITE_DIRECTION[label["direction"]]}) for label in labels]


# ----------------------------------------------------------------------------------------------
# What the network guesses at t = T and what its loss is at a fixed t
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def guess_rgb_from_pure_noise(module, caption: str, num_images: int, num_frames: int, seed: int) -> torch.Tensor:
    """The per-channel mean (C,) of the network's x0 guess at t = T from ``num_images`` pure-noise draws
    (seeded by ``seed + 1``, so every caption gets the same draws)."""
    t = torch.full((num_images,), module.objective.num_train_timesteps - 1, device=module.device)
    noise = torch.randn(module.sample_shape(num_images, num_frames), generator=torch.Generator().manual_seed(seed + 1))
    noise = noise.to(module.device)
    cond = module.encode_text([caption] * num_images)
    with module.frozen_compute_scope():  # bf16/fp16 frozen parts meet the float32 temporal layers
        guess = module.objective.predict_x0(module.network_forward(noise, t, cond), noise, t)
    return guess.float().mean(dim=(0, 2, 3, 4)).cpu()


def loss_at(module, x0: torch.Tensor, cond: dict, timesteps: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The stage's diffusion loss of clips ``x0`` at given timesteps and noise (a scalar tensor)."""
    with module.frozen_compute_scope():
        return module.objective.loss(module.network_forward, x0, cond, timesteps=timesteps, noise=noise)[0].float()


# ----------------------------------------------------------------------------------------------
# t2i: does the colour word reach the image?
# ----------------------------------------------------------------------------------------------


def t2i_colour_accuracy(module, steps: int, scheduler: str | None, guidance: float | None, seed: int) -> dict:
    colours = [c for c in COLOURS for _ in SHAPES]
    prompts = [demo_caption(c, s, d) for c in COLOURS for s, d in zip(SHAPES, ("left", "up", "right"))]
    images = module.generate(prompts, num_frames=4, seed=seed, num_inference_steps=steps, scheduler=scheduler,
                             guidance_scale=guidance, progress=False).float().cpu()  # 4 independent images per prompt
    areas = torch.stack([colour_masks(images, torch.full((len(prompts),), k), PALETTE).sum(dim=(-2, -1))
                         for k in range(len(PALETTE_NAMES))], dim=1)  # (prompts, colours, samples)
    wanted = torch.tensor([PALETTE_NAMES.index(c) for c in colours])[:, None]
    hits = (areas.argmax(dim=1) == wanted) & (areas.max(dim=1).values >= MIN_PIXELS)
    return {"colour_accuracy": float(hits.float().mean()), "num_samples": int(hits.numel()), "chance": 1 / len(COLOURS),
            "colour_from_pure_noise": colour_from_pure_noise(module, seed)}


def colour_from_pure_noise(module, seed: int, num_images: int = 8) -> dict:
    """Does the caption reach the x0 guess at t = T, where x_t is pure noise? The mean RGB of the guess for
    "a <colour> circle ..." (``num_images`` noise draws, the same for every colour), and the largest
    difference between two colours' guesses in any channel. On the slice's clips the colour moves a
    channel's clip mean by about 0.2 (e.g. red clips (-0.43, -0.65, -0.62), blue (-0.63, -0.59, -0.42))."""
    guesses = {colour: guess_rgb_from_pure_noise(module, demo_caption(colour, "circle", "right"),
                                                 num_images=num_images, num_frames=1, seed=seed)
               for colour in COLOURS}
    stacked = torch.stack(list(guesses.values()))
    spread = stacked.amax(dim=0) - stacked.amin(dim=0)
    return {"guess_rgb": {c: [round(float(v), 3) for v in g] for c, g in guesses.items()},
            "largest_channel_spread": round(float(spread.max()), 4)}


# ----------------------------------------------------------------------------------------------
# stunet: does the prompted object move the prompted way?
# ----------------------------------------------------------------------------------------------


def stunet_direction_accuracy(module, steps: int, scheduler: str | None, guidance: float | None, seed: int,
                              batch_size: int = 8, sheet: str | None = None) -> dict:
    colours, directions, prompts = [], [], []
    for i in range(16):
        colour = COLOURS[(i + i // len(COLOURS)) % len(COLOURS)]
        shape, direction = SHAPES[i % len(SHAPES)], DIRECTIONS[i % len(DIRECTIONS)]
        prompts.append(demo_caption(colour, shape, direction))
        colours.append(colour)
        directions.append(direction)
    videos = torch.cat([module.generate(prompts[k:k + batch_size], seed=seed + k, num_inference_steps=steps,
                                        scheduler=scheduler, guidance_scale=guidance, progress=False).float().cpu()
                        for k in range(0, len(prompts), batch_size)])
    if sheet:
        from lumiere.viz import save_sample_sheet

        save_sample_sheet(sheet, videos, prompts)
    result = tracked_direction_accuracy(videos, colours, directions, RGB)
    prompted = direction_from_track(*track_colour(videos, torch.tensor([PALETTE_NAMES.index(c) for c in colours]), PALETTE))
    result["prompted_vs_tracked"] = [f"{d}->{p}" for d, p in zip(directions, prompted)]
    result.update(any_colour_tracks(videos, directions))
    return result


def any_colour_tracks(videos: torch.Tensor, directions: list[str]) -> dict:
    """Does *something* move the prompted way, whatever its colour? Pixels near any palette colour
    are tracked as one object; the control is how often it moves the opposite way. Also whether it
    is one object: the share of a clip's frames (with an object) whose dominant palette colour is the
    clip's most common one, averaged over clips, and the share of frames with an object."""
    distance, nearest = nearest_palette_colour(videos, PALETTE)  # (B, T, H, W)
    mask = distance <= 100                                       # pixels near some palette colour
    centroid, area = centroid_and_area(mask)
    predicted = direction_from_track(centroid, area)
    result = {
        "any_colour_direction_accuracy": sum(p == d for p, d in zip(predicted, directions)) / len(directions),
        "any_colour_tracks": dict(Counter(predicted)),
        "any_colour_prompted_vs_tracked": [f"{d}->{p}" for d, p in zip(directions, predicted)],
        # As often the opposite way as the prompted way means the word is not followed.
        "any_colour_opposite_direction_rate":
            sum(p == OPPOSITE_DIRECTION[d] for p, d in zip(predicted, directions)) / len(directions),
    }
    kept = []
    for clip in range(videos.shape[0]):
        dominant = [int(torch.bincount(nearest[clip, t][mask[clip, t]], minlength=len(PALETTE_NAMES)).argmax())
                    for t in range(mask.shape[1]) if area[clip, t] >= MIN_PIXELS]
        if dominant:
            kept.append(Counter(dominant).most_common(1)[0][1] / len(dominant))
    result["colour_consistency"] = sum(kept) / len(kept) if kept else None
    result["frames_with_object"] = float((area >= MIN_PIXELS).float().mean())
    return result


# ----------------------------------------------------------------------------------------------
# The slice's clips: what the direction word can be worth, and what it is worth to the model
# ----------------------------------------------------------------------------------------------


def ideal_direction_gain(restrictions: dict, render, num_clips: int = 384, seed: int = 1) -> dict:
    """What the direction word can be worth at t = T, where x_t is pure noise and the best x0 guess is
    the mean clip given the caption: the x0 MSE of the mean clip given colour and shape, against the
    mean given colour, shape and direction (pooled within-group variances, ddof 1, over ``num_clips``
    clips of the slice). A relative gain of 0 means the slice's clips give the word nothing to predict."""
    rng = np.random.default_rng(seed)
    groups: dict[tuple, list] = {}
    for i in range(num_clips):
        label = sample_labels(rng, restrictions)
        clip = render(label, 20_000 + i).astype(np.float32) / 127.5 - 1
        groups.setdefault((label["color"], label["shape"], label["direction"]), []).append(clip)

    def pooled_variance(members: list[list]) -> float:
        members = [m for m in members if len(m) > 1]  # a lone clip has no within-group variance
        total = sum(np.stack(m).var(axis=0, ddof=1).mean() * (len(m) - 1) for m in members)
        return float(total / max(sum(len(m) - 1 for m in members), 1))

    by_colour_shape: dict[tuple, list] = {}
    for key, members in groups.items():
        by_colour_shape.setdefault(key[:2], []).extend(members)
    without, with_direction = pooled_variance(list(by_colour_shape.values())), pooled_variance(list(groups.values()))
    knowing_nothing = pooled_variance([[clip for members in groups.values() for clip in members]])
    return {"x0_mse_knowing_nothing": knowing_nothing, "x0_mse_knowing_colour_shape": without,
            "x0_mse_knowing_colour_shape_direction": with_direction,
            "relative_gain": (without - with_direction) / without, "num_clips": num_clips}


def slice_of(data_dir: str, size: int):
    """The slice's restrictions and a renderer of its clips (16 frames at 8 fps, its object scale and start rule)."""
    from lumiere.data.shards import read_manifest

    manifest = read_manifest(data_dir)
    if manifest is None:
        raise InputFileError(f"{data_dir} holds no manifest.json: give the slice's folder (python -m lumiere.data.synthetic)")
    config = manifest["config"]
    restrictions = parse_restrictions(config.get("restrictions") or {})
    if restrictions.get("motion") != ["linear"]:
        raise ConfigError(f"this probe needs a linear-motion slice (--restrict motion=linear), {data_dir} has {restrictions.get('motion')}")

    def render(label, clip_seed, num_frames: int = 16, fps: float = 8.0):
        return render_clip(label, num_frames, size, fps, seed=clip_seed, object_scale=config.get("object_scale", 1.0),
                           linear_start=config.get("linear_start", "anywhere"))

    return restrictions, render


def _as_video(clips) -> torch.Tensor:
    """uint8 clips (t, h, w, c) -> a (B, C, T, H, W) batch in [-1, 1]."""
    return torch.stack([torch.from_numpy(c).permute(3, 0, 1, 2).float() / 127.5 - 1 for c in clips])


def caption_direction_gap(module, data_dir: str, seed: int, num_clips: int = 48, num_frames: int = 16,
                          fps: float = 8.0, timesteps: tuple[int, ...] = (200, 500, 800, 950)) -> dict:
    """The loss change when every caption's direction word is flipped, against shuffling the frames,
    at fixed timesteps on ``num_clips`` fresh clips of the slice; plus ``ideal_direction_gain``."""
    restrictions, render = slice_of(data_dir, int(module.sample_size))
    rng = np.random.default_rng(seed)
    labels = [sample_labels(rng, restrictions) for _ in range(num_clips)]
    x0 = _as_video([render(label, 10_000 + i, num_frames, fps) for i, label in enumerate(labels)])
    captions = [caption_from_labels(label) for label in labels]
    flipped = flip_direction(labels)
    generator = torch.Generator().manual_seed(seed)
    noise = module.objective.draw_noise(tuple(x0.shape), generator=generator).to(module.device)
    shuffle = torch.randperm(num_frames, generator=generator)
    x0 = x0.to(module.device)
    rows = []
    with torch.no_grad():
        true_cond, flipped_cond = module.encode_text(captions), module.encode_text(flipped)

        def loss(video, cond, t):
            ts = torch.full((num_clips,), t, dtype=torch.long, device=module.device)
            return float(loss_at(module, video, cond, ts, noise))

        for t in timesteps:
            base = loss(x0, true_cond, t)
            rows.append({"t": t, "loss": base, "direction_word_gap": loss(x0, flipped_cond, t) - base,
                         "shuffled_frames_gap": loss(x0[:, :, shuffle], true_cond, t) - base})
    for row in rows:
        row["direction_word_gap_relative"] = row["direction_word_gap"] / row["loss"]
    return {"num_clips": num_clips, "example": f"{captions[0]!r} -> {flipped[0]!r}", "gaps": rows,
            "ideal_direction_gain_at_T": ideal_direction_gain(restrictions, render)}


def fit_at_t(module, data_dir: str, seed: int, steps: int = 150, t_range: tuple[int, int] = (990, 999), lr: float = 2e-3,
             unfreeze: bool = False, batch_size: int = 4, num_eval: int = 32, eval_every: int = 50) -> dict:
    """Can this network learn what the caption says about x0 at t = T? Fine-tune a copy of the checkpoint
    (its trainable weights; with ``unfreeze`` the whole U-Net too, a control) with AdamW for ``steps`` batches
    of fresh slice clips at t drawn from ``t_range``, and watch the x0 loss at t = 999 on fixed clips with
    their true captions, with captions shifted by one clip (wrong ones) and with the direction word
    flipped, against what the slice's mean clip scores knowing nothing, colour and shape, or also the
    direction (``ideal_direction_gain``).
    Also reports, for two captions, the per-channel mean of the network's x0 guess from pure noise (8
    noise draws) beside that of the caption's clips: whether the guess has even the prompted colour."""
    restrictions, render = slice_of(data_dir, int(module.sample_size))
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    labels = [sample_labels(rng, restrictions) for _ in range(num_eval)]
    eval_x0 = _as_video([render(label, 10_000 + i) for i, label in enumerate(labels)])
    eval_noise = module.objective.draw_noise(tuple(eval_x0.shape), generator=generator).to(module.device)
    eval_x0 = eval_x0.to(module.device)
    captions = [caption_from_labels(label) for label in labels]
    probes = {}  # two fixed captions, and the mean of 64 of their clips
    for colour, shape, direction in (("red", "circle", "right"), ("blue", "square", "up")):
        label = {**sample_labels(rng, restrictions), "color": colour, "shape": shape, "direction": direction}
        clip_mean = _as_video([render(label, 30_000 + i) for i in range(64)]).mean(dim=0)
        probes[caption_from_labels(label)] = clip_mean.mean(dim=(1, 2, 3))

    if unfreeze:  # the control: the frozen T2I U-Net inside every STUNet trains too
        from lumiere.models import STUNet

        for stunet in (m for m in module.modules() if isinstance(m, STUNet)):
            stunet.unet.requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ts_999 = torch.full((num_eval,), module.objective.num_train_timesteps - 1, device=module.device)
    with torch.no_grad():  # the text encoder stays frozen: encode the evaluation captions once
        cond = module.encode_text(captions)
        eval_conds = {"loss_at_T": cond, "loss_at_T_wrong_captions": {k: torch.roll(v, 1, dims=0) for k, v in cond.items()},
                      "loss_at_T_flipped_direction": module.encode_text(flip_direction(labels))}
    num_frames = eval_x0.shape[2]

    def evaluate(step: int) -> dict:
        module.eval()
        with torch.no_grad():
            row = {"step": step}
            for name, c in eval_conds.items():
                row[name] = float(loss_at(module, eval_x0, c, ts_999, eval_noise))
            row["mean_rgb_from_pure_noise"] = {
                caption: {"guess_rgb": [round(float(v), 3) for v in guess_rgb_from_pure_noise(module, caption, 8, num_frames, seed)],
                          "clips_rgb": [round(float(v), 3) for v in clip_channel_mean]}
                for caption, clip_channel_mean in probes.items()}
        module.train()
        return row

    trajectory = [evaluate(0)]
    losses = []
    for step in range(1, steps + 1):
        batch_labels = [sample_labels(rng, restrictions) for _ in range(batch_size)]
        x0 = _as_video([render(label, 100_000 + batch_size * step + i) for i, label in enumerate(batch_labels)]).to(module.device)
        with torch.no_grad():
            cond = module.encode_text([caption_from_labels(label) for label in batch_labels])
        t = torch.randint(t_range[0], t_range[1] + 1, (batch_size,), generator=generator).to(module.device)
        with module.frozen_compute_scope():
            loss = module.objective.loss(module.network_forward, x0, cond, timesteps=t, generator=generator)[0].float()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % eval_every == 0 or step == steps:
            trajectory.append({**evaluate(step), "train_loss": float(np.mean(losses[-eval_every:]))})
    return {"t_range": list(t_range), "lr": lr, "unfreeze": unfreeze, "batch_size": batch_size,
            "trainable_parameters": sum(p.numel() for p in params), "trajectory": trajectory,
            "ideal_at_T": ideal_direction_gain(restrictions, render)}


# ----------------------------------------------------------------------------------------------
# Command
# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumiere.evaluation.probes", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", choices=("t2i", "stunet", "caption-gap", "fit-at-T"))
    parser.add_argument("ckpt", help="a Lightning checkpoint of that stage (EMA weights are used)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--scheduler", default=None, help="ddpm | ddim | dpmsolver++ (default: the checkpoint's)")
    parser.add_argument("--guidance", type=float, default=None, help="default: the checkpoint's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="e.g. cuda: where the network runs (the probes' bookkeeping stays on the CPU)")
    parser.add_argument("--data", default="data/demo", help="caption-gap: the slice's folder (its manifest.json)")
    parser.add_argument("--timesteps", default="200,500,800,950,999",
                        help="caption-gap: comma-separated timesteps (at 999 x_t is pure noise: only the caption informs)")
    parser.add_argument("--fit-steps", type=int, default=150, help="fit-at-T: batches of 4 fresh clips")
    parser.add_argument("--t-range", default="990,999", help="fit-at-T: the timesteps it trains on (lo,hi)")
    parser.add_argument("--lr", type=float, default=2e-3, help="fit-at-T: AdamW learning rate")
    parser.add_argument("--unfreeze", action="store_true", help="fit-at-T: train the frozen T2I U-Net too (a control)")
    parser.add_argument("--sheet", default=None, help="stunet: also save the probe's clips as a PNG sample sheet here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        from lumiere.training import load_module_from_checkpoint

        module = load_module_from_checkpoint(args.ckpt, use_ema=True).eval().to(args.device)
        if args.stage == "t2i":
            result = t2i_colour_accuracy(module, args.steps, args.scheduler, args.guidance, args.seed)
        elif args.stage == "caption-gap":
            timesteps = tuple(int(t) for t in args.timesteps.split(","))
            result = caption_direction_gap(module, args.data, args.seed, timesteps=timesteps)
        elif args.stage == "fit-at-T":
            lo, hi = (int(t) for t in args.t_range.split(","))
            result = fit_at_t(module, args.data, args.seed, steps=args.fit_steps, t_range=(lo, hi), lr=args.lr,
                              unfreeze=args.unfreeze)
        else:
            result = stunet_direction_accuracy(module, args.steps, args.scheduler, args.guidance, args.seed,
                                               sheet=args.sheet)
    except (LumiereError, OSError) as error:  # bad config or a missing checkpoint / manifest: one line
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"stage": args.stage, "ckpt": args.ckpt, "steps": args.steps, "scheduler": args.scheduler,
                      **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
