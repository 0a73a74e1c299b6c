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

Each clip is a *continuous* scene description (normalised coordinates, seconds) drawn from
``(labels, seed)``; :func:`render_clip` samples it at any size, so the same scene rendered at
32 and 128 pixels gives aligned pairs for the spatial super-resolution stage (Sec. 3.2).
Shapes are drawn from signed distance functions with a one-pixel coverage ramp (analytic
anti-aliasing), so a star still looks like a star at 32x32; textured backgrounds are
supersampled 4x and area-downsampled.

Each clip's caption is generated from its labels (:func:`caption_from_labels`) and its labels
(:data:`ATTRIBUTE_VOCAB`) are stored in the sample json, so evaluation can train a domain
classifier and score prompt adherence and motion.

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
import re
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lumiere.errors import ConfigError, LumiereError

GENERATOR_VERSION = 2  # bump when rendering or captions change: a manifest from another version is stale

# ----------------------------------------------------------------------------------------------
# Attribute vocabulary and captions
# ----------------------------------------------------------------------------------------------

SHAPES = ["circle", "square", "triangle", "star", "hexagon", "cross"]
COLORS = ["red", "green", "blue", "yellow", "magenta", "cyan", "orange", "white"]
MOTIONS = ["linear", "bouncing", "rotation", "pendulum", "hopping", "pulsing"]
DIRECTIONS = ["left", "right", "up", "down", "clockwise", "counterclockwise", "none"]
SPEEDS = ["slow", "medium", "fast"]
PERIODS = ["long", "medium", "short", "none"]
BACKGROUNDS = ["plain", "striped", "checkered", "gradient"]

ATTRIBUTE_VOCAB: dict[str, list[str]] = {
    "shape": SHAPES,
    "color": COLORS,
    "motion": MOTIONS,
    "direction": DIRECTIONS,
    "speed": SPEEDS,
    "period": PERIODS,  # periodic motions only; follows the speed (slow = long period)
    "background": BACKGROUNDS,
    "num_objects": ["one", "two"],
    "second_shape": SHAPES + ["none"],
    "second_color": COLORS + ["none"],
}

DIRECTIONS_BY_MOTION = {
    "linear": ["left", "right", "up", "down"],
    "bouncing": ["none"],
    "rotation": ["clockwise", "counterclockwise"],
    "pendulum": ["none"],
    "hopping": ["left", "right"],
    "pulsing": ["none"],
}
PERIODIC_MOTIONS = ("pendulum", "hopping", "pulsing")
PERIOD_BY_SPEED = {"slow": "long", "medium": "medium", "fast": "short"}

SPEED_FACTOR = {"slow": 1.0, "medium": 2.0, "fast": 4.0}
SPEED_ADVERB = {"slow": "slowly", "medium": "at medium speed", "fast": "quickly"}
PERIOD_SECONDS = {"long": 2.5, "medium": 1.25, "short": 0.625}  # 2, 4, 8 periods in 5 s

RGB = {
    "red": (225, 40, 40),
    "green": (45, 195, 65),
    "blue": (55, 95, 235),
    "yellow": (240, 220, 40),
    "magenta": (215, 50, 205),
    "cyan": (40, 215, 225),
    "orange": (250, 140, 25),
    "white": (242, 242, 242),
}
# Backgrounds are dark and desaturated so that every shape colour stays the salient signal.
BACKGROUND_TONES = [
    (22, 22, 28), (48, 48, 62), (28, 42, 34), (62, 50, 38),
    (20, 30, 58), (72, 72, 78), (52, 30, 46), (34, 56, 62),
]


