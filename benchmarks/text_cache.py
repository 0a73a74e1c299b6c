"""Training-step time and peak memory with and without the text cache (issue 21, item 3).

Builds, in a temporary folder, a tiny IF-like U-Net (``--preset``, its text width set to the T5's)
and a T5 encoder large enough to matter beside it (``--t5-layers`` layers at ``--t5-width``,
gated-GELU feed-forward 4x wide, byte-level tokens padded to ``--max-length``), and a cache of the
captions the steps draw (``lumiere.training.text_cache``). Each variant then runs in a fresh subprocess:
build the STUNet stage (``model.text_cache`` unset: the encoder is loaded; set: it is not), and
train ``--steps`` steps (caption dropout as configured, AdamW on the temporal blocks).

- time: the median step after ``--warmup`` untimed steps;
- memory: the process's peak RSS (``VmHWM``) over building the stage and the steps, and the same
  minus the RSS after the imports (what the stage itself costs). The encoder's weights and its
  forward count here, which is what the cache removes.

Variants alternate over ``--repeats`` subprocess pairs (machine load hits both alike); the table
gives the medians and the cached/encoder ratios.

    python benchmarks/text_cache.py --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from lumiere.utils import quiet_libraries

from _common import current_rss_bytes, peak_rss_bytes  # beside this script: the benchmarks' shared helpers

VARIANTS = ("encoder", "cache")
CAPTION_POOL = 64  # distinct captions the batches are drawn from


def captions() -> list[str]:
    """The synthetic benchmark's captions the batches cycle through (a fixed draw)."""
    from lumiere.data.vocabulary import caption_from_labels, sample_labels

    rng = np.random.default_rng(0)
    return list(dict.fromkeys(caption_from_labels(sample_labels(rng)) for _ in range(CAPTION_POOL)))


def build_text_encoder(args):
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    from lumiere.models.text import FrozenTextEncoder

    tokenizer = ByT5Tokenizer()
    config = T5Config(vocab_size=len(tokenizer), d_model=args.t5_width, d_kv=64, num_heads=args.t5_width // 64,
                      d_ff=4 * args.t5_width, num_layers=args.t5_layers, dropout_rate=0.0,
                      feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                      pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return FrozenTextEncoder(tokenizer, T5EncoderModel(config), max_length=args.max_length, trainable=False)


def prepare(folder: Path, args) -> dict:
    """The U-Net and text encoder folders and the cache; their parameter counts."""
    from lumiere.models import build_unet, save_unet
    from lumiere.models.text import FrozenTextEncoder
    from lumiere.training.text_cache import build_text_cache

    torch.manual_seed(0)
    unet = build_unet(args.preset, sample_size=args.size, encoder_hid_dim=args.t5_width)
    save_unet(unet, folder / "unet")
    build_text_encoder(args).save_pretrained(folder / "text_encoder")
    encoder = FrozenTextEncoder.from_pretrained(folder / "text_encoder")
    build_text_cache(captions(), encoder, folder / "cache", encoder_dir=folder / "text_encoder")
    return {"unet_params": sum(p.numel() for p in unet.parameters()),
            "t5_params": sum(p.numel() for p in encoder.parameters())}


def run_variant(variant: str, folder: Path, args) -> dict:
    """In this (fresh) process: build the stage and train; step time and peak RSS."""
    from lumiere.diffusion import DiffusionObjective
    from lumiere.models import STUNet
    from lumiere.training import TextToVideoModule

    torch.set_num_threads(args.threads)
    baseline = current_rss_bytes()
    module = TextToVideoModule(
        unet_path=str(folder / "unet"), text_encoder_path=str(folder / "text_encoder"),
        text_cache=str(folder / "cache") if variant == "cache" else None,
        stunet=partial(STUNet, num_temporal_attention_layers=1), objective=DiffusionObjective(),
        optimizer=partial(torch.optim.AdamW, lr=1e-4), ema_decay=None, caption_dropout=0.1, resolution=args.size)
    optimizer = torch.optim.AdamW([p for _, p in module.trainable_named_parameters()], lr=1e-4)
    module.train()
    pool = captions()
    video_rng = torch.Generator().manual_seed(1)
    times = []
    for step in range(args.warmup + args.steps):
        batch_captions = [pool[(step * args.batch + i) % len(pool)] for i in range(args.batch)]
        batch = {"video": torch.rand(args.batch, 3, args.frames, args.size, args.size, generator=video_rng) * 2 - 1,
                 "caption": batch_captions, "key": [f"{step}-{i}" for i in range(args.batch)]}
        began = time.perf_counter()
        loss = module.diffusion_loss(batch, module.sample_generators(batch, step), caption_dropout=0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            times.append(time.perf_counter() - began)
    peak = peak_rss_bytes()
    return {"variant": variant, "text_encoder": type(module.text_encoder).__name__, "step_s": statistics.median(times),
            "peak_rss_mib": peak / 2**20, "stage_peak_mib": (peak - baseline) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="if_stage1_tiny")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--t5-layers", type=int, default=4)
    parser.add_argument("--t5-width", type=int, default=512)
    parser.add_argument("--max-length", type=int, default=77)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="subprocess pairs (encoder, cache), alternating")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # the child's part
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_libraries()
    if args.variant:
        print(json.dumps(run_variant(args.variant, Path(args.folder), args)))
        return
    with tempfile.TemporaryDirectory(prefix="text-cache-bench-") as tmp:
        folder = Path(tmp)
        sizes = prepare(folder, args)
        results: dict[str, list[dict]] = {v: [] for v in VARIANTS}
        child = [f"--{name.replace('_', '-')}={value}" for name, value in vars(args).items()
                 if name not in ("json", "variant", "folder")]
        for _ in range(args.repeats):
            for variant in VARIANTS:
                command = [sys.executable, __file__, *child, "--variant", variant, "--folder", str(folder)]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    sys.exit(f"error: the {variant} run failed: {done.stderr.strip().splitlines()[-1]}")
                results[variant].append(json.loads(done.stdout.strip().splitlines()[-1]))
    keys = ("step_s", "peak_rss_mib", "stage_peak_mib")
    medians = {v: {k: statistics.median(r[k] for r in results[v]) for k in keys} for v in VARIANTS}
    print(f"STUNet on {args.preset} ({sizes['unet_params'] / 1e6:.2f}M frozen 2D params), T5 {args.t5_layers} layers x "
          f"{args.t5_width} ({sizes['t5_params'] / 1e6:.1f}M params, {args.max_length} tokens); batch {args.batch} x "
          f"{args.frames} frames at {args.size}x{args.size}, {args.threads} thread(s); medians of {args.repeats} "
          f"subprocesses x {args.steps} steps")
    print("| | step (s) | peak RSS (MiB) | stage's peak RSS over imports (MiB) |")
    print("|---|---|---|---|")
    for variant in VARIANTS:
        row = medians[variant]
        print(f"| {variant} | {row['step_s']:.3f} | {row['peak_rss_mib']:.0f} | {row['stage_peak_mib']:.0f} |")
    ratio = {k: medians["cache"][k] / medians["encoder"][k] for k in keys}
    print(f"| cache / encoder | {ratio['step_s']:.2f} | {ratio['peak_rss_mib']:.2f} | {ratio['stage_peak_mib']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "sizes": sizes, "runs": results,
                                               "medians": medians, "ratios": ratio}, indent=2))


if __name__ == "__main__":
    main()
