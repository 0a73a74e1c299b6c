"""The train task that ``train.py`` runs: fit the configured stage, export its components.

Cluster wiring (docs/cluster.md): a stable W&B id across requeues, a preemption checkpoint, the
per-device batch from ``global_batch_size``, and a check that the launch matches the strategy.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lumiere.errors import ConfigError
from lumiere.tasks.runner import instantiate_collection

log = logging.getLogger("lumiere")


def is_global_rank_zero(environ: dict[str, str] | None = None) -> bool:
    """Whether this process is rank 0 of its job, from the launcher's environment (before any
    process group exists): RANK (torchrun), SLURM_PROCID (srun), else NODE_RANK and LOCAL_RANK
    (Lightning's own launcher); a single process has none of them and is rank 0."""
    environ = os.environ if environ is None else environ
    for name in ("RANK", "SLURM_PROCID"):
        if environ.get(name, "").strip():
            return int(environ[name]) == 0
    return all(int(environ.get(name, "").strip() or 0) == 0 for name in ("NODE_RANK", "LOCAL_RANK"))


def trainer_plugins(trainer_cfg: DictConfig) -> list[Any] | None:
    """The trainer's plugins: the configured ones (`trainer.plugins`, e.g. the atomic checkpoint
    writer) plus, under SLURM, the SLURM environment with Lightning's requeue off, unless a configured
    plugin already is a cluster environment. None when there are none."""
    from lightning.fabric.plugins.environments import ClusterEnvironment

    from lumiere.training import distributed
    from lumiere.utils import instantiate_config

    configured = trainer_cfg.get("plugins")
    if configured is None:
        entries = []
    elif OmegaConf.is_list(configured) or isinstance(configured, (list, tuple)):
        entries = list(configured)
    else:
        entries = [configured]
    plugins = [instantiate_config(entry) if OmegaConf.is_config(entry) or isinstance(entry, dict) else entry
               for entry in entries if entry is not None]
    if not any(isinstance(plugin, ClusterEnvironment) for plugin in plugins):
        plugins.extend(distributed.slurm_plugins())
    return plugins or None


def check_frame_counts(cfg: DictConfig, model: Any) -> None:
    """Refuse, before any file is written, a clip length the model cannot take (the STUNet's frame
    count must be a multiple of its temporal factor N and at least 2N): the training clips
    (`data.num_frames`, unless the data are still images) and the validation samples (`val_num_frames`)."""
    check = getattr(model, "check_num_frames", None)
    if not callable(check):
        return
    data = cfg.get("data") or {}
    if data.get("num_frames") is not None and not data.get("image_mode", False):
        try:
            check(int(data.num_frames))
        except ConfigError as error:
            raise ConfigError(f"data.num_frames={data.num_frames}: {error}") from None
    val_num_frames = getattr(model, "val_num_frames", None)
    if val_num_frames:
        try:
            check(int(val_num_frames))
        except ConfigError as error:
            raise ConfigError(f"model.val_num_frames={val_num_frames}: {error}") from None


VIDEO_DATA_TARGETS = ("lumiere.data.VideoDataModule", "lumiere.data.datamodule.VideoDataModule")
# `model.val_prompts: null` samples this many distinct captions of the validation split (the count of
# prompts the synthetic model configs listed), so a real dataset's samples show its own captions.
NUM_CAPTION_VAL_PROMPTS = 4


def draw_stills_for_image_stage(cfg: DictConfig, model: Any) -> None:
    """The stage decides the sample kind: a text-to-image stage (TextToImageModule, stage 0 and its
    style fine-tune) trains on still frames, so a video data config (e.g. `data=webdataset` under
    `experiment=demo_t2i`) is switched to image mode, in one log line, before the data are built."""
    from lumiere.training.stages import TextToImageModule

    data = cfg.get("data")
    if not isinstance(model, TextToImageModule) or data is None or data.get("_target_") not in VIDEO_DATA_TARGETS:
        return
    if not data.get("image_mode", False):
        log.info("%s is a text-to-image stage: data.image_mode=true (%s still frames per clip, T = 1)",
                 type(model).__name__, data.get("frames_per_clip", "data.frames_per_clip"))
        with open_dict(cfg):
            cfg.data.image_mode = True


def check_training_shards(cfg: DictConfig) -> None:
    """Resolve the shards a fit reads (train, and val when there is one) from ``data.root`` /
    ``data.*_shards`` before the model is built: a missing folder or shard is one line in seconds,
    not after the frozen U-Net and T5 loaded (minutes at IF scale). The rule is the data module's
    own (`VideoDataModule.setup`, on a throwaway instance: building one touches no file)."""
    from lumiere.utils import instantiate_config

    data = cfg.get("data")
    if not cfg.get("train", True) or data is None or data.get("_target_") not in VIDEO_DATA_TARGETS:
        return
    instantiate_config(data).setup("fit")


def wants_caption_val_prompts(cfg: DictConfig) -> bool:
    """`model.val_prompts: null`: the validation prompts are the data's own captions (filled in by
    :func:`fill_val_prompts_from_captions`); an explicit list, or [] for none, is kept as given."""
    model_cfg = cfg.get("model")
    return model_cfg is not None and "val_prompts" in model_cfg and model_cfg.val_prompts is None


def distinct_captions(shards: list[str], limit: int) -> list[str]:
    """The first `limit` distinct captions of `shards`, read in shard order without decoding any video."""
    import webdataset as wds

    from lumiere.data.shards import sample_caption, sample_meta

    found: list[str] = []
    for shard in shards:
        for sample in wds.tarfile_to_samples(handler=wds.warn_and_continue)(iter([{"url": shard}])):
            try:
                caption = sample_caption(sample, sample_meta(sample))
            except (ValueError, UnicodeDecodeError):
                continue  # bad json: the loader skips this sample too
            if caption is not None and caption not in found:
                found.append(caption)
                if len(found) == limit:
                    return found
    return found


def fill_val_prompts_from_captions(cfg: DictConfig, model: Any, datamodule: Any) -> None:
    """Set the model's validation prompts (and the config its checkpoints store) to the first
    NUM_CAPTION_VAL_PROMPTS distinct captions of the validation split, or of the training split
    when there is no validation split."""
    shards = getattr(datamodule, "shards", None)
    if not isinstance(shards, dict) or not callable(getattr(datamodule, "setup", None)):
        raise ConfigError(f"model.val_prompts=null takes the validation captions from a VideoDataModule, but data is "
                          f"{type(datamodule).__name__}: give model.val_prompts='[\"a prompt\"]' (or [] for none)")
    datamodule.setup("validate")
    split = "val" if datamodule.shards.get("val") else "train"
    if split == "train":
        datamodule.setup("fit")
    prompts = distinct_captions(datamodule.shards.get(split) or [], NUM_CAPTION_VAL_PROMPTS)
    log.info("model.val_prompts=null: %d caption(s) of the %s split as validation prompts: %s",
             len(prompts), split, prompts)
    model.val_prompts = list(prompts)
    if isinstance(model.model_config, dict):
        model.model_config["val_prompts"] = list(prompts)
    with open_dict(cfg):
        cfg.model.val_prompts = list(prompts)


def stable_wandb_id(cfg: DictConfig, output_dir: str) -> None:
    """Give the W&B logger an id stored in the run folder, so a resumed run appends to it.

    Every SLURM task of a multi-GPU job runs this at once: the first to create the id file wins
    (an exclusive hard link is atomic) and the others read its id."""
    wandb_cfg = cfg.get("logger", {}).get("wandb") if cfg.get("logger") else None
    if wandb_cfg is None or wandb_cfg.get("id"):
        return
    id_file = os.path.join(output_dir, "wandb_id.txt")
    if not os.path.isfile(id_file):
        os.makedirs(output_dir, exist_ok=True)
        candidate = f"{id_file}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
        with open(candidate, "w") as handle:
            handle.write(uuid.uuid4().hex[:12])
        try:
            os.link(candidate, id_file)
        except FileExistsError:
            pass  # another task of this job created it first
        except OSError:  # a file system without hard links: last writer wins, still one id after
            if not os.path.isfile(id_file):
                os.replace(candidate, id_file)
        finally:
            if os.path.exists(candidate):
                os.remove(candidate)
    with open(id_file) as handle:
        run_id = handle.read().strip()
    with open_dict(cfg):
        cfg.logger.wandb.id = run_id
        cfg.logger.wandb.resume = "allow"


def check_wandb_config(cfg: DictConfig) -> None:
    """Fail before training on W&B settings that cannot work (offline uploads, online without a key)."""
    wandb_cfg = cfg.get("logger", {}).get("wandb") if cfg.get("logger") else None
    if wandb_cfg is None:
        return
    offline = bool(wandb_cfg.get("offline", False))
    if offline and wandb_cfg.get("log_model"):
        raise ConfigError("logger.wandb.log_model needs an online run (checkpoints are uploaded as artifacts): "
                          "set logger.wandb.offline=false with WANDB_API_KEY, or log_model=false")
    if not offline and os.environ.get("WANDB_MODE", "").lower() not in ("offline", "dryrun", "disabled"):
        import netrc

        try:
            logged_in = (netrc.netrc().authenticators("api.wandb.ai") is not None)
        except (OSError, netrc.NetrcParseError):
            logged_in = False
        if not os.environ.get("WANDB_API_KEY") and not logged_in:
            raise ConfigError("logger.wandb.offline=false needs WANDB_API_KEY (or `wandb login`); "
                              "leave offline=true to log locally and `wandb sync` later")


def open_dict(cfg: DictConfig):
    from omegaconf import open_dict as _open_dict

    return _open_dict(cfg)


def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def preemption_callback(callbacks: list[Any], output_dir: str) -> Any:
    """The run's PreemptionCheckpoint: the configured one, or one saving next to ModelCheckpoint's files."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lumiere.training.preemption import PreemptionCheckpoint

    for callback in callbacks:
        if isinstance(callback, PreemptionCheckpoint):
            return callback
    dirpath = next((c.dirpath for c in callbacks if isinstance(c, ModelCheckpoint) and c.dirpath),
                   os.path.join(output_dir, "checkpoints"))
    callback = PreemptionCheckpoint(dirpath=dirpath)
    callbacks.append(callback)
    return callback


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit the configured stage; export its components if `export_dir` is set.

    Cluster wiring (docs/cluster.md): the trainer is built before the data so that
    `global_batch_size` can set the per-device batch from its device count; a PreemptionCheckpoint
    saves `last.ckpt` on SIGUSR1/SIGTERM; on SLURM, Lightning's own requeue handler is off.

    Before any file of ours is written the training shards are resolved (before the model is built:
    a missing data.root is one line in seconds), the model is built, its clip lengths checked and the resume
    checkpoint chosen (`ckpt_path=auto`: the newest readable one; an error when none is readable).

    Rank 0 holds the run folder's lock (`run.lock`) from before the first file of ours is written
    to the end of the export: a second run with the same run_name stops in one line."""
    import lightning.pytorch as pl

    from lumiere.training.run_lock import RunLock
    from lumiere.utils import set_cpu_threads

    set_cpu_threads(cfg.get("cpu_threads"))
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = cfg.paths.output_dir
    check_wandb_config(cfg)
    lock = RunLock(output_dir).acquire() if is_global_rank_zero() else None
    try:
        return _train_locked(cfg, output_dir)
    finally:
        if lock is not None:
            lock.release()


def _train_locked(cfg: DictConfig, output_dir: str) -> dict[str, float]:
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lumiere.training import distributed
    from lumiere.training.checkpoint_io import resolve_resume_checkpoint
    from lumiere.training.preemption import PreemptionExit
    from lumiere.utils import instantiate_config

    # The shards, then the model: a clip length it cannot take is refused before any file is written.
    check_training_shards(cfg)
    caption_val_prompts = wants_caption_val_prompts(cfg)
    if caption_val_prompts:  # filled from the data's captions once the data module exists
        with open_dict(cfg):
            cfg.model.val_prompts = []
    model = instantiate_config(cfg.model, _convert_="partial")
    model.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    draw_stills_for_image_stage(cfg, model)
    check_frame_counts(cfg, model)
    # A resume onto other frozen weights (a re-exported T2I) is refused unless the user allows it.
    model.allow_frozen_mismatch = bool(cfg.get("allow_frozen_mismatch", False))
    ckpt_path = cfg.get("ckpt_path")
    resume_from = resolve_resume_checkpoint(ckpt_path, output_dir)  # `auto` logs what it chose
    if ckpt_path != "auto" and resume_from:
        log.info("resuming from %s", resume_from)
    elif ckpt_path != "auto":
        log.info("ckpt_path=%s: starting a fresh run", ckpt_path)
    stable_wandb_id(cfg, output_dir)

    callbacks = instantiate_collection(cfg.get("callbacks"))
    preemption = preemption_callback(callbacks, output_dir)
    loggers = instantiate_collection(cfg.get("logger"))
    trainer: pl.Trainer = instantiate_config(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                             plugins=trainer_plugins(cfg.trainer))
    distributed.check_launch(trainer.strategy, multirun=is_multirun())
    if cfg.get("global_batch_size"):
        per_device = distributed.per_device_batch_size(
            cfg.global_batch_size, devices=trainer.num_devices, num_nodes=trainer.num_nodes,
            accumulate_grad_batches=trainer.accumulate_grad_batches)
        log.info("global batch %d = %d per device x %d devices x %d nodes x %d accumulated", cfg.global_batch_size,
                 per_device, trainer.num_devices, trainer.num_nodes, trainer.accumulate_grad_batches)
        with open_dict(cfg):
            cfg.data.batch_size = per_device

    datamodule = instantiate_config(cfg.data)
    if caption_val_prompts:
        fill_val_prompts_from_captions(cfg, model, datamodule)
    distributed.check_model_for_strategy(trainer.strategy, model)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    if cfg.get("train", True):
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
        except SIGTERMException as stop:  # Lightning stopped for SIGTERM outside our step check
            if preemption.saved_checkpoint is None:
                raise
            raise PreemptionExit(preemption.exit_signal(), preemption.saved_checkpoint) from stop
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()
               if torch.is_tensor(value) and value.numel() == 1}
    if cfg.get("export_dir"):
        from lumiere.training import distributed

        # under FSDP every rank takes part in gathering the (EMA) weights that rank 0 writes
        with distributed.gathered_weights(trainer.strategy.model, model.ema):
            if trainer.is_global_zero:
                model.export_pretrained(cfg.export_dir)
                log.info("exported components to %s", cfg.export_dir)
    log.info("metrics: %s", metrics)
    return metrics