def _motion_phrase(labels: dict[str, str]) -> str:
    motion, direction = labels["motion"], labels["direction"]
    if motion == "linear":
        return f"moving {direction}"
    if motion == "bouncing":
        return "bouncing around"
    if motion == "rotation":
        return f"rotating {direction}"
    if motion == "pendulum":
        return "swinging like a pendulum"
    if motion == "hopping":
        return f"hopping to the {direction}"
    if motion == "pulsing":
        return "pulsing in size"
    raise ConfigError(f"unknown motion {motion!r}")


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption_from_labels(labels: dict[str, str]) -> str:
    """The clip's caption, e.g. ``"a red square bouncing around quickly on a striped background"``.

    Every class label appears as a word (speed as its adverb: slowly / at medium speed / quickly),
    so a caption names its clip's attributes unambiguously."""
    subject = f"{_article(labels['color'])} {labels['color']} {labels['shape']}"
    if labels.get("num_objects") == "two":
        subject += f" and {_article(labels['second_color'])} {labels['second_color']} {labels['second_shape']}"
    return (
        f"{subject} {_motion_phrase(labels)} {SPEED_ADVERB[labels['speed']]} "
        f"on a {labels['background']} background"
    )


_CAPTION_PATTERN = re.compile(
    r"^an? (?P<color>\w+) (?P<shape>\w+)(?: and an? (?P<second_color>\w+) (?P<second_shape>\w+))? "
    r"(?P<motion>moving (?P<linear>left|right|up|down)|bouncing around|rotating (?P<rotation>clockwise|counterclockwise)"
    r"|swinging like a pendulum|hopping to the (?P<hopping>left|right)|pulsing in size) "
    r"(?P<speed>slowly|at medium speed|quickly) on a (?P<background>\w+) background$"
)
_MOTION_BY_VERB = {"moving": "linear", "bouncing": "bouncing", "rotating": "rotation", "swinging": "pendulum", "hopping": "hopping", "pulsing": "pulsing"}


def labels_from_caption(caption: str) -> dict[str, str]:
    """Inverse of :func:`caption_from_labels` (e.g. to score a hand-written prompt's labels).

    Raises :class:`ConfigError` for a caption the benchmark cannot produce."""
    match = _CAPTION_PATTERN.match(caption.strip())
    if match is None:
        raise ConfigError(f"not a synthetic-benchmark caption: {caption!r}")
    motion = _MOTION_BY_VERB[match["motion"].split()[0]]
    speed = {adverb: name for name, adverb in SPEED_ADVERB.items()}[match["speed"]]
    two = match["second_shape"] is not None
    labels = {
        "shape": match["shape"],
        "color": match["color"],
        "motion": motion,
        "direction": match["linear"] or match["rotation"] or match["hopping"] or "none",
        "speed": speed,
        "period": PERIOD_BY_SPEED[speed] if motion in PERIODIC_MOTIONS else "none",
        "background": match["background"],
        "num_objects": "two" if two else "one",
        "second_shape": match["second_shape"] if two else "none",
        "second_color": match["second_color"] if two else "none",
    }
    validate_labels(labels)
    return {key: labels[key] for key in ATTRIBUTE_VOCAB}


def label_ids(labels: dict[str, list], vocab: dict[str, list[str]] | None = None) -> dict[str, "torch.Tensor"]:
    """A batch's ``labels`` (``{name: [value per clip]}``) as class indices into ``vocab``
    (default :data:`ATTRIBUTE_VOCAB`), -1 where a clip has no such label (ignored by losses)."""
    import torch

    vocab = ATTRIBUTE_VOCAB if vocab is None else vocab
    ids = {}
    for name, options in vocab.items():
        if name in labels:
            index = {value: i for i, value in enumerate(options)}
            ids[name] = torch.tensor([index.get(value, -1) for value in labels[name]], dtype=torch.long)
    return ids


# Attributes a benchmark can be restricted to (``--restrict``); the others follow from these.
RESTRICTABLE = ("shape", "color", "motion", "direction", "speed", "background", "num_objects")


