"""Binary masks M of the conditional model (paper Sec. 4.2): builders and the random training masks.

Convention (the paper's): M = 1 marks *known* (unmasked) content that the model copies from the
conditioning video C, M = 0 marks content the model generates. Every mask here is float32 with
values in {0, 1} and the video layout with one channel:

- a single clip's mask is `(1, T, H, W)`;
- a batch of masks is `(B, 1, T, H, W)`.

Boxes are pixel coordinates `(x0, y0, x1, y1)` with x along the width, half-open like Python
slices: the box covers columns x0..x1-1 and rows y0..y1-1.

The builders give the masks of the applications:

- `first_frame_mask`: image-to-video, M = 1 on frame 0 only;
- `box_keep_mask`: inpainting, M = 0 inside a box on every frame;
- `border_keep_mask`: outpainting, M = 0 on a border of the canvas;
- `static_region_mask`: cinemagraphs, M = 1 on frame 0 and outside the animated region elsewhere.

`TrainingMaskSampler` draws random masks of these kinds (plus "none": nothing known, so the
fine-tuned model keeps plain text-to-video generation) for the fine-tuning of Sec. 4.2, from a
`torch.Generator` so that a seed fixes the masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from lumiere.errors import ConfigError

Box = Sequence[int]  # (x0, y0, x1, y1), half-open
MASK_KINDS = ("image_to_video", "inpaint_box", "outpaint", "cinemagraph", "none")


# ---------------------------------------------------------------------------- validation
def check_box(box: Box, height: int, width: int) -> tuple[int, int, int, int]:
    """Return the box as ints, or raise ConfigError if it is not a non-empty box inside the frame."""
    if len(box) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
                                for v in box):
        raise ConfigError(f"a box is four whole pixel coordinates (x0, y0, x1, y1), got {list(box)}")
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ConfigError(f"box {(x0, y0, x1, y1)} must satisfy 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height}")
    return x0, y0, x1, y1


def region_from_box(height: int, width: int, box: Box) -> Tensor:
    """An (H, W) region map: 1 inside the box, 0 outside."""
    x0, y0, x1, y1 = check_box(box, height, width)
    region = torch.zeros(height, width)
    region[y0:y1, x0:x1] = 1.0
    return region


# ---------------------------------------------------------------------------- application masks
def first_frame_mask(num_frames: int, height: int, width: int) -> Tensor:
    """Image-to-video: the first frame is known, every other frame is generated. (1, T, H, W)."""
    mask = torch.zeros(1, num_frames, height, width)
    mask[:, 0] = 1.0
    return mask


def region_keep_mask(num_frames: int, region: Tensor) -> Tensor:
    """Inpainting with a static region: (H, W) region map (1 = generate) -> (1, T, H, W) with M = 1 - region."""
    return (1.0 - region.float()).expand(1, num_frames, *region.shape).clone()


def box_keep_mask(num_frames: int, height: int, width: int, box: Box) -> Tensor:
    """Inpainting: everything is known except a box on every frame. (1, T, H, W)."""
    return region_keep_mask(num_frames, region_from_box(height, width, box))


def border_keep_mask(num_frames: int, height: int, width: int, border: Sequence[int]) -> Tensor:
    """Outpainting: a border of (top, bottom, left, right) pixels is generated, the inside kept. (1, T, H, W)."""
    if len(border) != 4 or any(int(b) < 0 for b in border):
        raise ConfigError(f"a border is four non-negative pixel counts (top, bottom, left, right), got {list(border)}")
    top, bottom, left, right = (int(b) for b in border)
    if top + bottom >= height or left + right >= width:
        raise ConfigError(f"border {list(border)} leaves no known pixels in a {height}x{width} frame")
    mask = torch.zeros(1, num_frames, height, width)
    mask[:, :, top:height - bottom, left:width - right] = 1.0
    return mask


def static_region_mask(num_frames: int, region: Tensor) -> Tensor:
    """Cinemagraph: frame 0 fully known; on the other frames known only outside `region` (H, W), 1 = animate.

    Because the whole first frame stays known, the animated content keeps the appearance of the
    input image (Sec. 4.2, "Cinemagraphs").
    """
    mask = region_keep_mask(num_frames, region)
    mask[:, 0] = 1.0
    return mask


# ---------------------------------------------------------------------------- random training masks
def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def random_box(height: int, width: int, generator: torch.Generator | None,
               min_fraction: float = 0.2, max_fraction: float = 0.6) -> tuple[int, int, int, int]:
    """A box whose sides are a uniform fraction of the frame's sides, at a uniform position."""
    box_h = max(1, round(height * _uniform(min_fraction, max_fraction, generator)))
    box_w = max(1, round(width * _uniform(min_fraction, max_fraction, generator)))
    y0 = int(torch.randint(0, height - box_h + 1, (), generator=generator))
    x0 = int(torch.randint(0, width - box_w + 1, (), generator=generator))
    return x0, y0, x0 + box_w, y0 + box_h


