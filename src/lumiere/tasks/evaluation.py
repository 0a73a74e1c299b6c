"""The evaluate task that ``evaluate.py`` runs: ``evaluation=synthetic`` (default), ``evaluation=ucf101`` or
``evaluation=folder`` (FVD of your own real and generated clips).

It turns the composed config into plain settings, runs the mode's protocol (``lumiere.evaluation``), writes the table as markdown,
CSV and json into the run folder (``<stem>.md/.csv/.json``), prints it, sends it to the
configured loggers (a W&B table under ``logger=wandb``), and returns the numbers as
``{"<row>/<column>": value}`` for sweepers (``optimized_metric``, e.g. ``model/i3d_fvd``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lumiere.errors import ConfigError, InputFileError
from lumiere.evaluation.report import ResultTable, flat_metrics, log_table, write_table

log = logging.getLogger("lumiere")

MODES = ("synthetic", "ucf101", "folder")


def run_mode(mode: str, evaluation: dict, out_dir: Path, ckpt_path: str | None, videos_dir: str | None,
             device, progress: bool) -> tuple[ResultTable, str]:
    """Run one evaluation mode from plain settings; returns (table, file stem)."""
    if mode == "synthetic":
        from lumiere.evaluation.synthetic import evaluate_synthetic
        from lumiere.evaluation.synthetic_settings import settings_from_dict

        table = evaluate_synthetic(settings_from_dict(evaluation), out_dir, ckpt_path=ckpt_path,
                                   videos_dir=videos_dir, device=device, progress=progress)
        return table, "synthetic_eval"
    if mode == "ucf101":
        from lumiere.evaluation.ucf101 import evaluate_ucf101, settings_from_dict

        if videos_dir:
            raise ConfigError("evaluation=ucf101 generates its own videos (resumable): set ckpt_path, not videos_dir")
        table = evaluate_ucf101(settings_from_dict(evaluation), out_dir, ckpt_path=ckpt_path, device=device,
                                progress=progress)
        return table, "ucf101_eval"
    if mode == "folder":
        return run_folder_mode(evaluation, out_dir, ckpt_path, videos_dir, device, progress), "folder_eval"
    raise ConfigError(f"evaluation.mode must be one of {MODES}, got {mode!r}")


def run_folder_mode(evaluation: dict, out_dir: Path, ckpt_path: str | None, videos_dir: str | None, device,
                    progress: bool) -> ResultTable:
    """``evaluation=folder``: the prompts and the fps of the viewing copies come from the generate task's
    option checks (``read_prompts``, ``output_fps``: the checkpoint's training frame rate)."""
    from lumiere.evaluation.folder import evaluate_folder, settings_from_dict
    from lumiere.tasks.generation import output_fps, read_prompts

    if videos_dir:
        raise ConfigError("evaluation=folder reads its generated clips from evaluation.generated=PATH, not videos_dir")
    settings = settings_from_dict(evaluation)
    prompts, fps = None, None
    if ckpt_path:
        prompts = read_prompts(None, settings.prompt_file) if settings.prompt_file else None
        fps = output_fps(None, ckpt_path) if Path(ckpt_path).is_file() else None
    elif settings.prompt_file:
        raise ConfigError("evaluation.prompt_file is read only when sampling: set ckpt_path=PATH too, or drop it")
    return evaluate_folder(settings, out_dir, ckpt_path=ckpt_path, prompts=prompts, device=device,
                           progress=progress, mp4_fps=fps)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Evaluate a base checkpoint (or a folder of generated clips) and write the result table.

    The checkpoint must be a text-to-video stage (TextToVideoModule, or ConditionalVideoModule);
    `allow_frozen_mismatch=true` loads one whose frozen U-Net / text encoder weights changed since."""
    from lumiere.tasks.generation import check_no_missing, flag, pick_device, whole_number
    from lumiere.utils import seed_everything, set_cpu_threads

    check_no_missing(cfg)
    set_cpu_threads(whole_number(cfg.get("cpu_threads"), "cpu_threads", null="torch's default"))
    seed = whole_number(cfg.get("seed", 0), "seed", minimum=0)
    allow_frozen_mismatch = flag(cfg.get("allow_frozen_mismatch", False), "allow_frozen_mismatch")
    progress = flag(cfg.get("progress", True), "progress")
    device = pick_device(cfg.get("device"))

    ckpt_path = cfg.get("ckpt_path") or None
    if ckpt_path and Path(ckpt_path).is_file():  # one we cannot use is refused before any data is read
        from lumiere.training.base import checkpoint_stage, read_checkpoint

        stage = checkpoint_stage(read_checkpoint(str(ckpt_path)))
        if stage not in ("TextToVideoModule", "ConditionalVideoModule"):
            raise InputFileError(f"{ckpt_path} is a {stage} checkpoint; expected a TextToVideoModule or "
                                 "ConditionalVideoModule checkpoint here")

    from lumiere.evaluation.generated import checkpoint_load_options
    from lumiere.tasks.runner import instantiate_collection

    seed_everything(seed)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluation = OmegaConf.to_container(cfg.evaluation, resolve=True)
    mode = evaluation.get("mode")
    loggers = instantiate_collection(cfg.get("logger"))  # created first: a bad logger config fails early

    with checkpoint_load_options(allow_frozen_mismatch=allow_frozen_mismatch):
        table, stem = run_mode(mode, evaluation, out_dir, ckpt_path, cfg.get("videos_dir") or None,
                               device, progress)
    paths = write_table(table, out_dir, stem)
    print(table.to_markdown())
    print(f"tables written to {paths['markdown']} (+ .csv, .json)")
    log_table(loggers, f"evaluation/{mode}", table)
    metrics = flat_metrics(table)
    log.info("evaluation metrics: %s", metrics)
    return metrics

