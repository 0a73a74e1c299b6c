"""Rendering of the synthetic benchmark's clips: labels + seed -> a continuous scene -> frames.

Each clip is a *continuous* scene description (normalised coordinates, seconds) drawn from
``(labels, seed)`` (:func:`build_scene`); :func:`render_scene` samples it at any size, so the same
scene rendered at 32 and 128 pixels gives aligned pairs for the spatial super-resolution stage
(Sec. 3.2). Shapes are drawn from signed distance functions with a one-pixel coverage ramp
(analytic anti-aliasing), so a star still looks like a star at 32x32; textured backgrounds are
supersampled 4x and area-downsampled. :func:`synthetic_clips` renders a few clips straight into a
video batch (no shards), for the applications' gallery, the notebook and the tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from lumiere.data.vocabulary import RGB, caption_from_labels, sample_labels, validate_labels
from lumiere.errors import ConfigError

SPEED_FACTOR = {"slow": 1.0, "medium": 2.0, "fast": 4.0}
PERIOD_SECONDS = {"long": 2.5, "medium": 1.25, "short": 0.625}  # 2, 4, 8 periods in 5 s

# Backgrounds are dark and desaturated so that every shape colour stays the salient signal.
BACKGROUND_TONES = [
    (22, 22, 28), (48, 48, 62), (28, 42, 34), (62, 50, 38),
    (20, 30, 58), (72, 72, 78), (52, 30, 46), (34, 56, 62),
]

# ----------------------------------------------------------------------------------------------
# Continuous scene description: labels + seed -> object trajectories in normalised units
# ----------------------------------------------------------------------------------------------
# Coordinates: x to the right, y downwards, the frame is [0, 1]^2; time in seconds.

PRIMARY_RADIUS = 0.17  # circumradius of the main shape (about 11 px across at 32x32)
SECOND_RADIUS = 0.13


def _polygon(shape: str) -> np.ndarray | None:
    """Unit-circumradius outline of a shape (None for the circle), counter-clockwise vertices."""
    if shape == "circle":
        return None
    if shape == "square":
        angles = np.pi / 4 + np.arange(4) * np.pi / 2
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "triangle":
        angles = -np.pi / 2 + np.arange(3) * 2 * np.pi / 3
        return np.stack([np.cos(angles), np.sin(angles)], 1) * 1.1
    if shape == "hexagon":
        angles = np.arange(6) * np.pi / 3
        return np.stack([np.cos(angles), np.sin(angles)], 1)
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.1, 0.45)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    if shape == "cross":
        a, b = 0.32, 0.95  # half arm width, arm length
        return np.array(
            [[a, -b], [a, -a], [b, -a], [b, a], [a, a], [a, b],
             [-a, b], [-a, a], [-b, a], [-b, -a], [-a, -a], [-a, -b]]
        )
    raise ConfigError(f"unknown shape {shape!r}")


def _wrap(value: np.ndarray, radius: float) -> np.ndarray:
    """Wrap a coordinate so an object leaving one side fully re-enters from the other."""
    period = 1.0 + 2.0 * radius
    return np.mod(value + radius, period) - radius


def _reflect(value: np.ndarray, low: float, high: float) -> np.ndarray:
    """Triangle-wave reflection between two walls (elastic bouncing)."""
    width = high - low
    u = np.mod(value - low, 2 * width)
    return low + np.where(u < width, u, 2 * width - u)


LINEAR_STARTS = ("anywhere", "behind")


def build_scene(labels: dict[str, str], seed: int, object_scale: float = 1.0, linear_start: str = "anywhere") -> dict[str, Any]:
    """The continuous parameters of a clip (start positions, phases, background), from a seed.

    ``object_scale`` multiplies the shapes' radii (1: the benchmark's sizes). ``linear_start``
    places linear and hopping objects at the start: ``"anywhere"`` along the motion axis (the
    benchmark), or ``"behind"`` the centre, 0.15-0.30 frame widths in from the side they move away
    from, so that a clip crosses the frame and every frame's object position tells the direction
    (the CPU demo's slice: with starts anywhere, the average clip of every direction is the same
    uniform smear, and a briefly trained model gets almost no loss signal from the direction word)."""
    if not 0.25 <= object_scale <= 2.0:
        raise ConfigError(f"object_scale must be in [0.25, 2], got {object_scale}")
    if linear_start not in LINEAR_STARTS:
        raise ConfigError(f"linear_start must be one of {LINEAR_STARTS}, got {linear_start!r}")
    validate_labels(labels)
    rng = np.random.default_rng(seed)
    two = labels["num_objects"] == "two"
    tones = rng.choice(len(BACKGROUND_TONES), size=2, replace=False)
    background = {
        "kind": labels["background"],
        "tone_a": list(BACKGROUND_TONES[int(tones[0])]),
        "tone_b": list(BACKGROUND_TONES[int(tones[1])]),
        "angle": float(rng.choice([0.0, 0.5 * np.pi, 0.25 * np.pi, 0.75 * np.pi])),
        "period": float(rng.uniform(0.14, 0.28)),
        "phase": float(rng.uniform(0, 1)),
    }
    objects = [{"shape": labels["shape"], "color": labels["color"], "radius": PRIMARY_RADIUS * object_scale, "primary": True}]
    if two:
        objects.insert(0, {"shape": labels["second_shape"], "color": labels["second_color"],
                           "radius": SECOND_RADIUS * object_scale, "primary": False})
    motion = labels["motion"]
    for index, obj in enumerate(objects):
        is_second = two and index == 0
        obj["angle0"] = float(rng.uniform(0, 2 * np.pi))
        obj["phase"] = float(rng.uniform(0, 2 * np.pi)) if is_second else 0.0
        if motion in ("linear", "hopping"):
            along0 = float(rng.uniform(0, 1))  # start position along the motion axis
            if linear_start == "behind":  # the same draw, squeezed to [0.15, 0.30] from the trailing side
                along0 = 0.15 + 0.15 * along0
                along0 = 1.0 - along0 if labels["direction"] in ("left", "up") else along0
            obj["along0"] = along0
            lane = rng.uniform(0.3, 0.7) if not two else (0.28 if is_second else 0.68)
            obj["across"] = float(lane + (0.0 if motion == "linear" else 0.1))
        elif motion == "bouncing":
            obj["start"] = [float(v) for v in rng.uniform(0.25, 0.75, size=2)]
            heading = rng.uniform(0, 2 * np.pi)
            heading = heading if abs(math.sin(2 * heading)) > 0.3 else heading + np.pi / 4  # avoid axis-aligned paths
            obj["heading"] = float(heading)
        else:  # rotation, pendulum, pulsing: anchored objects, side by side when there are two
            if two:
                cx = 0.3 if is_second else 0.68
            else:
                cx = float(rng.uniform(0.4, 0.6))
            obj["center"] = [float(cx), float(rng.uniform(0.42, 0.58))]
    return {"labels": dict(labels), "background": background, "objects": objects}


def _object_states(scene: dict[str, Any], times: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Per-object centre (T, 2), rotation angle (T,) and scale (T,) at the given times (seconds)."""
    labels = scene["labels"]
    motion, direction = labels["motion"], labels["direction"]
    speed = SPEED_FACTOR[labels["speed"]]
    period = PERIOD_SECONDS.get(labels["period"], 1.0)
    states = []
    for obj in scene["objects"]:
        radius = obj["radius"]
        angle = np.full_like(times, obj["angle0"])
        scale = np.ones_like(times)
        if motion in ("linear", "hopping"):
            velocity = 0.15 * speed  # frame widths per second
            sign = -1.0 if direction in ("left", "up") else 1.0
            along = _wrap(obj["along0"] + sign * velocity * times, radius)
            across = np.full_like(times, obj["across"])
            if motion == "hopping":  # walk-like: |sin| arcs, one hop per period
                across = across - 0.22 * np.abs(np.sin(np.pi * times / period + obj["phase"]))
                angle = obj["angle0"] + 0.25 * np.sin(2 * np.pi * times / period + obj["phase"])
            if direction in ("left", "right") or motion == "hopping":
                center = np.stack([along, across], 1)
            else:
                center = np.stack([across, along], 1)
        elif motion == "bouncing":
            velocity = 0.2 * speed
            heading = obj["heading"]
            x = _reflect(obj["start"][0] + velocity * math.cos(heading) * times, radius, 1 - radius)
            y = _reflect(obj["start"][1] + velocity * math.sin(heading) * times, radius, 1 - radius)
            center = np.stack([x, y], 1)
        elif motion == "rotation":
            turns_per_second = 0.125 * speed
            sign = 1.0 if direction == "clockwise" else -1.0  # y points down: +angle is clockwise
            angle = obj["angle0"] + sign * 2 * np.pi * turns_per_second * times
            center = np.tile(np.array(obj["center"]), (len(times), 1))
        elif motion == "pendulum":
            pivot = np.array([obj["center"][0], 0.04])
            length = 0.62 if obj.get("primary", radius == PRIMARY_RADIUS) else 0.5
            swing = np.deg2rad(38) * np.sin(2 * np.pi * times / period + obj["phase"])
            center = pivot + length * np.stack([np.sin(swing), np.cos(swing)], 1)
            angle = swing  # the bob hangs from the rod and turns with it
            states.append({"center": center, "angle": angle, "scale": scale, "pivot": pivot})
            continue
        elif motion == "pulsing":
            scale = 1.0 + 0.4 * np.sin(2 * np.pi * times / period + obj["phase"])
            center = np.tile(np.array(obj["center"]), (len(times), 1))
        else:
            raise ConfigError(f"unknown motion {motion!r}")
        states.append({"center": center, "angle": angle, "scale": scale})
    return states


