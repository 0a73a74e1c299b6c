"""Every application of paper Sec. 4 on a held-out synthetic clip, written as GIF/mp4 sets (for `make demo`).

    python -m lumiere.apps.gallery --conditional-ckpt outputs/demo_conditional/demo/checkpoints/last.ckpt \\
        --base-ckpt outputs/demo_stunet/demo/checkpoints/last.ckpt \\
        --style-dir outputs/artifacts/style_t2i --out outputs/demo/apps

Writes one folder per application under `--out` (each: mp4 + gif + X-T slice per clip, and a
sample sheet), the same files `python apps.py` writes, plus `inputs/`. Errors print one line.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from lumiere.apps.applications import (
    cinemagraph,
    image_to_video,
    inpaint,
    outpaint,
    sdedit_video,
    stylized_generation,
)
from lumiere.apps.masks import box_keep_mask, region_from_box
from lumiere.apps.stylize import load_style_unet_state_dict
from lumiere.data.rendering import synthetic_clips
from lumiere.errors import LumiereError

EDIT_PROMPT = "a green square moving left on a checkered background"
INPAINT_PROMPT = "a yellow star bouncing on a plain background"


def run_gallery(conditional_ckpt: str, base_ckpt: str, style_dir: str | None, out_dir: str, *,
                num_frames: int = 16, num_inference_steps: int = 25, seed: int = 0, alpha: float = 0.7,
                strength: float = 0.6, fps: float = 8, allow_frozen_mismatch: bool = False) -> dict[str, str]:
    """Run image-to-video, inpainting, outpainting, a cinemagraph, SDEdit and stylization; return their folders."""
    from lumiere.training import load_module_from_checkpoint
    from lumiere.training.callbacks import write_video_set

    conditional = load_module_from_checkpoint(conditional_ckpt, expected="ConditionalVideoModule",
                                              allow_frozen_mismatch=allow_frozen_mismatch)
    base = load_module_from_checkpoint(base_ckpt, expected=("TextToVideoModule", "ConditionalVideoModule"),
                                       allow_frozen_mismatch=allow_frozen_mismatch)
    conditional.check_num_frames(num_frames)
    size = conditional.sample_size
    clips, captions = synthetic_clips(1, num_frames=num_frames, size=size, seed=12345)
    video, image, caption = clips, clips[0, :, 0], captions[0]
    sampling = dict(num_inference_steps=num_inference_steps, seed=seed, progress=True)
    quarter = size // 4
    centre = (quarter, quarter, size - quarter, size - quarter)
    results = {
        "inputs": (video, [caption]),
        "image_to_video": (image_to_video(conditional, image, caption, num_frames, **sampling), [caption]),
        "inpaint": (inpaint(conditional, video, box_keep_mask(num_frames, size, size, centre)[None],
                            INPAINT_PROMPT, **sampling), [INPAINT_PROMPT]),
        "outpaint": (outpaint(conditional, video, [0, 0, quarter, quarter], caption, **sampling), [caption]),
        "cinemagraph": (cinemagraph(conditional, image, region_from_box(size, size, centre), caption, num_frames,
                                    **sampling), [caption]),
        "sdedit": (sdedit_video(base, video, EDIT_PROMPT, strength, **sampling), [EDIT_PROMPT]),
    }
    if style_dir:
        style = load_style_unet_state_dict(style_dir)
        results["stylized"] = (stylized_generation(base, style, alpha, [caption], num_frames, **sampling), [caption])
    folders = {}
    for name, (videos, prompts) in results.items():
        folders[name] = os.path.join(out_dir, name)
        write_video_set(folders[name], videos.float().cpu(), prompts, fps=fps)
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conditional-ckpt", required=True)
    parser.add_argument("--base-ckpt", required=True)
    parser.add_argument("--style-dir", default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.7)
    parser.add_argument("--strength", type=float, default=0.6)
    parser.add_argument("--allow-frozen-mismatch", action="store_true",
                        help="load checkpoints whose frozen U-Net / text encoder weights changed since training")
    args = parser.parse_args(argv)
    from lumiere.utils import quiet_libraries

    quiet_libraries()  # no library notices above a one-line error
    try:
        folders = run_gallery(args.conditional_ckpt, args.base_ckpt, args.style_dir, args.out,
                              num_frames=args.frames, num_inference_steps=args.steps, seed=args.seed,
                              alpha=args.alpha, strength=args.strength,
                              allow_frozen_mismatch=args.allow_frozen_mismatch)
    except LumiereError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, folder in folders.items():
        print(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    sys.exit(main())
