"""The synthetic benchmark's attribute vocabulary, its captions and the drawing of labels.

A clip is described by one label per attribute (:data:`ATTRIBUTE_VOCAB`: shape, colour, motion,
direction, speed, period, background, number of objects and the second object's shape and colour).
:func:`caption_from_labels` writes its caption (every label appears as a word) and
:func:`labels_from_caption` reads one back; :func:`sample_labels` draws labels uniformly, or from a
restricted slice of the label space (:func:`parse_restrictions`, the CPU demo's :data:`DEMO_SLICE`).
:data:`RGB` is the colour each colour word is drawn in (the renderer's palette, and the palette
that colour tracking measures against).

Rendering a scene from labels is :mod:`lumiere.data.rendering`; writing the benchmark as shards is
:mod:`lumiere.data.synthetic`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

from lumiere.errors import ConfigError

# ----------------------------------------------------------------------------------------------
# Attribute vocabulary
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
OPPOSITE_DIRECTION = {"left": "right", "right": "left", "up": "down", "down": "up",
                      "clockwise": "counterclockwise", "counterclockwise": "clockwise"}

SPEED_ADVERB = {"slow": "slowly", "medium": "at medium speed", "fast": "quickly"}

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


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


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


def label_ids(labels: dict[str, list], vocab: dict[str, list[str]] | None = None) -> dict[str, torch.Tensor]:
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


# ----------------------------------------------------------------------------------------------
# Restricted slices and label draws
# ----------------------------------------------------------------------------------------------

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


# The labels of the CPU demo's slice (the Makefile's DEMO_SLICE, which also renders it with
# --object-scale 1.5 --linear-start behind): a circle, square or triangle in red, green, blue or
# yellow, moving left, right, up or down at medium speed on a plain background. The
# prompt-following probes (lumiere.evaluation.probes) write their prompts from it.
DEMO_SLICE = parse_restrictions(["shape=circle,square,triangle", "color=red,green,blue,yellow", "motion=linear",
                                 "speed=medium", "background=plain", "num_objects=one"])


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