def parse_restrictions(items: list[str] | dict[str, Any] | None) -> dict[str, list[str]]:
    """``["motion=linear,bouncing", "num_objects=one"]`` (or a dict) as ``{attribute: [values]}``.

    Raises :class:`ConfigError` for an unknown attribute or value: a restricted benchmark is a
    subset of the full label space, so its labels and captions stay valid everywhere."""
    if not items:
        return {}
    pairs = items.items() if isinstance(items, dict) else [item.partition("=")[::2] for item in items]
    restrictions: dict[str, list[str]] = {}
    for key, values in pairs:
        key = key.strip()
        if key not in RESTRICTABLE:
            raise ConfigError(f"cannot restrict {key!r}: restrictable attributes are {', '.join(RESTRICTABLE)}")
        values = [v.strip() for v in values.split(",")] if isinstance(values, str) else [str(v) for v in values]
        unknown = [v for v in values if v not in ATTRIBUTE_VOCAB[key]]
        if unknown or not values or values == [""]:
            raise ConfigError(f"restriction {key}={','.join(values)}: {key} must be among {ATTRIBUTE_VOCAB[key]}")
        restrictions[key] = sorted(set(values), key=ATTRIBUTE_VOCAB[key].index)
    return restrictions


def check_restrictions(restrictions: dict[str, list[str]]) -> None:
    """Raise :class:`ConfigError` if some allowed motion has no shape or direction left to draw."""
    allowed = {key: restrictions.get(key, ATTRIBUTE_VOCAB[key]) for key in RESTRICTABLE}
    for motion in allowed["motion"]:
        shapes = [s for s in allowed["shape"] if not (motion == "rotation" and s == "circle")]
        directions = [d for d in DIRECTIONS_BY_MOTION[motion] if d in allowed["direction"]]
        if not shapes or not directions:
            missing = "shape (rotation excludes circles)" if not shapes else f"direction among {DIRECTIONS_BY_MOTION[motion]}"
            raise ConfigError(f"the restrictions leave motion {motion!r} no {missing}")
    if "two" in allowed["num_objects"] and len(allowed["color"]) < 2:
        raise ConfigError("two-object clips need two colours: restrict num_objects=one or allow more colours")


def sample_labels(rng: np.random.Generator, restrictions: dict[str, list[str]] | None = None) -> dict[str, str]:
    """Draw a clip's attribute labels uniformly (rotation never uses circles: it is invisible).

    ``restrictions`` (:func:`parse_restrictions`) limits attributes to subsets; without it the
    draws are those of the full benchmark. Raises :class:`ConfigError` when a restriction leaves
    nothing to draw (e.g. motion=rotation with shape=circle)."""
    allowed = restrictions or {}

    def pick(key: str, options: list[str]) -> str:
        if key in allowed:
            options = [o for o in options if o in allowed[key]]
            if not options:
                raise ConfigError(f"the restrictions {allowed} leave no {key} to draw")
        return options[int(rng.integers(len(options)))]

    motion = pick("motion", MOTIONS)
    shapes = [s for s in SHAPES if not (motion == "rotation" and s == "circle")]
    labels = {
        "shape": pick("shape", shapes),
        "color": pick("color", COLORS),
        "motion": motion,
        "direction": pick("direction", DIRECTIONS_BY_MOTION[motion]),
        "speed": pick("speed", SPEEDS),
        "background": pick("background", BACKGROUNDS),
        "num_objects": pick("num_objects", ["one", "two"]),
    }
    labels["period"] = PERIOD_BY_SPEED[labels["speed"]] if motion in PERIODIC_MOTIONS else "none"
    if labels["num_objects"] == "two":
        labels["second_shape"] = pick("shape", shapes)
        labels["second_color"] = pick("color", [c for c in COLORS if c != labels["color"]])
    else:
        labels["second_shape"] = labels["second_color"] = "none"
    return {key: labels[key] for key in ATTRIBUTE_VOCAB}


def validate_labels(labels: dict[str, str]) -> None:
    """Raise ConfigError unless ``labels`` is a complete, consistent label set."""
    for key, options in ATTRIBUTE_VOCAB.items():
        if labels.get(key) not in options:
            raise ConfigError(f"label {key}={labels.get(key)!r} is not one of {options}")
    if labels["direction"] not in DIRECTIONS_BY_MOTION[labels["motion"]]:
        raise ConfigError(f"direction {labels['direction']!r} does not fit motion {labels['motion']!r}")


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


def _parse_bytes(text: str) -> int:
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    text = text.strip().lower().rstrip("ib").rstrip("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(float(text))


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
    parser.add_argument("--shard-max-bytes", type=_parse_bytes, default=64 * 2**20, help="e.g. 64MB")
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
