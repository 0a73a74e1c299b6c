"""How well does a demo checkpoint follow its prompts? Three quick probes on the demo's slice.

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

Not a timed benchmark: these numbers are about quality. The README's demo section lists what the
demo configurations scored. Usage::

    python benchmarks/probe_prompt_following.py t2i outputs/demo_t2i/demo/checkpoints/last.ckpt
    python benchmarks/probe_prompt_following.py stunet outputs/demo_stunet/demo/checkpoints/last.ckpt --scheduler ddpm
    python benchmarks/probe_prompt_following.py caption-gap outputs/demo_stunet/demo/checkpoints/last.ckpt --data data/demo
    python benchmarks/probe_prompt_following.py fit-at-T outputs/demo_stunet/demo/checkpoints/last.ckpt --data data/demo --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

import torch

from lumiere.data.synthetic import RGB
from lumiere.errors import ConfigError, LumiereError
from lumiere.metrics.tracking import colour_masks, direction_from_track, track_colour, tracked_direction_accuracy

COLOURS = ("red", "green", "blue", "yellow")
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
PALETTE_NAMES = list(RGB)
PALETTE = torch.tensor([RGB[name] for name in PALETTE_NAMES], dtype=torch.float32)


def t2i_colour_accuracy(module, steps: int, scheduler: str | None, guidance: float | None, seed: int) -> dict:
    prompts = [f"a {c} {s} moving {d} at medium speed on a plain background"
               for c in COLOURS for s, d in zip(SHAPES, ("left", "up", "right"))]
    images = module.generate(prompts, num_frames=4, seed=seed, num_inference_steps=steps, scheduler=scheduler,
                             guidance_scale=guidance, progress=False).float().cpu()  # 4 independent images per prompt
    areas = torch.stack([colour_masks(images, torch.full((len(prompts),), k), PALETTE).sum(dim=(-2, -1))
                         for k in range(len(PALETTE_NAMES))], dim=1)  # (prompts, colours, samples)
    wanted = torch.tensor([PALETTE_NAMES.index(p.split()[1]) for p in prompts])[:, None]
    hits = (areas.argmax(dim=1) == wanted) & (areas.max(dim=1).values >= 4)
    return {"colour_accuracy": float(hits.float().mean()), "num_samples": int(hits.numel()), "chance": 0.25,
            "colour_from_pure_noise": colour_from_pure_noise(module, seed)}


def colour_from_pure_noise(module, seed: int, num_images: int = 8) -> dict:
    """Does the caption reach the x0 guess at t = T, where x_t is pure noise? The mean RGB of the guess for
    "a <colour> circle ..." (``num_images`` noise draws, the same for every colour), and the largest
    difference between two colours' guesses in any channel. On the slice's clips the colour moves a
    channel's clip mean by about 0.2 (e.g. red clips (-0.43, -0.65, -0.62), blue (-0.63, -0.59, -0.42))."""
    guesses = {colour: guess_rgb_from_pure_noise(module, f"a {colour} circle moving right at medium speed on a plain background",
                                                 num_images=num_images, num_frames=1, seed=seed)
               for colour in COLOURS}
    stacked = torch.stack(list(guesses.values()))
    spread = stacked.amax(dim=0) - stacked.amin(dim=0)
    return {"guess_rgb": {c: [round(float(v), 3) for v in g] for c, g in guesses.items()},
            "largest_channel_spread": round(float(spread.max()), 4)}


@torch.no_grad()
def guess_rgb_from_pure_noise(module, caption: str, num_images: int, num_frames: int, seed: int) -> torch.Tensor:
    """The per-channel mean (C,) of the network's x0 guess at t = T from ``num_images`` pure-noise draws
    (seeded by ``seed + 1``, so every caption gets the same draws)."""
    t = torch.full((num_images,), module.objective.num_train_timesteps - 1, device=module.device)
    noise = torch.randn(module.sample_shape(num_images, num_frames), generator=torch.Generator().manual_seed(seed + 1))
    noise = noise.to(module.device)
    cond = module.encode_text([caption] * num_images)
    return module.objective.predict_x0(module.network_forward(noise, t, cond), noise, t).mean(dim=(0, 2, 3, 4)).float().cpu()


def flip_direction(captions: list[str], labels: list[dict]) -> list[str]:
    """Each caption with its direction word replaced by the opposite one."""
    return [caption.replace(f"moving {label['direction']}", f"moving {OPPOSITE[label['direction']]}")
            for caption, label in zip(captions, labels)]