def random_border(height: int, width: int, generator: torch.Generator | None,
                  max_fraction: float = 0.35) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): each side up to `max_fraction` of the frame, at least one side non-zero."""
    while True:
        top, bottom = (int(height * _uniform(0, max_fraction, generator)) for _ in range(2))
        left, right = (int(width * _uniform(0, max_fraction, generator)) for _ in range(2))
        if top + bottom + left + right > 0:
            return top, bottom, left, right


class TrainingMaskSampler:
    """Random masks of the kinds of Sec. 4.2 for the conditional fine-tuning, drawn with given probabilities."""

    def __init__(self, kinds: Mapping[str, float] | None = None) -> None:
        kinds = dict(kinds if kinds is not None else
                     {"image_to_video": 0.3, "inpaint_box": 0.25, "outpaint": 0.15, "cinemagraph": 0.2, "none": 0.1})
        unknown = sorted(set(kinds) - set(MASK_KINDS))
        if unknown:
            raise ConfigError(f"unknown mask kinds {unknown}; choose among {list(MASK_KINDS)}")
        if any(p < 0 for p in kinds.values()) or sum(kinds.values()) <= 0:
            raise ConfigError(f"mask kind probabilities must be >= 0 and not all zero, got {kinds}")
        self.names = [name for name, p in kinds.items() if p > 0]
        weights = torch.tensor([float(kinds[name]) for name in self.names], dtype=torch.float64)
        self.probabilities = weights / weights.sum()

    def sample_kind(self, generator: torch.Generator | None) -> str:
        index = int(torch.multinomial(self.probabilities, 1, generator=generator))
        return self.names[index]

    def sample_one(self, kind: str, num_frames: int, height: int, width: int,
                   generator: torch.Generator | None) -> Tensor:
        """One (1, T, H, W) mask of the given kind."""
        if kind == "image_to_video":
            return first_frame_mask(num_frames, height, width)
        if kind == "inpaint_box":
            return box_keep_mask(num_frames, height, width, random_box(height, width, generator))
        if kind == "outpaint":
            return border_keep_mask(num_frames, height, width, random_border(height, width, generator))
        if kind == "cinemagraph":
            region = region_from_box(height, width, random_box(height, width, generator))
            return static_region_mask(num_frames, region)
        if kind == "none":
            return torch.zeros(1, num_frames, height, width)
        raise ConfigError(f"unknown mask kind {kind!r}")

    def per_sample(self, generators: Sequence[torch.Generator], num_frames: int, height: int,
                   width: int) -> tuple[Tensor, list[str]]:
        """A batch of masks (B, 1, T, H, W), sample i drawn from generators[i] alone (the training draws)."""
        kinds = [self.sample_kind(generator) for generator in generators]
        masks = torch.stack([self.sample_one(kind, num_frames, height, width, generator)
                             for kind, generator in zip(kinds, generators)])
        return masks, kinds

    def __call__(self, batch_size: int, num_frames: int, height: int, width: int,
                 generator: torch.Generator | None = None) -> tuple[Tensor, list[str]]:
        """A batch of masks (B, 1, T, H, W) and the kind of each."""
        kinds = [self.sample_kind(generator) for _ in range(batch_size)]
        masks = torch.stack([self.sample_one(kind, num_frames, height, width, generator) for kind in kinds])
        return masks, kinds
