"""``python -m lumiere.plan``: the per-GPU memory plan of a STUNet training step, and what fits a card.

    python -m lumiere.plan --preset if_i_xl_width --frames 80 --resolution 128 --batch 1 \\
        --precision bf16-mixed --fsdp-world-size 1 --checkpointing none all

``--preset`` is a U-Net preset (``lumiere.models.t2i.UNET_PRESETS``, or ``if_i_xl_width``: IF stage
I's shape at IF-I-XL's 4.3B width), a U-Net ``config.json``, or a diffusers folder (an IF pipeline
folder with ``unet/config.json``): only the config is read, no weights. One column per
``--checkpointing`` policy (``none``, ``all``, or what the STUNet's ``activation_checkpointing``
takes: ``spatial``, ``temporal``, or a JSON mapping such as ``'{"spatial": "all", "temporal": [0]}'``).
``--text-encoder`` counts the frozen text encoder a run loads (``t5-v1_1-xxl``, an IF folder or
its ``text_encoder/``, or a count); ``none`` (default) is a run on cached text embeddings
(``model.text_cache``). ``--json PATH`` also writes the numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from lumiere.errors import ConfigError, LumiereError
from lumiere.plan.budget import DEFAULT_CARDS_GIB, GiB, TrainingSetup, largest_fitting, plan_memory
from lumiere.plan.fake_step import PRECISION_ALIASES, PRECISIONS, VARIANTS, ModelSpec, StepShape
from lumiere.plan.text_encoder import text_encoder_parameters

FROZEN_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"{name} must be comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ConfigError(f"{name} must be positive, got {text!r}")
    return values


def _policy(text: str):
    """'none' / 'all' / a policy name stay strings; a JSON mapping becomes a dict."""
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"--checkpointing {text!r} is not valid JSON: {err}") from None
    return text


def _stunet_kwargs(pairs: list[str]) -> dict:
    kwargs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--stunet-arg takes key=value (value as JSON), got {pair!r}")
        try:
            kwargs[key] = json.loads(value)
        except json.JSONDecodeError:
            kwargs[key] = value  # a bare string
    return kwargs


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lumiere.plan", description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="if_stage1_paper", help="U-Net preset, config.json, or diffusers / IF folder")
    parser.add_argument("--variant", choices=VARIANTS, default="stunet")
    parser.add_argument("--block-out-channels", default="", help="override the widths, e.g. 64,128,192,256")
    parser.add_argument("--layers-per-block", type=int, default=0, help="override the depth (0: keep)")
    parser.add_argument("--cross-attention-dim", type=int, default=0, help="override the cross-attention width (0: keep)")
    parser.add_argument("--frames", type=int, default=80)
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1, help="clips per GPU")
    parser.add_argument("--precision", default="bf16-mixed", help=f"one of {sorted(PRECISIONS)} (or {sorted(PRECISION_ALIASES)})")
    parser.add_argument("--fsdp-world-size", type=int, default=1, help="1: one GPU or DDP; N: FULL_SHARD over N GPUs")
    parser.add_argument("--frozen-dtype", choices=sorted(FROZEN_DTYPES), default="fp32",
                        help="dtype of the frozen T2I weights (the training module keeps fp32)")
    parser.add_argument("--checkpointing", nargs="+", default=["none", "all"], help="one column per policy")
    parser.add_argument("--stunet-arg", action="append", default=[], help="extra STUNet argument key=value (JSON value)")
    parser.add_argument("--text-encoder", default="none",
                        help="none (cached text embeddings), t5-v1_1-xxl, a folder or config.json, or a count")
    parser.add_argument("--text-tokens", type=int, default=77)
    parser.add_argument("--no-text-mask", action="store_true", help="no caption padding mask (as bench_stunet.py)")
    parser.add_argument("--cards", default=",".join(str(c) for c in DEFAULT_CARDS_GIB), help="card sizes in GiB")
    parser.add_argument("--no-fit", action="store_true", help="skip the search for the largest batch and clip")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return parser


def build_inputs(args: argparse.Namespace) -> tuple[list[ModelSpec], StepShape, TrainingSetup, tuple[float, ...]]:
    overrides: dict = {"sample_size": args.resolution}
    if args.block_out_channels:
        overrides["block_out_channels"] = _ints(args.block_out_channels, "--block-out-channels")
    if args.layers_per_block:
        overrides["layers_per_block"] = args.layers_per_block
    if args.cross_attention_dim:
        overrides["cross_attention_dim"] = args.cross_attention_dim
    precision = PRECISION_ALIASES.get(args.precision, args.precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {sorted(PRECISIONS)}, got {args.precision!r}")
    if args.fsdp_world_size < 1:
        raise ConfigError(f"--fsdp-world-size must be >= 1, got {args.fsdp_world_size}")
    try:
        cards = tuple(float(c) for c in args.cards.split(","))
    except ValueError:
        raise ConfigError(f"--cards must be comma-separated sizes in GiB, got {args.cards!r}") from None
    kwargs = _stunet_kwargs(args.stunet_arg)
    specs = [ModelSpec(args.preset, args.variant, overrides, kwargs, _policy(p)) for p in args.checkpointing]
    shape = StepShape(args.batch, args.frames, args.resolution, args.text_tokens, not args.no_text_mask)
    setup = TrainingSetup(precision, args.fsdp_world_size, FROZEN_DTYPES[args.frozen_dtype],
                          text_encoder_params=text_encoder_parameters(args.text_encoder))
    return specs, shape, setup, cards


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        specs, shape, setup, cards = build_inputs(args)
        plans = [plan_memory(spec, shape, setup) for spec in specs]
        fits = [] if args.no_fit else [largest_fitting(spec, plan, cards) for spec, plan in zip(specs, plans)]
    except LumiereError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    first = plans[0].params
    print(f"{args.preset} ({args.variant}): {first.frozen / 1e6:.1f}M frozen ({first.frozen_dtype}), "
          f"{first.trainable / 1e6:.1f}M trainable (float32), text encoder "
          f"{f'{setup.text_encoder_params / 1e6:.1f}M frozen' if setup.text_encoder_params else 'not loaded (cached)'}; "
          f"{shape.batch} x {shape.frames} frames at "
          f"{shape.resolution}x{shape.resolution}, {setup.precision}, FSDP world size {setup.fsdp_world_size}")
    print()
    print("| GiB per GPU | " + " | ".join(f"checkpointing {json.dumps(p.checkpointing)}" for p in plans) + " |")
    print("|---|" + "---:|" * len(plans))
    for name in plans[0].lines:
        print(f"| {name} | " + " | ".join(f"{p.gib(name):.2f}" for p in plans) + " |")
    for spec, fit_list in zip(specs, fits):
        print()
        print(f"checkpointing {json.dumps(spec.checkpointing)}: largest clip at batch {shape.batch} / largest batch at "
              f"{shape.frames} frames: " + "; ".join(f"{f.card_gib:g} GiB: {f.largest_frames} frames / batch {f.largest_batch}"
                                                     for f in fit_list))
    if args.json:
        record = {
            "preset": args.preset, "variant": args.variant, "shape": vars(shape), "precision": setup.precision,
            "fsdp_world_size": setup.fsdp_world_size, "frozen_dtype": str(first.frozen_dtype),
            "frozen_params": first.frozen, "trainable_params": first.trainable,
            "text_encoder_params": setup.text_encoder_params,
            "plans": [{"checkpointing": p.checkpointing, "bytes": p.lines} for p in plans],
            "fits": [[vars(f) for f in fit_list] for fit_list in fits],
            "GiB": GiB,
        }  # fmt: skip
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
