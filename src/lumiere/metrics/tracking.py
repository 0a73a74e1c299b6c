"""Colour tracking: does the prompted object move the prompted way? (synthetic benchmark)

The learned domain classifier scores adherence only as well as it classifies (its shape head is
weak at 32x32). For prompts of *linear* motion a direct measurement is possible: the benchmark
draws saturated shape colours on dark, desaturated backgrounds, so the pixels of the prompted
colour locate the object in every frame, and their centroid's travel gives its direction.

- :func:`nearest_palette_colour`: per pixel, the nearest palette colour and its distance.
- :func:`colour_masks`: per pixel, whether its nearest palette colour is the prompted one (and
  close enough to it).
- :func:`track_colour`: the masked pixels' centroid and area per frame (:func:`centroid_and_area`).
- :func:`direction_from_track`: left / right / up / down from the summed frame-to-frame
  displacement, ``"none"`` when the object stays put and ``"lost"`` when it is missing from too
  many frames. Steps longer than ``max_step`` (an object wrapping around the frame edge, or a
  detection jumping to another blob) are ignored.

Video batches are ``(B, C, T, H, W)`` in [-1, 1]; the palette is RGB in [0, 255]. This module does
not depend on the benchmark: the caller passes the palette (``lumiere.data.vocabulary.RGB``, as a
(K, 3) table: :func:`palette_table`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lumiere.errors import ConfigError

LINEAR_DIRECTIONS = ("left", "right", "up", "down")


def _check_videos(videos: torch.Tensor) -> None:
    if videos.ndim != 5 or videos.shape[1] != 3:
        raise ConfigError(f"colour tracking needs RGB videos (B, 3, T, H, W), got {tuple(videos.shape)}")


def palette_table(palette: dict[str, Sequence[float]]) -> tuple[list[str], torch.Tensor]:
    """A palette ``{name: (r, g, b)}`` as its names and a (K, 3) float table in the same order."""
    names = list(palette)
    return names, torch.tensor([list(palette[name]) for name in names], dtype=torch.float32)


def nearest_palette_colour(videos: torch.Tensor, palette: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel, the distance (RGB units) to the nearest palette colour and that colour's index, both
    (B, T, H, W). ``palette``: (K, 3) in [0, 255]."""
    _check_videos(videos)
    if palette.ndim != 2 or palette.shape[1] != 3:
        raise ConfigError(f"palette must be (K, 3) RGB, got {tuple(palette.shape)}")
    pixels = (videos.float().clamp(-1, 1) + 1) * 127.5                       # (B, 3, T, H, W) in [0, 255]
    palette = palette.to(pixels)
    distance = (pixels[:, None] - palette[None, :, :, None, None, None]).norm(dim=2)  # (B, K, T, H, W)
    return distance.min(dim=1)


def colour_masks(videos: torch.Tensor, colour_index: torch.Tensor, palette: torch.Tensor,
                 max_distance: float = 100.0) -> torch.Tensor:
    """Boolean masks (B, T, H, W): pixels whose nearest palette colour is ``palette[colour_index[b]]``
    and lies within ``max_distance`` (RGB units) of it. ``palette``: (K, 3) in [0, 255]."""
    nearest_distance, nearest = nearest_palette_colour(videos, palette)
    wanted = colour_index.to(nearest.device).view(-1, 1, 1, 1)
    return (nearest == wanted) & (nearest_distance <= max_distance)


def centroid_and_area(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid (B, T, 2) as (x, y) in frame units [0, 1] (x right, y down) and area (B, T) in pixels of
    masks (B, T, H, W); the centroid is NaN where the area is 0."""
    masks = masks.float()
    height, width = masks.shape[-2:]
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
    area = masks.sum(dim=(-2, -1))
    x = (masks * xs).sum(dim=(-2, -1)) / area
    y = (masks * ys[:, None]).sum(dim=(-2, -1)) / area
    return torch.stack([x, y], dim=-1), area


def track_colour(videos: torch.Tensor, colour_index: torch.Tensor, palette: torch.Tensor,
                 max_distance: float = 100.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid (B, T, 2) and area (B, T) of the prompted colour in every frame (:func:`centroid_and_area`
    of :func:`colour_masks`)."""
    return centroid_and_area(colour_masks(videos, colour_index, palette, max_distance))


def direction_from_track(centroids: torch.Tensor, area: torch.Tensor, min_area: float = 4.0,
                         min_visible: float = 0.5, max_step: float = 0.25, min_travel: float = 0.1) -> list[str]:
    """Direction of travel per clip: one of :data:`LINEAR_DIRECTIONS`, ``"none"`` or ``"lost"``.

    Frames with fewer than ``min_area`` pixels of the colour do not count; a clip visible in fewer
    than ``min_visible`` of its frames is ``"lost"``. The travel is the sum of the steps between
    consecutive visible frames no longer than ``max_step``; under ``min_travel`` (frame units) in
    total it is ``"none"``, else its dominant axis and sign give the direction."""
    if centroids.ndim != 3 or centroids.shape[-1] != 2 or area.shape != centroids.shape[:2]:
        raise ConfigError(f"expected centroids (B, T, 2) and area (B, T), got {tuple(centroids.shape)}, {tuple(area.shape)}")
    directions = []
    for track, pixels in zip(centroids, area):
        visible = pixels >= min_area
        if visible.float().mean() < min_visible or visible.sum() < 2:
            directions.append("lost")
            continue
        points = track[visible]
        steps = points[1:] - points[:-1]
        steps = steps[steps.norm(dim=-1) <= max_step]
        dx, dy = (float(v) for v in steps.sum(dim=0)) if len(steps) else (0.0, 0.0)
        if max(abs(dx), abs(dy)) < min_travel:
            directions.append("none")
        elif abs(dx) >= abs(dy):
            directions.append("right" if dx > 0 else "left")
        else:
            directions.append("down" if dy > 0 else "up")
    return directions


def tracked_direction_accuracy(videos: torch.Tensor, colours: Sequence[str], directions: Sequence[str],
                               palette: dict[str, Sequence[float]], max_distance: float = 100.0,
                               min_area: float = 4.0, **direction_kwargs) -> dict[str, float | int | None]:
    """Fraction of linear-motion clips whose prompted colour travels in the prompted direction.

    ``colours``/``directions``: the prompt's labels per clip; clips whose direction is not one of
    :data:`LINEAR_DIRECTIONS` (other motions) are skipped. Returns ``direction_accuracy`` (None
    without such clips), ``visible`` (mean fraction of frames showing the colour, over those clips)
    and ``num_tracked`` (their count)."""
    if len(colours) != videos.shape[0] or len(directions) != videos.shape[0]:
        raise ConfigError(f"{videos.shape[0]} videos but {len(colours)} colours and {len(directions)} directions")
    names, table = palette_table(palette)
    selected = [i for i, d in enumerate(directions) if d in LINEAR_DIRECTIONS]
    unknown = sorted({colours[i] for i in selected if colours[i] not in palette})
    if unknown:
        raise ConfigError(f"colours {unknown} are not in the palette {names}")
    if not selected:
        return {"direction_accuracy": None, "visible": None, "num_tracked": 0}
    index = torch.tensor([names.index(colours[i]) for i in selected])
    centroids, area = track_colour(videos[selected], index, table, max_distance)
    predicted = direction_from_track(centroids, area, min_area=min_area, **direction_kwargs)
    correct = [p == directions[i] for p, i in zip(predicted, selected)]
    return {
        "direction_accuracy": sum(correct) / len(correct),
        "visible": float((area >= min_area).float().mean()),
        "num_tracked": len(selected),
    }
