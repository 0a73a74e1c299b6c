"""The shared LightningModule of every Lumiere stage: diffusion loss, EMA, optimizer, sampling.

A stage (T2I, STUNet base, SSR, conditional) subclasses `DiffusionModule` and says three things:
which tensors are the clean sample and the extra model inputs (`prepare_batch`), how the
network is called on a noisy video (`network_forward`), and which prompts/frames to sample for
validation. Sampling itself lives in `lumiere.diffusion`; this module only wires it up.

Checkpoints hold the trainable weights only (frozen T2I weights are rebuilt from the path the
stage was configured with), the EMA, and the resolved model config, so that
`load_module_from_checkpoint(path)` can rebuild a stage without the Hydra run that trained it.

The frozen parts run in `frozen_dtype` (bf16 under a bf16 trainer precision on a GPU, else fp32;
`cast_frozen_parts`), the trainable ones keep fp32 weights; the network is called under
`frozen_compute_scope` (autocast) so both meet in one compute dtype (the rules live in
`lumiere.training.frozen_dtype`). Their fingerprints, which pin a checkpoint to its frozen parts,
are taken of the weights as loaded, before any cast.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only, rank_zero_warn
from torch import Tensor

from lumiere.diffusion import DiffusionObjective, build_scheduler, sample
from lumiere.errors import ConfigError, InputFileError
from lumiere.training.ema import ExponentialMovingAverage
from lumiere.training.frozen_dtype import auto_frozen_dtype, cast_frozen_weights, frozen_autocast, parse_frozen_dtype

log = logging.getLogger("lumiere")

CHECKPOINT_KEY = "lumiere"
DATA_FPS_KEY = "data_fps"  # the real training clip rates: {"most_common": fps, "counts": {"16.0": n}} (generate.py)
# The frozen parts a checkpoint is pinned to: its trainable weights only make sense on top of these.
FROZEN_PARTS = ("text_encoder", "network.unet")
VOCABULARY_CHECK_CAPTIONS = 256  # training captions the tokenizer is checked on before the first step


def tensor_fingerprint(named_tensors) -> str:
    """A content fingerprint of named tensors: names, shapes, dtypes and up to 4096 evenly spaced values
    of each (a re-trained or re-exported network differs in nearly every weight), in milliseconds
    even for a T5-XXL."""
    digest = hashlib.sha256()
    for name, tensor in named_tensors:
        flat = tensor.detach().reshape(-1)
        values = flat[:: max(1, flat.numel() // 4096)][:4096].to("cpu", torch.float32)
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:16]


@rank_zero_only
def warn_line(message: str) -> None:
    """One warning line in the run's log (rank zero only)."""
    log.warning(message)


def configured_sample_size(resolution: int | None, unet, key: str) -> int:
    """The frame size a stage trains and samples at: the experiment's ``resolution``. The U-Net's own
    ``sample_size`` (IF-I: 64) is only the size it was trained at; a difference is said once, never
    silently followed. ``resolution=None`` (configs written before this key) means the U-Net's size."""
    native = int(unet.config.sample_size)
    if resolution is None:
        return native
    size = int(resolution)
    if size < 1:
        raise ConfigError(f"{key} must be a positive frame size, got {resolution}")
    if size != native:
        warn_line(f"{key}={size} differs from the pre-trained U-Net's sample_size={native}: training and sampling "
                  f"run at {size}x{size}")
    return size


def stable_seed(*parts: object) -> int:
    """A seed from strings/ints that is the same in every process (unlike Python's `hash`)."""
    digest = hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def warmup_cosine_lambda(warmup_steps: int, total_steps: int | None, schedule: str) -> Callable[[int], float]:
    """LR multiplier: linear warm-up, then constant or cosine decay to 10% at `total_steps`."""
    if schedule not in ("constant", "cosine"):
        raise ConfigError(f"lr_schedule must be 'constant' or 'cosine', got {schedule!r}")

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant" or not total_steps or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


