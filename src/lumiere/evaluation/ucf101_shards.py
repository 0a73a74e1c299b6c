"""The UCF101 generation split over many processes (GPUs, SLURM tasks), and the merge that scores it once.

The plan of 10,235 videos is deterministic (``build_generation_plan``: class, prompt and seed of
every video). The sampler draws one noise tensor per call, seeded by the first seed of the batch,
so a video depends on the batch it is generated in: shards therefore split the plan by whole
batches, batch ``b`` (plan items ``b * batch_size`` to ``(b + 1) * batch_size - 1``) going to
shard ``b % num_shards``. Every shard then makes exactly the calls a single process makes, and
the merged videos are the single-process videos, byte for byte.

Layout under ``generated_dir``::

    shards/plan.json                    the whole plan (digest, batch size, shard count, items)
    shards/shard_0002_of_0004/          one folder per shard: its own ledger.json, plan.tsv,
        shard.json, generation.json     videos/, the shard's place in the plan and the sampler
        videos/00016_Archery.npy        settings; resumable like a single run

The merge (``merged_video_paths``) checks that every planned video is present exactly once
before anything is scored: missing, duplicated and foreign files are one line naming their
counts and first examples. ``python -m lumiere.evaluation.ucf101_shards status GENERATED_DIR``
prints the progress of every shard and runs the same check (exit 0 when complete).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from lumiere.errors import ConfigError, InputFileError, LumiereError
from lumiere.evaluation.ucf101_protocol import LEDGER_NAME, PlanItem, generate_videos_resumable, plan_digest, video_filename
from lumiere.utils import atomic_write

SHARDS_DIR = "shards"
PLAN_FILE = "plan.json"
SHARD_RECORD = "shard.json"
_SHARD_FOLDER = re.compile(r"^shard_(\d{4})_of_(\d{4})$")
_VIDEO_FILE = re.compile(r"^(\d{5,})_(\w+)\.npy$")
EXAMPLES = 3  # first examples named in an error line


def check_shard_settings(shard_index: int | None, num_shards: int) -> None:
    """``num_shards`` >= 1 and ``shard_index`` in [0, num_shards) or None; one line otherwise."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ConfigError(f"evaluation.num_shards must be a whole number >= 1, got {num_shards!r}")
    if shard_index is None:
        return
    if isinstance(shard_index, bool) or not isinstance(shard_index, int) or not 0 <= shard_index < num_shards:
        raise ConfigError(f"evaluation.shard_index must be a whole number from 0 to num_shards - 1 = {num_shards - 1} "
                          f"(null: score the merged shards), got {shard_index!r}")
    if num_shards == 1:
        raise ConfigError("evaluation.shard_index is set but evaluation.num_shards=1: set num_shards to the number of "
                          "shards, or shard_index=null for a single process")