def stunet_direction_accuracy(module, steps: int, scheduler: str | None, guidance: float | None, seed: int,
                              batch_size: int = 8, sheet: str | None = None) -> dict:
    colours, directions, prompts = [], [], []
    for i in range(16):
        colour, shape, direction = COLOURS[(i + i // 4) % 4], SHAPES[i % 3], DIRECTIONS[i % 4]
        prompts.append(f"a {colour} {shape} moving {direction} at medium speed on a plain background")
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
    # Any palette colour: does *something* move the prompted way, whatever its colour?
    pixels = (videos.clamp(-1, 1) + 1) * 127.5
    # (B, T, H, W): each pixel's distance to its nearest palette colour, and which colour that is
    distance, nearest = (pixels[:, None] - PALETTE[None, :, :, None, None, None]).norm(dim=2).min(dim=1)
    mask = (distance <= 100).float()  # pixels near some palette colour
    coords = (torch.arange(mask.shape[-1]) + 0.5) / mask.shape[-1]
    area = mask.sum(dim=(-2, -1))
    centroid = torch.stack([(mask * coords).sum(dim=(-2, -1)), (mask * coords[:, None]).sum(dim=(-2, -1))], dim=-1)
    predicted = direction_from_track(centroid / area[..., None], area)
    result["any_colour_direction_accuracy"] = sum(p == d for p, d in zip(predicted, directions)) / len(directions)
    result["any_colour_tracks"] = dict(Counter(predicted))
    result["any_colour_prompted_vs_tracked"] = [f"{d}->{p}" for d, p in zip(directions, predicted)]
    # The control: as often the opposite way as the prompted way means the word is not followed.
    result["any_colour_opposite_direction_rate"] = sum(p == OPPOSITE[d] for p, d in zip(predicted, directions)) / len(directions)
    # Is it one object? The share of a clip's frames (with >= 4 palette pixels) whose dominant palette
    # colour is the clip's most common one, averaged over clips; and the share of frames with an object.
    kept = []
    for clip in range(len(prompts)):
        dominant = [int(torch.bincount(nearest[clip, t][mask[clip, t] > 0], minlength=len(PALETTE_NAMES)).argmax())
                    for t in range(mask.shape[1]) if area[clip, t] >= 4]
        if dominant:
            kept.append(Counter(dominant).most_common(1)[0][1] / len(dominant))
    result["colour_consistency"] = sum(kept) / len(kept) if kept else None
    result["frames_with_object"] = float((area >= 4).float().mean())
    return result


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def ideal_direction_gain(restrictions: dict, render, num_clips: int = 384, seed: int = 1) -> dict:
    """What the direction word can be worth at t = T, where x_t is pure noise and the best x0 guess is
    the mean clip given the caption: the x0 MSE of the mean clip given colour and shape, against the
    mean given colour, shape and direction (pooled within-group variances, ddof 1, over ``num_clips``
    clips of the slice). A relative gain of 0 means the slice's clips give the word nothing to predict."""
    import numpy as np

    from lumiere.data.synthetic import sample_labels

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


def _slice(data_dir: str, size: int):
    """The slice's restrictions and a renderer of its clips (16 frames at 8 fps, its object scale and start rule)."""
    from lumiere.data.synthetic import parse_restrictions, render_clip

    with open(os.path.join(data_dir, "manifest.json")) as handle:
        config = json.load(handle)["config"]
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
    import numpy as np

    from lumiere.data.synthetic import caption_from_labels, sample_labels

    restrictions, render = _slice(data_dir, int(module.sample_size))
    rng = np.random.default_rng(seed)
    labels = [sample_labels(rng, restrictions) for _ in range(num_clips)]
    x0 = _as_video([render(label, 10_000 + i, num_frames, fps) for i, label in enumerate(labels)])
    captions = [caption_from_labels(label) for label in labels]
    flipped = flip_direction(captions, labels)
    generator = torch.Generator().manual_seed(seed)
    noise = module.objective.draw_noise(tuple(x0.shape), generator=generator).to(module.device)
    shuffle = torch.randperm(num_frames, generator=generator)
    x0 = x0.to(module.device)
    rows = []
    with torch.no_grad():
        true_cond, flipped_cond = module.encode_text(captions), module.encode_text(flipped)

        def loss(video, cond, t):
            ts = torch.full((num_clips,), t, dtype=torch.long, device=module.device)
            return float(module.objective.loss(module.network_forward, video, cond, timesteps=ts, noise=noise)[0])

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
    import numpy as np

    from lumiere.data.synthetic import caption_from_labels, sample_labels

    restrictions, render = _slice(data_dir, int(module.sample_size))
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

    if unfreeze:
        from lumiere.models import STUNet

        for stunet in (m for m in module.modules() if isinstance(m, STUNet)):
            stunet.unet.requires_grad_(True)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ts_999 = torch.full((num_eval,), module.objective.num_train_timesteps - 1, device=module.device)
    with torch.no_grad():  # the text encoder stays frozen: encode the evaluation captions once
        cond = module.encode_text(captions)
        eval_conds = {"loss_at_T": cond, "loss_at_T_wrong_captions": {k: torch.roll(v, 1, dims=0) for k, v in cond.items()},
                      "loss_at_T_flipped_direction": module.encode_text(flip_direction(captions, labels))}
    num_frames = eval_x0.shape[2]

    def evaluate(step: int) -> dict:
        module.eval()
        with torch.no_grad():
            row = {"step": step}
            for name, c in eval_conds.items():
                row[name] = float(module.objective.loss(module.network_forward, eval_x0, c, timesteps=ts_999, noise=eval_noise)[0])
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
        loss = module.objective.loss(module.network_forward, x0, cond, timesteps=t, generator=generator)[0]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