class DiffusionModule(pl.LightningModule):
    """Base of the stage modules. Subclasses set `self.network` and `self.text_encoder`."""

    def __init__(
        self,
        *,
        objective: DiffusionObjective,
        optimizer: Callable[..., torch.optim.Optimizer],
        sampler: dict | None = None,
        lr_warmup_steps: int = 0,
        lr_schedule: str = "constant",
        ema_decay: float | None = 0.999,
        caption_dropout: float = 0.1,
        val_prompts: Sequence[str] = (),
        val_num_frames: int = 16,
        val_seed: int = 0,
        noise_seed: int = 0,
        # dtype of the frozen U-Net and text encoder: "auto" (or null) is bf16 under a bf16 trainer
        # precision on an accelerator, else fp32; or fp32 / bf16 / fp16. Trainable weights stay fp32.
        frozen_dtype: str | None = "auto",
        # Not in the paper, a training-cost measure: precomputed caption states (python -m
        # lumiere.training.text_cache) read instead of loading the frozen text encoder at all.
        text_cache: str | None = None,
        text_cache_missing: str = "error",  # a caption not in the cache: "error", or "encode" it with the encoder
    ) -> None:
        super().__init__()
        self.objective = objective
        self.optimizer_factory = optimizer
        self.sampler_config = {"scheduler": "ddim", "num_inference_steps": 25, "guidance_scale": 5.0,
                               **(sampler or {})}
        self.lr_warmup_steps = lr_warmup_steps
        self.lr_schedule = lr_schedule
        self.ema_decay = ema_decay
        self.caption_dropout = caption_dropout
        self.val_prompts = list(val_prompts)
        self.val_num_frames = val_num_frames
        self.val_seed = val_seed
        self.noise_seed = noise_seed
        self.ema: ExponentialMovingAverage | None = None
        # Set by the train task: the resolved model config, stored in checkpoints to rebuild the stage.
        self.model_config: dict | None = None
        # Frozen weights are not in our checkpoints; Lightning must not demand them on load.
        self.strict_loading = False
        # Loading a checkpoint on top of other frozen weights than it was trained on is an error unless
        # the user allows it (set by the loader or the task, never read from a file).
        self.allow_frozen_mismatch = False
        self._frozen_fingerprints: dict[str, str] | None = None
        self.frozen_dtype_setting = parse_frozen_dtype(frozen_dtype)
        self.frozen_dtype = torch.float32  # what frozen_compute_scope runs the frozen parts in
        # The pre-trained U-Net's scheduler/scheduler_config.json (a pipeline folder's); None without one.
        # Sampling takes the folder's settings unless the experiment sets them (build_scheduler).
        self.scheduler_config: dict | None = None
        self.text_cache, self.text_cache_missing = text_cache, text_cache_missing  # read by the stages' text encoder
        # Training clips per real frame rate (batch["fps"], rounded to 1e-3), kept across resumes.
        self.data_fps_counts: Counter[float] = Counter()

    # ------------------------------------------------------------------ stage hooks
    def prepare_batch(self, batch: dict, generators: Sequence[torch.Generator]) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the clean sample x0 (B,C,T,H,W) and extra (non-text) model inputs.

        Any randomness a stage needs here (masks, noise augmentation) is drawn from `generators`,
        one per sample (see `sample_generators`)."""
        return batch["video"], {}

    def network_forward(self, x_t: Tensor, t: Tensor, cond: dict[str, Tensor]) -> Tensor:
        raise TypeError(f"{type(self).__name__} must define network_forward (how its network sees a noisy video)")

    def sample_shape(self, batch_size: int, num_frames: int) -> tuple[int, ...]:
        size = self.sample_size
        return (batch_size, 3, num_frames, size, size)

    @property
    def sample_size(self) -> int:
        raise TypeError(f"{type(self).__name__} must define sample_size (its output resolution)")

    def check_num_frames(self, num_frames: int) -> None:
        """Raise ConfigError for a frame count the network cannot take (before any compute)."""

    def on_fit_start(self) -> None:
        conditioning = getattr(self.network, "temporal_conditioning", None)
        if conditioning is not None:  # the CPU demo's extension may fit itself on the training captions
            conditioning.prepare(getattr(self.trainer, "datamodule", None), self.text_encoder)

    # ------------------------------------------------------------------ text
    def encode_text(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        hidden, mask = self.text_encoder(list(prompts))
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}

    # ------------------------------------------------------------------ parameters and EMA
    def frozen_modules(self) -> list[torch.nn.Module]:
        """Pretrained parts that never train; they stay in eval mode (no dropout) during fit."""
        return []

    def train(self, mode: bool = True):
        super().train(mode)
        for module in self.frozen_modules():
            module.eval()
        return self

    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def setup(self, stage: str) -> None:
        self.frozen_fingerprints()  # before any strategy wraps or shards the frozen parts, and before any cast
        trainer = self.attached_trainer()
        strategy = getattr(trainer, "strategy", None)
        device_type = strategy.root_device.type if strategy is not None else None
        self.cast_frozen_parts(self.frozen_dtype_setting or auto_frozen_dtype(getattr(trainer, "precision", None),
                                                                              device_type))
        datamodule = getattr(trainer, "datamodule", None)
        if stage == "fit" and hasattr(datamodule, "train_captions") and hasattr(self.text_encoder, "check_vocabulary"):
            self.text_encoder.check_vocabulary(datamodule.train_captions(limit=VOCABULARY_CHECK_CAPTIONS),
                                               "the training captions")
        if self.text_cache is not None:  # the stage reads it, and it holds the validation and training captions
            from lumiere.training.text_cache import check_text_cache_in_use

            check_text_cache_in_use(self)
        if self.ema is None and self.ema_decay:
            self.ema = ExponentialMovingAverage(self.trainable_named_parameters(), self.ema_decay)

    def attached_trainer(self):
        """The trainer running this module, or None (``setup`` called by hand, e.g. to build the EMA)."""
        try:
            return self.trainer
        except RuntimeError:  # Lightning: "... is not attached to a `Trainer`"
            return None

    def cast_frozen_parts(self, dtype: torch.dtype) -> None:
        """Cast the frozen weights of ``frozen_modules()`` to ``dtype`` (normalisation layers: float32).

        Trainable weights (the temporal blocks, any trainable U-Net part) keep their float32 master
        copies. The frozen-part fingerprints are taken first, of the weights as loaded, so that a
        checkpoint written under one frozen_dtype loads under another."""
        self.frozen_fingerprints()
        cast_frozen_weights(self.frozen_modules(), dtype)
        self.frozen_dtype = dtype

    def frozen_compute_scope(self):
        """Context for calls of the network: autocast to ``frozen_dtype`` when the frozen parts are in a
        lower precision and no autocast is active yet (Lightning's bf16-mixed already opens one), so
        that float32 temporal layers and bf16 frozen layers meet in one compute dtype."""
        return frozen_autocast(self.frozen_dtype, self.device.type)

    def ema_scope(self):
        """Context in which the module runs with its EMA weights (a no-op without EMA)."""
        return self.ema.swapped_in() if self.ema is not None else nullcontext()

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # The EMA follows every optimizer step (not every batch: gradient accumulation), and is
        # updated here rather than in on_train_batch_end, which runs after the checkpoint
        # callbacks: a step-N checkpoint must hold the step-N EMA for a resume to be exact.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()

    # ------------------------------------------------------------------ training
    def sample_generators(self, batch: dict, step: int) -> list[torch.Generator]:
        """One generator per sample, seeded by (seed, step, sample key).

        The noise, timestep and caption dropout of a sample then depend on the sample alone, not
        on which rank or which position in a batch it lands in: a 2-process DDP run computes
        exactly the losses of a 1-process run with the same global batch, and a resumed run
        redraws exactly what the interrupted one drew.
        """
        keys = batch.get("key") or [str(index) for index in range(len(batch["caption"]))]
        return [torch.Generator().manual_seed(stable_seed(self.noise_seed, step, key)) for key in keys]

    def diffusion_loss(self, batch: dict, generators: Sequence[torch.Generator],
                       caption_dropout: float = 0.0) -> Tensor:
        x0, extra = self.prepare_batch(batch, generators)
        noise = torch.stack([self.objective.draw_noise(x0.shape[1:], generator=g) for g in generators]).to(x0)
        timesteps = torch.cat([self.objective.sample_timesteps(1, generator=g) for g in generators]).to(x0.device)
        captions = [("" if caption_dropout > 0 and float(torch.rand((), generator=g)) < caption_dropout else c)
                    for c, g in zip(batch["caption"], generators)]
        cond = {**self.encode_text(captions), **extra}
        with self.frozen_compute_scope():
            loss, _ = self.objective.loss(self.network_forward, x0, cond, timesteps=timesteps, noise=noise)
        return loss.float()

    def count_data_fps(self, batch: dict) -> None:
        """Count each clip's real frame rate (source fps / stride, from the loader). A rate of 0 (a
        container and shard that name none) says nothing and is not counted. Under DDP each rank
        counts its own clips and rank zero's counts are saved: the same rates, a share of the clips."""
        for fps in batch.get("fps", ()):
            rate = round(float(fps), 3)
            if rate > 0:
                self.data_fps_counts[rate] += 1

    def data_fps_record(self) -> dict | None:
        """The ``checkpoint["data_fps"]`` entry: the most common training frame rate and all counts; None before any."""
        if not self.data_fps_counts:
            return None
        most_common = self.data_fps_counts.most_common(1)[0][0]
        return {"most_common": most_common, "counts": {str(rate): count for rate, count in self.data_fps_counts.items()}}

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        self.count_data_fps(batch)
        generators = self.sample_generators(batch, self.global_step)
        loss = self.diffusion_loss(batch, generators, caption_dropout=self.caption_dropout)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["caption"]))
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> Tensor:
        # Noise and timesteps fixed per sample (step -1): validation loss is comparable across steps.
        with self.ema_scope():
            loss = self.diffusion_loss(batch, self.sample_generators(batch, step=-1))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=len(batch["caption"]))
        return loss

    def configure_optimizers(self):
        params = [p for _, p in self.trainable_named_parameters()]
        if not params:
            raise ConfigError("this stage has no trainable parameters")
        optimizer = self.optimizer_factory(params)
        total = self.trainer.max_steps if self.trainer and self.trainer.max_steps > 0 else None
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, warmup_cosine_lambda(self.lr_warmup_steps, total, self.lr_schedule))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ sampling
    def make_scheduler(self, name: str | None = None):
        return build_scheduler(
            name or self.sampler_config["scheduler"],
            scheduler_config=self.scheduler_config,
            num_train_timesteps=self.objective.num_train_timesteps,
            beta_schedule=self.objective.beta_schedule,
            prediction_type=self.objective.prediction_type,
        )

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        num_frames: int | None = None,
        seed: int = 0,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        scheduler: str | None = None,
        extra_cond: dict[str, Tensor] | None = None,
        progress: bool = True,
    ) -> Tensor:
        """Text-to-video sampling of the whole clip at once; returns (B, 3, T, H, W) in [-1, 1]."""
        prompts = list(prompts)
        if not prompts:
            raise ConfigError("no prompts to sample")
        num_frames = num_frames or self.val_num_frames
        self.check_num_frames(num_frames)
        generator = torch.Generator().manual_seed(seed)
        noise = self.objective.draw_noise(self.sample_shape(len(prompts), num_frames), generator=generator).to(self.device)
        cond = {**self.encode_text(prompts), **(extra_cond or {})}
        uncond = {**self.encode_text([""] * len(prompts)), **(extra_cond or {})}
        with self.frozen_compute_scope():
            videos = sample(
                self.network_forward, noise, self.make_scheduler(scheduler),
                num_inference_steps=num_inference_steps or self.sampler_config["num_inference_steps"],
                cond=cond, uncond=uncond,
                guidance_scale=self.sampler_config["guidance_scale"] if guidance_scale is None else guidance_scale,
                generator=generator, progress=progress,
            )
        return videos.float()

    @torch.no_grad()
    def validation_samples(self) -> tuple[Tensor, list[str]] | None:
        """Videos for the sample logger, drawn with the EMA weights and a fixed seed."""
        if not self.val_prompts:
            return None
        with self.ema_scope():
            videos = self.generate(self.val_prompts, num_frames=self.val_num_frames, seed=self.val_seed,
                                   progress=False)
        return videos, self.val_prompts

    # ------------------------------------------------------------------ checkpoints
    def frozen_parameter_names(self) -> set[str]:
        # Every alias: tied weights (T5's shared embedding) appear in the state dict under several names.
        return {n for n, p in self.named_parameters(remove_duplicate=False) if not p.requires_grad}

    def frozen_fingerprints(self) -> dict[str, str]:
        """{part: fingerprint} of the frozen text encoder and U-Net (those of FROZEN_PARTS that are frozen)."""
        if self._frozen_fingerprints is None:
            frozen = self.frozen_parameter_names()
            parameters = dict(self.named_parameters(remove_duplicate=False))
            self._frozen_fingerprints = {}
            for part in FROZEN_PARTS:
                names = sorted(n for n in frozen if n.startswith(part + "."))
                if names:
                    self._frozen_fingerprints[part] = tensor_fingerprint((n, parameters[n]) for n in names)
            made_with = getattr(getattr(self, "text_encoder", None), "encoder_fingerprint", None)
            if made_with is not None:  # a text cache stands in for the encoder: the one it was made with
                self._frozen_fingerprints["text_encoder"] = made_with
        return self._frozen_fingerprints

    def _check_frozen_fingerprints(self, stored: dict[str, str]) -> None:
        current = self.frozen_fingerprints()
        for part, fingerprint in stored.items():
            if part in current and current[part] != fingerprint:
                where = {"text_encoder": "text_encoder_path", "network.unet": "unet_path"}.get(part, part)
                changed = (f"model.text_cache={self.text_cache} was made with another text encoder"
                           if part == "text_encoder" and getattr(self, "text_cache", None) is not None
                           else f"the weights at {where} changed since")
                message = (f"this checkpoint was trained on another frozen {part} (fingerprint {fingerprint}, "
                           f"now {current[part]}): {changed}")
                if not self.allow_frozen_mismatch:
                    raise InputFileError(message + "; pass allow_frozen_mismatch=true to load it anyway")
                rank_zero_warn(message + " (loaded anyway: allow_frozen_mismatch=true)")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        frozen = self.frozen_parameter_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in frozen}
        checkpoint[CHECKPOINT_KEY] = {"model_config": self.model_config, "frozen_fingerprints": self.frozen_fingerprints()}
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()
        record = self.data_fps_record()
        if record is not None:
            checkpoint[DATA_FPS_KEY] = record

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._check_frozen_fingerprints((checkpoint.get(CHECKPOINT_KEY) or {}).get("frozen_fingerprints") or {})
        trainable = {n for n, _ in self.trainable_named_parameters()}
        missing = trainable - set(checkpoint["state_dict"])
        if missing:
            raise InputFileError(
                f"checkpoint lacks {len(missing)} trainable weights of this stage (e.g. {sorted(missing)[0]}); "
                "was it written by another stage or config?")
        if self.ema is None and self.ema_decay:
            self.ema = ExponentialMovingAverage(self.trainable_named_parameters(), self.ema_decay)
        if self.ema is not None and "ema" in checkpoint:
            self.ema.load_state_dict(checkpoint["ema"])
        counts = (checkpoint.get(DATA_FPS_KEY) or {}).get("counts") or {}
        self.data_fps_counts = Counter({float(rate): int(count) for rate, count in counts.items()})  # a resume keeps counting


