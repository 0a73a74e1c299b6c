"""Synthetic motion benchmark: captioned clips of moving shapes, rendered offline from a seed.

The paper trains on 30M captioned videos of 80 frames at 16 fps (Sec. 5) and argues that a
model generating all frames at once learns *globally coherent* motion, in particular periodic
motion that a keyframe + temporal-super-resolution cascade aliases (Sec. 1, Fig. 2). This
benchmark is a small, controllable stand-in that stresses exactly that:

* linear motion in four directions (wrapping around the frame), bouncing off the walls,
  rotation (clockwise / counterclockwise), a pendulum swing and a walk-like hop (several
  periods per clip), and pulsing (periodic scaling);
* three speeds (the period of periodic motions follows the speed);
* one or two shapes in eight colours on plain, striped, checkered or gradient backgrounds.

Each clip is a *continuous* scene description drawn from ``(labels, seed)`` and rendered at any
size (:mod:`lumiere.data.rendering`), so the same scene at 32 and 128 pixels gives aligned pairs
for the spatial super-resolution stage (Sec. 3.2). Each clip's caption is generated from its
labels and its labels are stored in the sample json (:mod:`lumiere.data.vocabulary`), so
evaluation can train a domain classifier and score prompt adherence and motion. This module
writes the benchmark: WebDataset shards per split and a manifest.

CLI::

    python -m lumiere.data.synthetic --out data/synthetic --train 512 --val 64 --test 64 \
        --frames 80 --fps 16 --size 32 --hr-size 128 --seed 0
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from lumiere.data.rendering import LINEAR_STARTS, build_scene, render_scene
from lumiere.data.shards import parse_bytes
from lumiere.data.vocabulary import (
    ATTRIBUTE_VOCAB,
    RESTRICTABLE,
    caption_from_labels,
    check_restrictions,
    parse_restrictions,
    sample_labels,
)
from lumiere.errors import ConfigError, LumiereError

GENERATOR_VERSION = 2  # bump when rendering or captions change: a manifest from another version is stale

# ----------------------------------------------------------------------------------------------
# Benchmark generation: WebDataset shards + manifest
# ----------------------------------------------------------------------------------------------

SPLITS = ("train", "val", "test")


def _clip_seed(seed: int, split: str, index: int) -> int:
    """Independent, reproducible per-clip seed (adding a clip never changes the others)."""
    sequence = np.random.SeedSequence([int(seed), SPLITS.index(split), int(index)])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def make_sample(
    split: str, index: int, *, seed: int, num_frames: int, fps: float, size: int, hr_size: int | None, crf: int = 18,
    restrictions: dict[str, list[str]] | None = None, object_scale: float = 1.0, linear_start: str = "anywhere",
) -> dict[str, Any]:
    """One shard sample (``__key__``, ``mp4``, optional ``hr.mp4``, ``txt``, ``json``)."""
    from lumiere.data.codec import encode_h264

    clip_seed = _clip_seed(seed, split, index)
    labels = sample_labels(np.random.default_rng(clip_seed), restrictions)
    scene = build_scene(labels, clip_seed, object_scale, linear_start)
    caption = caption_from_labels(labels)
    meta = {
        "caption": caption,
        "labels": labels,
        "fps": float(fps),
        "num_frames": int(num_frames),
        "width": int(size),
        "height": int(size),
        "seed": clip_seed,
        "scene": scene,
    }
    sample = {
        "__key__": f"{split}_{index:06d}",
        "mp4": encode_h264(render_scene(scene, num_frames, size, fps), fps, crf=crf),
        "txt": caption,
    }
    if hr_size:
        sample["hr.mp4"] = encode_h264(render_scene(scene, num_frames, hr_size, fps), fps, crf=crf)
        meta["hr_width"] = meta["hr_height"] = int(hr_size)
    sample["json"] = json.dumps(meta).encode("utf-8")
    return sample


def _make_sample_star(args: tuple) -> dict[str, Any]:
    render, job = args
    return render(*job)


def generate_synthetic_benchmark(
    out_dir: str | Path,
    *,
    num_train: int = 512,
    num_val: int = 64,
    num_test: int = 64,
    num_frames: int = 80,
    fps: float = 16.0,
    size: int = 32,
    hr_size: int | None = 128,
    seed: int = 0,
    shard_max_bytes: int = 64 * 2**20,
    min_shards: int = 16,
    crf: int = 18,
    overwrite: bool = False,
    progress: bool = True,
    workers: int = 1,
    restrictions: dict[str, list[str]] | list[str] | None = None,
    object_scale: float = 1.0,
    linear_start: str = "anywhere",
) -> dict[str, Any]:
    """Write the benchmark as WebDataset shards under ``out_dir/{train,val,test}/`` and return the
    manifest (also written to ``out_dir/manifest.json``).

    Shards close at ``shard_max_bytes`` or when a split reaches ``min_shards`` shards' worth of
    samples (``ceil(n / min_shards)`` per shard), so that DDP ranks x DataLoader workers each get
    whole shards. Regenerating with the same config is a no-op; a different config in the same
    folder raises :class:`ConfigError` unless ``overwrite``. ``workers`` > 1 renders and encodes
    clips in that many processes; the output does not depend on it (per-clip seeds).
    ``restrictions`` (``{"motion": ["linear"]}`` or ``["motion=linear"]``) draws labels from a
    subset of the label space (:func:`sample_labels`), e.g. the CPU demo's easier benchmark;
    ``object_scale`` enlarges (or shrinks) every shape; ``linear_start="behind"`` starts linear
    motions on the side they leave (:func:`build_scene`).
    """
    from tqdm.auto import tqdm

    from lumiere.data.shards import ShardSink, prepare_output_dir, write_manifest

    counts = {"train": int(num_train), "val": int(num_val), "test": int(num_test)}
    if any(n < 0 for n in counts.values()) or sum(counts.values()) == 0:
        raise ConfigError(f"split sizes must be >= 0 and not all zero, got {counts}")
    if num_frames < 1 or fps <= 0:
        raise ConfigError(f"need num_frames >= 1 and fps > 0, got {num_frames} frames at {fps} fps")
    for name, value in (("size", size), ("hr_size", hr_size)):
        if value is not None and (value < 4 or value % 2):
            raise ConfigError(f"{name} must be an even number >= 4 (H.264 yuv420p), got {value}")
    hr_size = int(hr_size) if hr_size else None
    restrictions = parse_restrictions(restrictions)
    check_restrictions(restrictions)  # fail now, not in a worker halfway through
    build_scene(sample_labels(np.random.default_rng(0), restrictions), 0, object_scale, linear_start)  # same for these
    config = {
        "generator": "lumiere.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "num_train": counts["train"],
        "num_val": counts["val"],
        "num_test": counts["test"],
        "num_frames": int(num_frames),
        "fps": float(fps),
        "size": int(size),
        "hr_size": hr_size,
        "seed": int(seed),
        "shard_max_bytes": int(shard_max_bytes),
        "min_shards": int(min_shards),
        "crf": int(crf),
    }
    # Only when set: the full benchmark's config (and its manifests) are unchanged.
    if restrictions:
        config["restrictions"] = restrictions
    if object_scale != 1.0:
        config["object_scale"] = float(object_scale)
    if linear_start != "anywhere":
        config["linear_start"] = linear_start
    out_dir = Path(out_dir)
    existing = prepare_output_dir(out_dir, config, SPLITS, overwrite=overwrite)
    if existing is not None:
        if progress:
            print(f"{out_dir} already holds this benchmark (same config): nothing to do", file=sys.stderr)
        return existing

    manifest: dict[str, Any] = {"config": config, "complete": False, "splits": {}, "attribute_vocab": ATTRIBUTE_VOCAB}
    write_manifest(out_dir, manifest)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    render = functools.partial(
        make_sample, seed=seed, num_frames=num_frames, fps=fps, size=size, hr_size=hr_size, crf=crf, restrictions=restrictions,
        object_scale=object_scale, linear_start=linear_start,
    )
    # spawn, not fork: a caller with threads (torch, DataLoader, Lightning) can deadlock forked
    # children; a broken pool raises instead of hanging
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers > 1 else None
    bar = tqdm(total=sum(counts.values()), desc="synthetic clips", unit="clip", disable=not progress)
    try:
        for split in SPLITS:
            if not counts[split]:
                continue
            max_count = max(1, math.ceil(counts[split] / max(1, min_shards)))
            jobs = [(split, index) for index in range(counts[split])]
            samples = pool.map(_make_sample_star, [(render, job) for job in jobs], chunksize=4) if pool else (render(*job) for job in jobs)
            with ShardSink(out_dir / split, prefix=split, max_bytes=shard_max_bytes, max_count=max_count) as sink:
                for sample in samples:
                    sink.write(sample)
                    bar.update(1)
            manifest["splits"][split] = sink.summary(root=out_dir)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    manifest["complete"] = True
    write_manifest(out_dir, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lumiere.data.synthetic",
        description="Generate the synthetic motion benchmark as WebDataset shards.",
    )
    parser.add_argument("--out", required=True, help="dataset root (train/, val/, test/, manifest.json)")
    parser.add_argument("--train", type=int, default=512, help="training clips")
    parser.add_argument("--val", type=int, default=64, help="validation clips")
    parser.add_argument("--test", type=int, default=64, help="test clips")
    parser.add_argument("--frames", type=int, default=80, help="frames per clip (paper: 80)")
    parser.add_argument("--fps", type=float, default=16.0, help="frame rate (paper: 16)")
    parser.add_argument("--size", type=int, default=32, help="base resolution (square, even)")
    parser.add_argument("--hr-size", type=int, default=128, help="high resolution for SR pairs; 0 disables")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-max-bytes", type=parse_bytes, default=64 * 2**20, help="e.g. 64MB")
    parser.add_argument("--min-shards", type=int, default=16, help="shards per split at least (when enough clips)")
    parser.add_argument("--crf", type=int, default=18, help="x264 quality (lower is better)")
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset made with another config")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering clips (same output)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--restrict", action="append", default=[], metavar="ATTR=V1,V2",
        help=f"draw ATTR only from these values (repeatable; ATTR in {', '.join(RESTRICTABLE)})",
    )
    parser.add_argument("--object-scale", type=float, default=1.0, help="multiply every shape's size (0.25-2)")
    parser.add_argument("--linear-start", choices=LINEAR_STARTS, default="anywhere",
                        help="linear motions start anywhere, or behind the centre (they cross the frame)")
    args = parser.parse_args(argv)
    try:
        manifest = generate_synthetic_benchmark(
            args.out,
            num_train=args.train,
            num_val=args.val,
            num_test=args.test,
            num_frames=args.frames,
            fps=args.fps,
            size=args.size,
            hr_size=args.hr_size or None,
            seed=args.seed,
            shard_max_bytes=args.shard_max_bytes,
            min_shards=args.min_shards,
            crf=args.crf,
            overwrite=args.overwrite,
            progress=not args.quiet,
            workers=args.workers,
            restrictions=args.restrict,
            object_scale=args.object_scale,
            linear_start=args.linear_start,
        )
    except LumiereError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary = ", ".join(
        f"{split}: {manifest['splits'][split]['num_samples']} clips in {len(manifest['splits'][split]['shards'])} shards"
        for split in SPLITS
        if split in manifest["splits"]
    )
    print(f"synthetic benchmark at {args.out} ({summary})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