# ----------------------------------------------------------------------------------------------
# Rasterisation (numpy): signed distances with a one-pixel coverage ramp
# ----------------------------------------------------------------------------------------------


def _polygon_sdf(points: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Signed distance (negative inside) from points (N, 2) to a closed polygon (E, 2).

    x and y are kept as separate (N, E) arrays: reductions over a length-2 axis are slow."""
    ax, ay = vertices[:, 0], vertices[:, 1]
    ex = np.roll(ax, -1) - ax  # edge vectors
    ey = np.roll(ay, -1) - ay
    px, py = points[:, 0:1], points[:, 1:2]
    rx, ry = px - ax, py - ay  # (N, E): point relative to each edge start
    t = np.clip((rx * ex + ry * ey) / (ex * ex + ey * ey), 0.0, 1.0)
    dx, dy = rx - ex * t, ry - ey * t
    distance = np.sqrt((dx * dx + dy * dy).min(axis=1))
    # even-odd rule: count edge crossings of a ray towards +x
    straddles = (ay > py) != (ay + ey > py)
    slope = np.divide(ex, ey, out=np.zeros_like(ex), where=ey != 0)
    inside = (straddles & (px < ax + ry * slope)).sum(axis=1) % 2 == 1
    return np.where(inside, -distance, distance)


def _segment_sdf(points: np.ndarray, start: np.ndarray, end: np.ndarray, half_width: float) -> np.ndarray:
    edge = end - start
    rel = points - start
    t = np.clip((rel @ edge) / float(edge @ edge), 0.0, 1.0)
    return np.linalg.norm(rel - t[:, None] * edge, axis=-1) - half_width


def _paint(canvas: np.ndarray, sdf_fn: Callable[[np.ndarray], np.ndarray], bbox: tuple[float, float, float, float], color: np.ndarray) -> None:
    """Composite a shape given by its signed distance into ``canvas`` (H, W, 3 float, in place).

    Coverage is ``clip(0.5 - sdf / pixel, 0, 1)``: a one-pixel ramp across the edge, the
    analytic equivalent of box-filter supersampling. Only pixels in ``bbox`` are evaluated."""
    size = canvas.shape[0]
    pixel = 1.0 / size
    x0, y0, x1, y1 = bbox
    c0, c1 = max(int(math.floor(x0 * size)) - 1, 0), min(int(math.ceil(x1 * size)) + 1, size)
    r0, r1 = max(int(math.floor(y0 * size)) - 1, 0), min(int(math.ceil(y1 * size)) + 1, size)
    if c0 >= c1 or r0 >= r1:
        return
    ys, xs = np.meshgrid((np.arange(r0, r1) + 0.5) * pixel, (np.arange(c0, c1) + 0.5) * pixel, indexing="ij")
    points = np.stack([xs.ravel(), ys.ravel()], 1)
    coverage = np.clip(0.5 - sdf_fn(points) / pixel, 0.0, 1.0).reshape(r1 - r0, c1 - c0, 1)
    region = canvas[r0:r1, c0:c1]
    region += coverage * (color - region)


def _render_background(background: dict[str, Any], size: int, supersample: int = 4) -> np.ndarray:
    """Static background (H, W, 3) float in [0, 255]; patterns supersampled then area-averaged."""
    tone_a = np.array(background["tone_a"], dtype=np.float64)
    tone_b = np.array(background["tone_b"], dtype=np.float64)
    kind = background["kind"]
    if kind == "plain":
        return np.broadcast_to(tone_a, (size, size, 3)).copy()
    fine = size * supersample
    coords = (np.arange(fine) + 0.5) / fine
    ys, xs = np.meshgrid(coords, coords, indexing="ij")
    angle, period, phase = background["angle"], background["period"], background["phase"]
    u = (xs * math.cos(angle) + ys * math.sin(angle)) / period + phase
    if kind == "striped":
        mix = (np.mod(u, 1.0) < 0.5).astype(np.float64)
    elif kind == "checkered":
        v = (-xs * math.sin(angle) + ys * math.cos(angle)) / period
        mix = ((np.floor(u) + np.floor(v)) % 2).astype(np.float64)
    elif kind == "gradient":
        w = xs * math.cos(angle) + ys * math.sin(angle)
        mix = (w - w.min()) / max(w.max() - w.min(), 1e-9)
    else:
        raise ConfigError(f"unknown background {kind!r}")
    image = tone_a + mix[..., None] * (tone_b - tone_a)
    return image.reshape(size, supersample, size, supersample, 3).mean(axis=(1, 3))


def render_scene(scene: dict[str, Any], num_frames: int, size: int, fps: float) -> np.ndarray:
    """Render a scene description to uint8 frames (T, size, size, 3)."""
    if size < 4 or size % 2:
        raise ConfigError(f"size must be an even number >= 4 (H.264 yuv420p), got {size}")
    times = np.arange(num_frames, dtype=np.float64) / float(fps)
    background = _render_background(scene["background"], size)
    states = _object_states(scene, times)
    rod_color = np.array([170.0, 170.0, 170.0])
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    half_rod = max(0.5 / size, 0.008)
    for t in range(num_frames):
        canvas = background.copy()
        for obj, state in zip(scene["objects"], states):
            center = state["center"][t]
            radius = obj["radius"] * float(state["scale"][t])
            if "pivot" in state:  # pendulum rod first, the bob on top
                pivot = state["pivot"]
                lo, hi = np.minimum(pivot, center) - half_rod, np.maximum(pivot, center) + half_rod
                _paint(canvas, lambda p, a=pivot, b=center: _segment_sdf(p, a, b, half_rod), (lo[0], lo[1], hi[0], hi[1]), rod_color)
            outline = _polygon(obj["shape"])
            if outline is None:
                sdf = lambda p, c=center, r=radius: np.linalg.norm(p - c, axis=-1) - r * 0.85  # noqa: E731
            else:
                cos, sin = math.cos(state["angle"][t]), math.sin(state["angle"][t])
                rotation = np.array([[cos, -sin], [sin, cos]])
                vertices = center + radius * outline @ rotation.T
                sdf = lambda p, v=vertices: _polygon_sdf(p, v)  # noqa: E731
            reach = radius * 1.15
            bbox = (center[0] - reach, center[1] - reach, center[0] + reach, center[1] + reach)
            _paint(canvas, sdf, bbox, np.array(RGB[obj["color"]], dtype=np.float64))
        frames[t] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    return frames


def render_clip(labels: dict[str, str], num_frames: int, size: int, fps: float, seed: int,
                object_scale: float = 1.0, linear_start: str = "anywhere") -> np.ndarray:
    """Render the clip described by ``labels`` and ``seed`` as uint8 frames (T, size, size, 3).

    Deterministic in all its arguments; the same ``(labels, seed)`` at two sizes gives the same
    continuous scene (super-resolution pairs)."""
    return render_scene(build_scene(labels, seed, object_scale, linear_start), num_frames, size, fps)


def synthetic_clips(count: int, *, num_frames: int = 8, size: int = 16, fps: float = 8.0, seed: int = 0):
    """``count`` clips drawn from the full benchmark as a video batch (B, 3, T, H, W) in [-1, 1] and their captions."""
    import torch

    videos, captions = [], []
    for index in range(count):
        clip_seed = seed * 100_003 + index
        labels = sample_labels(np.random.default_rng(clip_seed))
        frames = render_clip(labels, num_frames, size, fps, clip_seed)  # (T, H, W, 3) uint8
        videos.append(torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0)
        captions.append(caption_from_labels(labels))
    return torch.stack(videos), captions