def read_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict:
    """Read one of our checkpoints as tensors and plain values (no pickled objects), with its stored
    model config checked before anything is built from it (``stored_config``)."""
    import os

    from lumiere.training.stored_config import check_stored_model_config

    if not os.path.isfile(path):
        raise InputFileError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a truncated or foreign file, or one that holds pickled objects
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            reason = "it holds pickled Python objects, which are never loaded"
        raise InputFileError(f"cannot read checkpoint {path}: {reason[:200]}") from None
    meta = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    if not isinstance(meta, dict) or not meta.get("model_config"):
        raise InputFileError(f"{path} is not a Lumiere stage checkpoint (no model config inside)")
    check_stored_model_config(meta["model_config"], path)
    return checkpoint


def checkpoint_stage(checkpoint: dict) -> str:
    """The stage class name a checkpoint was written by, e.g. "TextToVideoModule"."""
    return str(checkpoint[CHECKPOINT_KEY]["model_config"]["_target_"]).rsplit(".", 1)[-1]


def load_module_from_checkpoint(path: str, *, use_ema: bool = True, map_location: str | torch.device = "cpu",
                                expected: Sequence[str] | str | None = None,
                                allow_frozen_mismatch: bool = False) -> DiffusionModule:
    """Rebuild a stage from one of our checkpoints (frozen parts from their configured paths).

    ``expected``: the stage class name(s) the caller can use (e.g. "TextToVideoModule"); a
    checkpoint of another stage is refused, naming both, before anything is built. A checkpoint
    trained on other frozen T2I / text-encoder weights than its configured paths now hold is refused
    unless ``allow_frozen_mismatch``."""
    from lumiere.utils import instantiate_config

    checkpoint = read_checkpoint(path, map_location)
    meta = checkpoint[CHECKPOINT_KEY]
    stage = checkpoint_stage(checkpoint)
    if expected is not None:
        wanted = (expected,) if isinstance(expected, str) else tuple(expected)
        if stage not in wanted:
            raise InputFileError(f"{path} is a {stage} checkpoint; expected a {' or '.join(wanted)} checkpoint here")
    config = meta["model_config"]
    if config.get("text_cache") is not None:  # the cache holds the training captions only: sampling encodes any prompt
        config = {**config, "text_cache": None}
    module: DiffusionModule = instantiate_config(config, _convert_="partial")
    module.model_config = meta["model_config"]
    module.allow_frozen_mismatch = allow_frozen_mismatch
    try:
        module.on_load_checkpoint(checkpoint)
    except InputFileError as error:
        raise InputFileError(f"{path}: {error}") from None
    module.load_state_dict(checkpoint["state_dict"], strict=False)
    if use_ema and module.ema is not None:
        module.ema.copy_to_model()
    # No trainer here: an explicit frozen_dtype applies, "auto" means float32.
    module.cast_frozen_parts(module.frozen_dtype_setting or torch.float32)
    module.eval()
    return module
