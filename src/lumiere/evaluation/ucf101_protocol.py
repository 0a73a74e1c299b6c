"""UCF101 zero-shot text-to-video protocol (paper Sec. 5.2, Table 1, App. D.2) and the user-study prompts (App. D.3).

App. D.2: "we generated 10,235 videos by following the class distribution of the UCF101 dataset
[...] we extract I3D embedding of the first 16 frames of our videos. Then we compute the FVD
score between the I3D embedding of ours and that of UCF101 videos." This module holds:

- the 101 class names (``classInd.txt`` order) and the full-dataset clip count of every class
  (13,320 clips), shipped in ``assets/ucf101_classes.tsv``;
- class-name prompts from templates (the PYoCo prompt set the paper used is not public) and a
  user prompt file (``ClassName<TAB>prompt`` lines, or json ``{class: prompt | [prompts]}``);
- ``apportion``: largest-remainder split of 10,235 videos over the class frequencies (it hits
  the total exactly and every class is within one video of its exact quota);
- a seeded generation plan and a resumable generator that writes each video and a ledger of
  finished indices atomically, so a crash never costs finished videos;
- the real-side FVD statistics from a user-provided UCF101 folder (decoded with PyAV).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tqdm.auto import tqdm

from lumiere.errors import ConfigError, InputFileError
from lumiere.utils import apply_default_file_mode

ASSETS = Path(__file__).parent / "assets"
UCF101_TOTAL_CLIPS = 13320
PAPER_NUM_VIDEOS = 10235  # App. D.2
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov")

# ----------------------------------------------------------------------------------------------
# Classes and their clip counts
# ----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _class_table() -> tuple[tuple[str, int], ...]:
    rows = []
    for line in (ASSETS / "ucf101_classes.tsv").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        index, name, clips = line.split("\t")
        rows.append((int(index), name, int(clips)))
    rows.sort()
    assert [r[0] for r in rows] == list(range(1, 102)), "ucf101_classes.tsv must list classes 1..101"
    return tuple((name, clips) for _, name, clips in rows)


def ucf101_classes() -> list[str]:
    """The 101 class names in ``classInd.txt`` order (label 1 first)."""
    return [name for name, _ in _class_table()]


def ucf101_class_counts() -> dict[str, int]:
    """Clips per class over the whole dataset (13,320 in total, 100 to 167 per class)."""
    return dict(_class_table())


def canonical_class_name(name: str) -> str:
    """Map a class name or folder name (any case, e.g. ``HandstandPushups``) to the ``classInd`` spelling."""
    lookup = {c.lower(): c for c in ucf101_classes()}
    key = name.strip().lower()
    if key not in lookup:
        raise InputFileError(f"'{name}' is not a UCF101 class name")
    return lookup[key]


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------

PROMPT_TEMPLATES = {
    "a_person": "a person {words}",
    "video_of": "a video of {words}",
    "plain": "{words}",
}


def class_words(class_name: str) -> str:
    """CamelCase class name to lower-case words: ``ApplyEyeMakeup`` -> ``apply eye makeup``."""
    return " ".join(part.lower() for part in re.findall(r"[A-Z][a-z]*|[a-z]+|[0-9]+", class_name))


def class_prompt(class_name: str, template: str = "a_person") -> str:
    """Prompt for a class from a template name of ``PROMPT_TEMPLATES`` or a format string with ``{words}``."""
    pattern = PROMPT_TEMPLATES.get(template, template)
    if "{words}" not in pattern:
        raise ConfigError(f"prompt template must be one of {sorted(PROMPT_TEMPLATES)} or contain '{{words}}', got {template!r}")
    return pattern.format(words=class_words(class_name))


def load_prompt_file(path: str | os.PathLike) -> dict[str, list[str]]:
    """Read per-class prompts: ``ClassName<TAB>prompt`` lines (several lines per class allowed;
    ``#`` comments) or a json object ``{class: prompt or [prompts]}``."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"prompt file not found: {path}")
    prompts: dict[str, list[str]] = {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise InputFileError(f"{path} is not valid json: {error}") from error
        if not isinstance(data, dict):
            raise InputFileError(f"{path} must hold a json object mapping class names to prompts")
        for name, value in data.items():
            values = [value] if isinstance(value, str) else value
            if not isinstance(values, list) or not values or not all(isinstance(v, str) and v.strip() for v in values):
                raise InputFileError(f"{path}: prompts for '{name}' must be a non-empty string or list of strings")
            prompts.setdefault(canonical_class_name(name), []).extend(v.strip() for v in values)
        return prompts
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" not in line:
            raise InputFileError(f"{path}:{number}: expected 'ClassName<TAB>prompt'")
        name, prompt = line.split("\t", 1)
        if not prompt.strip():
            raise InputFileError(f"{path}:{number}: empty prompt for '{name}'")
        prompts.setdefault(canonical_class_name(name), []).append(prompt.strip())
    return prompts


def ucf101_prompts(prompt_file: str | os.PathLike | None = None, template: str = "a_person") -> dict[str, list[str]]:
    """Prompts of every class: the template's class-name prompt, replaced by the file's where given."""
    prompts = {name: [class_prompt(name, template)] for name in ucf101_classes()}
    if prompt_file is not None:
        prompts.update(load_prompt_file(prompt_file))
    return prompts


def load_user_study_prompts() -> list[str]:
    """The text prompts of the paper's user study (App. D.3), in the paper's order."""
    lines = (ASSETS / "user_study_prompts.txt").read_text().splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


# ----------------------------------------------------------------------------------------------
# Apportionment and the generation plan
# ----------------------------------------------------------------------------------------------


def apportion(total: int = PAPER_NUM_VIDEOS, counts: dict[str, int] | None = None) -> dict[str, int]:
    """Split ``total`` videos over classes in proportion to ``counts`` (largest remainder).

    Every class gets the floor of its exact quota ``total * n_c / N``; the videos left over go to
    the largest remainders (ties: class order). Exact integer arithmetic, so the result sums to
    ``total`` and each class is within one of its quota.
    """
    counts = ucf101_class_counts() if counts is None else counts
    if total < 0 or not counts or any(n < 0 for n in counts.values()) or sum(counts.values()) == 0:
        raise ConfigError("apportion needs a non-negative total and non-negative class counts with a positive sum")
    names = list(counts)
    grand = sum(counts.values())
    shares = {name: divmod(total * counts[name], grand) for name in names}
    result = {name: shares[name][0] for name in names}
    left = total - sum(result.values())
    by_remainder = sorted(range(len(names)), key=lambda i: (-shares[names[i]][1], i))
    for i in by_remainder[:left]:
        result[names[i]] += 1
    return result


class PlanItem(NamedTuple):
    """One video to generate: its index in the plan, class, prompt and sampling seed."""

    index: int
    class_name: str
    prompt: str
    seed: int


def build_generation_plan(
    total: int = PAPER_NUM_VIDEOS,
    prompts: dict[str, Sequence[str] | str] | None = None,
    seed: int = 0,
    counts: dict[str, int] | None = None,
) -> list[PlanItem]:
    """The videos to generate: ``apportion(total)`` per class, class by class in class order.

    A class with several prompts cycles through them. Seeds are distinct, drawn from ``seed``.
    """
    prompts = ucf101_prompts() if prompts is None else prompts
    quotas = apportion(total, counts)
    missing = [name for name, quota in quotas.items() if quota and not prompts.get(name)]
    if missing:
        raise ConfigError(f"no prompt for UCF101 classes {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    seeds = np.random.default_rng(seed).choice(2**31 - 1, size=total, replace=False)
    plan: list[PlanItem] = []
    for name, quota in quotas.items():
        options = [prompts[name]] if isinstance(prompts.get(name), str) else list(prompts.get(name) or [])
        for k in range(quota):
            index = len(plan)
            plan.append(PlanItem(index, name, options[k % len(options)], int(seeds[index])))
    return plan


# ----------------------------------------------------------------------------------------------
# Resumable generation
# ----------------------------------------------------------------------------------------------

LEDGER_NAME = "ledger.json"
PLAN_NAME = "plan.tsv"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, then rename: readers see old or new, never half."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        apply_default_file_mode(temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _to_uint8_thwc(video: torch.Tensor) -> np.ndarray:
    """(C, T, H, W) in [-1, 1] -> uint8 (T, H, W, C)."""
    video = ((video.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return video.permute(1, 2, 3, 0).cpu().numpy()


def write_npy_video(path: Path, video: torch.Tensor) -> None:
    """Default writer: the video as uint8 (T, H, W, C) ``.npy``, written atomically."""
    import io

    buffer = io.BytesIO()
    np.save(buffer, _to_uint8_thwc(video), allow_pickle=False)
    _atomic_write_bytes(path, buffer.getvalue())


def read_video_file(path: str | os.PathLike, num_frames: int | None = None) -> torch.Tensor:
    """A generated (``.npy`` uint8 THWC) or encoded video file as (C, T, H, W) float in [-1, 1]."""
    path = Path(path)
    if path.suffix == ".npy":
        frames = np.load(path, allow_pickle=False)
        frames = frames[:num_frames] if num_frames else frames
    else:
        frames = decode_first_frames(path, num_frames)
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1.0


def plan_digest(plan: Sequence[PlanItem]) -> str:
    """sha256 of the plan's items: the identity of a generation, kept in its ledger."""
    return hashlib.sha256(json.dumps([list(item) for item in plan]).encode()).hexdigest()


def video_filename(item: PlanItem, extension: str = ".npy") -> str:
    return f"{item.index:05d}_{item.class_name}{extension}"


def generate_videos_resumable(
    plan: Sequence[PlanItem],
    generate_fn: Callable[[list[str], list[int]], torch.Tensor],
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    writer: Callable[[Path, torch.Tensor], None] | None = None,
    extension: str = ".npy",
    progress: bool = True,
    desc: str = "generating UCF101 videos",
) -> list[Path]:
    """Generate every video of ``plan`` into ``out_dir``, skipping the ones already finished.

    ``generate_fn(prompts, seeds)`` returns (B, C, T, H, W) in [-1, 1]. Each video is written by
    ``writer(path, video (C, T, H, W))`` (default: uint8 ``.npy``), then the batch's indices are
    added to ``ledger.json`` (written atomically). A re-run after a crash reads the ledger and
    generates only the missing videos; a file whose index is not in the ledger is regenerated.
    ``plan.tsv`` lists index, class, seed, file and prompt for the evaluation.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    writer = writer or write_npy_video
    digest = plan_digest(plan)
    ledger_path = out_dir / LEDGER_NAME
    completed: set[int] = set()
    if ledger_path.is_file():
        ledger = json.loads(ledger_path.read_text())
        if ledger.get("plan_sha256") != digest:
            raise ConfigError(f"{out_dir} holds videos of a different generation plan: use another out_dir")
        completed = set(ledger["completed"])
    paths = [out_dir / "videos" / video_filename(item, extension) for item in plan]
    rows = ["index\tclass\tseed\tfile\tprompt"] + [
        f"{item.index}\t{item.class_name}\t{item.seed}\t{path.relative_to(out_dir)}\t{item.prompt}" for item, path in zip(plan, paths)
    ]
    _atomic_write_bytes(out_dir / PLAN_NAME, ("\n".join(rows) + "\n").encode())

    pending = [(item, path) for item, path in zip(plan, paths) if item.index not in completed or not path.is_file()]
    bar = tqdm(total=len(plan), initial=len(plan) - len(pending), desc=desc, disable=not progress)
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        videos = generate_fn([item.prompt for item, _ in batch], [item.seed for item, _ in batch])
        if videos.ndim != 5 or videos.shape[0] != len(batch):
            raise ConfigError(f"generate_fn returned shape {tuple(videos.shape)} for {len(batch)} prompts, expected (B, C, T, H, W)")
        for (_, path), video in zip(batch, videos):
            writer(path, video)
        completed.update(item.index for item, _ in batch)
        ledger = {"plan_sha256": digest, "total": len(plan), "completed": sorted(completed)}
        _atomic_write_bytes(ledger_path, json.dumps(ledger).encode())
        bar.update(len(batch))
    bar.close()
    return paths


def iter_video_batches(
    paths: Iterable[str | os.PathLike], batch_size: int = 8, num_frames: int | None = 16
) -> Iterator[torch.Tensor]:
    """Read video files into (B, C, T, H, W) batches in [-1, 1] (a new batch when the shape changes)."""
    buffer: list[torch.Tensor] = []
    for path in paths:
        video = read_video_file(path, num_frames)
        if buffer and (len(buffer) == batch_size or video.shape != buffer[0].shape):
            yield torch.stack(buffer)
            buffer = []
        buffer.append(video)
    if buffer:
        yield torch.stack(buffer)


# ----------------------------------------------------------------------------------------------
# Real statistics from a UCF101 folder
# ----------------------------------------------------------------------------------------------


def decode_first_frames(path: str | os.PathLike, num_frames: int | None = 16) -> np.ndarray:
    """The first ``num_frames`` RGB frames of a video file as uint8 (T, H, W, 3), decoded with PyAV."""
    import av

    from lumiere.data.decoders import quiet_native_logging

    quiet_native_logging("pyav")  # a damaged clip is one error line, not FFmpeg's log
    frames = []
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if num_frames and len(frames) == num_frames:
                    break
    except (av.FFmpegError, OSError, ValueError, IndexError) as error:  # IndexError/ValueError: no video stream
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputFileError(f"cannot decode {path}: {detail}") from None
    if not frames:
        raise InputFileError(f"{path} holds no video frames")
    return np.stack(frames)


def find_ucf101_videos(
    root: str | os.PathLike, max_per_class: int | None = None, classes: Sequence[str] | None = None
) -> list[tuple[str, Path]]:
    """(class, file) for every video under ``root/<ClassFolder>/`` (folder names matched
    case-insensitively); every class of ``classes`` (default all 101) must be present."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise InputFileError(f"UCF101 folder {root} is a file, not the UCF-101 folder of class folders")
    if not root.is_dir():
        raise InputFileError(f"UCF101 folder not found: {root}")
    classes = ucf101_classes() if classes is None else [canonical_class_name(name) for name in classes]
    folders = {folder.name.lower(): folder for folder in root.iterdir() if folder.is_dir()}
    missing = [name for name in classes if name.lower() not in folders]
    if missing:
        raise InputFileError(f"{root} lacks UCF101 class folders {missing[:5]}{' ...' if len(missing) > 5 else ''} (expected root/ApplyEyeMakeup/*.avi, ...)")
    videos = []
    for name in classes:
        files = sorted(p for p in folders[name.lower()].iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS)
        videos.extend((name, path) for path in files[:max_per_class])
    return videos


def compute_ucf101_real_statistics(
    root: str | os.PathLike,
    out_path: str | os.PathLike,
    metric=None,
    batch_size: int = 8,
    num_frames: int = 16,
    max_per_class: int | None = None,
    classes: Sequence[str] | None = None,
    progress: bool = True,
) -> Path:
    """Feed every UCF101 clip's first ``num_frames`` frames to the FVD metric's real side and save the npz.

    ``metric`` defaults to ``FrechetVideoDistance()`` (I3D, published preprocessing). Clips shorter
    than ``num_frames`` are skipped with a warning. ``max_per_class`` and ``classes`` restrict the
    clips for quick runs (the published protocol uses all 13,320).
    """
    from lumiere.metrics.fvd import FrechetVideoDistance

    metric = FrechetVideoDistance() if metric is None else metric
    videos = find_ucf101_videos(root, max_per_class, classes)
    buffer: list[torch.Tensor] = []
    too_short = 0

    def flush() -> None:
        if buffer:
            metric.update(torch.stack(buffer), real=True)
            buffer.clear()

    for _, path in tqdm(videos, desc="UCF101 real statistics", disable=not progress):
        frames = decode_first_frames(path, num_frames)
        if frames.shape[0] < num_frames:
            too_short += 1
            continue
        video = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 127.5 - 1.0
        if buffer and (len(buffer) == batch_size or video.shape != buffer[0].shape):
            flush()
        buffer.append(video)
    flush()
    if too_short:
        warnings.warn(f"skipped {too_short} UCF101 clips shorter than {num_frames} frames", stacklevel=2)
    return metric.save_real_statistics(out_path)