def shard_items(plan: Sequence[PlanItem], batch_size: int, shard_index: int, num_shards: int) -> list[PlanItem]:
    """The plan items of shard ``shard_index``: whole batches ``b`` with ``b % num_shards == shard_index``."""
    check_shard_settings(shard_index, num_shards)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
    return [item for position, item in enumerate(plan) if (position // batch_size) % num_shards == shard_index]


def shard_dir(generated_dir: str | os.PathLike, shard_index: int, num_shards: int) -> Path:
    return Path(generated_dir) / SHARDS_DIR / f"shard_{shard_index:04d}_of_{num_shards:04d}"


def _plan_record(plan: Sequence[PlanItem], batch_size: int, num_shards: int) -> dict:
    return {"plan_sha256": plan_digest(plan), "num_videos": len(plan), "batch_size": batch_size, "num_shards": num_shards}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputFileError(f"{path} cannot be read ({error}); delete the shard folders of this run to start again") from None


def _write_json_once(path: Path, record: dict, what: str) -> None:
    """Write ``record`` at ``path`` unless the same record is there; another record is a one-line error."""
    if path.is_file():
        previous = _read_json(path)
        if previous != record:
            changed = sorted(k for k in set(previous) | set(record) if k != "items" and previous.get(k) != record.get(k))
            raise ConfigError(f"{path.parent} holds {what} of another plan or shard split ({', '.join(changed) or 'items'} "
                              "differ): use another evaluation.generated_dir, or the same settings as the other shards")
        return
    data = (json.dumps(record) + "\n").encode()
    atomic_write(path, lambda stream: stream.write(data))


def generate_shard(
    plan: Sequence[PlanItem],
    generate_fn: Callable[[list[str], list[int]], torch.Tensor],
    generated_dir: str | os.PathLike,
    batch_size: int,
    shard_index: int,
    num_shards: int,
    progress: bool = True,
) -> list[Path]:
    """Generate the videos of one shard into its own folder (resumable; its own ledger); returns their paths."""
    items = shard_items(plan, batch_size, shard_index, num_shards)
    folder = shard_dir(generated_dir, shard_index, num_shards)
    plan_record = _plan_record(plan, batch_size, num_shards)
    _write_json_once(Path(generated_dir) / SHARDS_DIR / PLAN_FILE,
                     {**plan_record, "items": [list(item) for item in plan]}, "videos")
    _write_json_once(folder / SHARD_RECORD, {**plan_record, "shard_index": shard_index}, "videos")
    return generate_videos_resumable(items, generate_fn, folder, batch_size=batch_size, progress=progress)


def read_plan(generated_dir: str | os.PathLike) -> tuple[list[PlanItem], dict]:
    """The whole plan the shards under ``generated_dir`` were generated from, and its record."""
    path = Path(generated_dir) / SHARDS_DIR / PLAN_FILE
    if not path.is_file():
        raise InputFileError(f"{path} not found: no shard has been generated into {generated_dir} "
                             "(run evaluate.py evaluation=ucf101 evaluation.num_shards=N evaluation.shard_index=K first)")
    record = _read_json(path)
    try:
        plan = [PlanItem(int(i), str(c), str(p), int(s)) for i, c, p, s in record.pop("items")]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputFileError(f"{path} is damaged ({error}); delete the shard folders of this run to start again") from None
    return plan, record


def _examples(names: list[str]) -> str:
    return ", ".join(names[:EXAMPLES]) + (" ..." if len(names) > EXAMPLES else "")


def merged_video_paths(generated_dir: str | os.PathLike, plan: Sequence[PlanItem], batch_size: int,
                       num_shards: int) -> list[Path]:
    """The finished video of every planned item, in plan order, from the shard folders.

    Refuses, in one line with counts and first examples: planned videos that no shard finished
    (not on disk, or not yet in its shard's ledger), videos present in more than one shard
    folder, and foreign entries (files that are no planned video, shard folders of another
    plan, batch size or shard count).
    """
    root = Path(generated_dir) / SHARDS_DIR
    expected = _plan_record(plan, batch_size, num_shards)
    _, stored = read_plan(generated_dir)
    if stored != expected:
        changed = sorted(k for k in expected if stored.get(k) != expected.get(k))
        raise ConfigError(f"{root} holds shards of another plan or split ({', '.join(changed)} differ from these "
                          "settings): use the settings the shards were generated with, or another generated_dir")
    names = {item.index: video_filename(item) for item in plan}
    found: dict[int, list[Path]] = {}
    finished: dict[int, bool] = {}
    foreign: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        match = _SHARD_FOLDER.match(folder.name)
        record_file = folder / SHARD_RECORD
        record = _read_json(record_file) if match and record_file.is_file() else None
        if not isinstance(record, dict) or int(match.group(2)) != num_shards or {k: record.get(k) for k in expected} != expected:
            foreign.append(f"{folder.name}/ (not a shard of this plan and split)")
            continue
        ledger_file = folder / LEDGER_NAME
        completed = set(_read_json(ledger_file).get("completed", [])) if ledger_file.is_file() else set()
        videos = folder / "videos"
        for path in sorted(videos.iterdir()) if videos.is_dir() else []:
            name_match = _VIDEO_FILE.match(path.name)
            index = int(name_match.group(1)) if name_match else -1
            if names.get(index) != path.name:
                if not path.name.startswith("."):  # an interrupted atomic write leaves a hidden temporary
                    foreign.append(f"{folder.name}/videos/{path.name}")
                continue
            found.setdefault(index, []).append(path)
            finished[index] = finished.get(index, False) or index in completed
    missing = [f"{names[item.index]} (shard {(position // batch_size) % num_shards})" for position, item in enumerate(plan)
               if not finished.get(item.index)]
    duplicated = [f"{names[index]} ({' and '.join(p.parent.parent.name for p in paths)})"
                  for index, paths in sorted(found.items()) if len(paths) > 1]
    if missing or duplicated or foreign:
        parts = [f"{len(missing)} missing (first: {_examples(missing)}; rerun those shards with the same settings)" if missing else "",
                 f"{len(duplicated)} duplicated (first: {_examples(duplicated)})" if duplicated else "",
                 f"{len(foreign)} foreign (first: {_examples(foreign)})" if foreign else ""]
        raise InputFileError(f"{root}: the {num_shards} shards do not hold each of the {len(plan)} planned videos exactly "
                             f"once: {', '.join(p for p in parts if p)}")
    return [found[item.index][0] for item in plan]


def shard_progress(generated_dir: str | os.PathLike) -> list[str]:
    """One line per shard: finished / planned videos (from the ledgers)."""
    plan, record = read_plan(generated_dir)
    lines = []
    for shard_index in range(record["num_shards"]):
        items = shard_items(plan, record["batch_size"], shard_index, record["num_shards"])
        ledger = shard_dir(generated_dir, shard_index, record["num_shards"]) / LEDGER_NAME
        done = len(_read_json(ledger).get("completed", [])) if ledger.is_file() else 0
        lines.append(f"shard {shard_index} of {record['num_shards']}: {done}/{len(items)} videos")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lumiere.evaluation.ucf101_shards",
                                     description="Progress and completeness of a sharded UCF101 generation.")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="per-shard progress; exit 0 when every planned video is there once")
    status.add_argument("generated_dir", type=Path, help="the evaluation.generated_dir the shards wrote into")
    args = parser.parse_args(argv)
    try:
        for line in shard_progress(args.generated_dir):
            print(line)
        plan, record = read_plan(args.generated_dir)
        merged_video_paths(args.generated_dir, plan, record["batch_size"], record["num_shards"])
    except LumiereError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"complete: all {len(plan)} videos, each once; score them with evaluation.shard_index=null "
          f"evaluation.num_shards={record['num_shards']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
