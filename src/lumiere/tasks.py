"""The tasks that the Hydra entry points call: train, generate (and evaluate, in `lumiere.evaluation`).

Each task takes the composed config, builds objects with `hydra.utils.instantiate`, and returns
the metrics a sweeper optimises. `run_task` wraps a task so that a user error prints one line,
loggers are always closed, and (in a multirun) one failing job does not stop the others.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import uuid
from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from lumiere.errors import ConfigError, LumiereError

log = logging.getLogger("lumiere")


# ---------------------------------------------------------------------------- wrapper
def run_task(task: Callable[[DictConfig], dict[str, float]], cfg: DictConfig) -> float | None:
    """Run a task; return the value of `cfg.optimized_metric` (for sweepers) if it has one."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = task(cfg)
    except LumiereError as error:
        if multirun:  # one failing job must not stop the sweep: report it and return a bad value
            log.error("job failed: %s", error)
            return math.inf
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception:
        if multirun:
            log.exception("job failed")
            return math.inf
        raise
    finally:
        close_loggers()
    name = cfg.get("optimized_metric")
    if name and name in metrics:
        return float(metrics[name])
    return None


def close_loggers() -> None:
    try:
        import wandb
    except ImportError:  # pragma: no cover
        return
    if wandb.run is not None:
        wandb.finish()


# ---------------------------------------------------------------------------- train
def instantiate_collection(config: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers); skip nulls."""
    from lumiere.utils import instantiate_config

    if not config:
        return []
    return [instantiate_config(entry) for entry in config.values() if entry is not None and "_target_" in entry]


def resolve_resume_path(ckpt_path: str | None, output_dir: str) -> str | None:
    """`auto` resumes from this run folder's last.ckpt when it exists; a path must exist."""
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "auto":
        last = os.path.join(output_dir, "checkpoints", "last.ckpt")
        return last if os.path.isfile(last) else None
    if not os.path.isfile(ckpt_path):
        raise ConfigError(f"ckpt_path does not exist: {ckpt_path}")
    return ckpt_path


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

    Cluster wiring (docs/cluster.md): the trainer is built first so that `global_batch_size`
    can set the per-device batch from its device count; a PreemptionCheckpoint saves `last.ckpt`
    on SIGUSR1/SIGTERM; on SLURM, Lightning's own requeue handler is off."""
    import lightning.pytorch as pl
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lumiere.training import distributed
    from lumiere.training.preemption import PreemptionExit
    from lumiere.utils import instantiate_config, set_cpu_threads

    set_cpu_threads(cfg.get("cpu_threads"))
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = cfg.paths.output_dir
    check_wandb_config(cfg)
    stable_wandb_id(cfg, output_dir)

    callbacks = instantiate_collection(cfg.get("callbacks"))
    preemption = preemption_callback(callbacks, output_dir)
    loggers = instantiate_collection(cfg.get("logger"))
    extra = {} if "plugins" in cfg.trainer else {"plugins": distributed.slurm_plugins()}
    trainer: pl.Trainer = instantiate_config(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)
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
    model = instantiate_config(cfg.model, _convert_="partial")
    model.model_config = OmegaConf.to_container(cfg.model, resolve=True)
    distributed.check_model_for_strategy(trainer.strategy, model)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    resume_from = resolve_resume_path(cfg.get("ckpt_path"), output_dir)
    if resume_from:
        log.info("resuming from %s", resume_from)
    if cfg.get("train", True):
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_from)
        except SIGTERMException as stop:  # Lightning stopped for SIGTERM outside our step check
            if preemption.saved_checkpoint is None:
                raise
            raise PreemptionExit(preemption.exit_signal(), preemption.saved_checkpoint) from stop
    metrics = {name: float(value) for name, value in trainer.callback_metrics.items()
               if torch.is_tensor(value) and value.numel() == 1}
    if cfg.get("export_dir") and trainer.is_global_zero:
        model.export_pretrained(cfg.export_dir)
        log.info("exported components to %s", cfg.export_dir)
    log.info("metrics: %s", metrics)
    return metrics


# ---------------------------------------------------------------------------- generate
def read_prompts(prompts: list[str] | None, prompt_file: str | None) -> list[str]:
    from lumiere.errors import InputFileError

    collected = list(prompts or [])
    if prompt_file:
        if not os.path.isfile(prompt_file):
            raise InputFileError(f"prompt file not found: {prompt_file}")
        with open(prompt_file) as handle:
            lines = [line.strip() for line in handle if line.strip() and not line.startswith("#")]
        if not lines:
            raise InputFileError(f"prompt file is empty: {prompt_file}")
        collected.extend(lines)
    if not collected:
        raise ConfigError("give prompts=[...] or prompt_file=PATH")
    return collected


def generate(cfg: DictConfig) -> dict[str, float]:
    """Sample clips for prompts from a base checkpoint (and an SSR checkpoint: the cascade)."""
    from tqdm.auto import tqdm

    from lumiere.training import load_module_from_checkpoint
    from lumiere.training.callbacks import write_video_set
    from lumiere.training.ssr import SuperResolutionModule
    from lumiere.utils import default_device, set_cpu_threads
    from lumiere.viz import write_gif

    set_cpu_threads(cfg.get("cpu_threads"))
    prompts = read_prompts(cfg.get("prompts"), cfg.get("prompt_file"))
    device = torch.device(cfg.device) if cfg.get("device") else default_device()
    base = load_module_from_checkpoint(cfg.ckpt_path, use_ema=True).to(device)
    ssr = None
    if cfg.get("ssr_ckpt_path"):
        ssr = load_module_from_checkpoint(cfg.ssr_ckpt_path, use_ema=True).to(device)
        if not isinstance(ssr, SuperResolutionModule):
            raise ConfigError(f"ssr_ckpt_path holds a {type(ssr).__name__} checkpoint, not an SSR stage")
        # The SSR upsamples the base clips: fail before sampling if their sizes do not chain.
        ssr.check_low_res_size(base.sample_size)
    os.makedirs(cfg.out_dir, exist_ok=True)
    batch_size = cfg.get("batch_size") or len(prompts)
    written = 0
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        batch_prompts = prompts[start:start + batch_size]
        videos = base.generate(batch_prompts, num_frames=cfg.num_frames, seed=cfg.seed + start,
                               num_inference_steps=cfg.num_inference_steps,
                               guidance_scale=cfg.guidance_scale, scheduler=cfg.get("scheduler"))
        batch_dir = os.path.join(cfg.out_dir, "base")
        write_video_set(os.path.join(batch_dir, f"batch_{start:05d}"), videos.cpu(), batch_prompts, fps=cfg.fps)
        if ssr is not None:
            high = ssr.upsample(videos, batch_prompts, seed=cfg.seed + start, **(cfg.get("ssr") or {}))
            ssr_dir = os.path.join(cfg.out_dir, "ssr", f"batch_{start:05d}")
            write_video_set(ssr_dir, high.cpu(), batch_prompts, fps=cfg.fps)
            # One look at the cascade: each base clip (pixels enlarged) above its SSR output.
            factor = high.shape[-1] // videos.shape[-1]
            enlarged = videos.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
            write_gif(os.path.join(ssr_dir, "cascade.gif"), torch.cat([enlarged, high], dim=-2).cpu(), fps=cfg.fps)
        written += len(batch_prompts)
    log.info("wrote %d clips under %s", written, cfg.out_dir)
    return {"num_videos": float(written)}
