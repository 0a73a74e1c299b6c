"""Training one Lumiere stage on many devices: global batch, FSDP wrap units, DDP inside a sweep.

Sec. 5 trains the base STUNet on 30M captioned clips of 80 frames; at that scale a stage runs
data-parallel over many accelerators and nodes. Lightning does the parallelism; this module
holds the decisions that are ours (docs/cluster.md tells the user-facing side):

* Global-batch semantics. A recipe names the samples per optimizer step (`global_batch_size`);
  the per-device batch is derived from it, so moving a run from 8 to 64 GPUs (or adding gradient
  accumulation) keeps the optimisation unchanged instead of silently changing the batch.
* FSDP wrap units. The modules Sec. 3.1 / Fig. 4 adds to the frozen T2I U-Net (factorized
  space-time convolutions, temporal attention, temporal down- and up-sampling) are the units FSDP
  shards and the units activation checkpointing recomputes. Each is trainable through and
  through, so no wrap unit mixes trainable and frozen weights; the frozen T2I U-Net and text
  encoder stay in the root unit (see `fsdp_strategy` for why `use_orig_params=True` anyway).
* FSDP keeps the EMA: each rank averages its own shard of the weights, and the EMA is saved the
  way the weights are ("full" or "sharded"); `gathered_weights` gathers them for an export.
* The SLURM environment with Lightning's own requeue handler switched off: requeueing has one
  owner, `lumiere.training.preemption.PreemptionCheckpoint`.
* A guard against the one launch that cannot work: a Hydra multirun job that asks Lightning to
  start its DDP processes by re-running the command line (each process would re-run the sweep).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from lightning.pytorch.plugins.precision import FSDPPrecision
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn

from lumiere.errors import ConfigError

# The temporal blocks of the STUNet (Sec. 3.1, Fig. 4): the FSDP wrap units and the
# activation-checkpointing units. Import paths, so configs can name them too.
TEMPORAL_BLOCKS: tuple[str, ...] = (
    "lumiere.models.temporal.FactorizedSpaceTimeConvBlock",  # (2+1)D conv block, Fig. 4b
    "lumiere.models.temporal.TemporalAttentionBlock",  # temporal attention, Fig. 4c
    "lumiere.models.temporal.TemporalDownsample",  # 1D conv + stride, App. B
    "lumiere.models.temporal.TemporalUpsample",  # frame duplication + 1D conv, App. B
)


# ---------------------------------------------------------------------------- global batch
def per_device_batch_size(global_batch_size: int, *, devices: int, num_nodes: int = 1,
                          accumulate_grad_batches: int = 1) -> int:
    """Samples per device and micro-batch so that one optimizer step sees `global_batch_size` samples.

    global = per_device * devices * num_nodes * accumulate_grad_batches; a global batch that does
    not divide raises ConfigError rather than rounding (rounding would change the recipe)."""
    global_batch_size = int(global_batch_size)
    if global_batch_size < 1:
        raise ConfigError(f"global_batch_size must be a positive number of samples, got {global_batch_size}")
    if devices < 1 or num_nodes < 1 or accumulate_grad_batches < 1:
        raise ConfigError(f"need devices, num_nodes and accumulate_grad_batches >= 1, "
                          f"got {devices}, {num_nodes}, {accumulate_grad_batches}")
    micro_batches = devices * num_nodes * accumulate_grad_batches
    if global_batch_size % micro_batches:
        raise ConfigError(
            f"global_batch_size={global_batch_size} does not divide over devices x num_nodes x "
            f"accumulate_grad_batches = {devices} x {num_nodes} x {accumulate_grad_batches} = {micro_batches}; "
            f"choose a multiple of {micro_batches}")
    return global_batch_size // micro_batches


# ---------------------------------------------------------------------------- FSDP
def resolve_module_classes(classes: Iterable[str | type]) -> set[type[nn.Module]]:
    """`"package.module.Class"` strings (or classes) -> the nn.Module classes they name."""
    resolved: set[type[nn.Module]] = set()
    for entry in classes:
        cls = entry
        if isinstance(entry, str):
            module_name, _, class_name = entry.rpartition(".")
            try:
                cls = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError, ValueError):
                raise ConfigError(f"cannot import the module class {entry!r} named for FSDP wrapping") from None
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ConfigError(f"{entry!r} is not a torch.nn.Module class")
        resolved.add(cls)
    if not resolved:
        raise ConfigError("name at least one module class to wrap")
    return resolved


# Where a sharded checkpoint keeps the EMA: beside the model's tensors in the distributed-checkpoint
# folder (`checkpoint["ema"]["shadow"]` in the metadata file names this place instead of the tensors).
EMA_SHARDED_PREFIX = "_lumiere_ema."
EMA_IN_SHARDED_FOLDER = "in the sharded checkpoint folder"


class ShardedNormClippingPrecision(FSDPPrecision):
    """Lightning's FSDP precision plugin with gradient-norm clipping (`trainer.gradient_clip_val`).

    Lightning refuses norm clipping under FSDP because the plugin has no handle on the root FSDP
    module, whose `clip_grad_norm_` computes the norm over all ranks' gradient shards (the norm of
    one rank's shard, which `torch.nn.utils.clip_grad_norm_` would take, is not the gradient's);
    the strategy gives it that handle after wrapping."""

    root_module: nn.Module | None = None

    def clip_grad_by_norm(self, optimizer: Any, clip_val: float) -> None:
        if self.root_module is None:
            raise RuntimeError("gradient clipping before the FSDP strategy wrapped the model")
        self.root_module.clip_grad_norm_(clip_val)


class TemporalBlockFSDPStrategy(FSDPStrategy):
    """FSDPStrategy that shards the module's EMA with its weights and runs on CPU (gloo) too.

    * gradients reduce in `reduce_dtype` whatever the precision plugin says, and
      `trainer.gradient_clip_val` clips by the norm of the whole (sharded) gradient;
    * after wrapping, the LightningModule's `ema` keeps only this rank's shard of each weight
      (`ExponentialMovingAverage.shard_for_fsdp`), and a "sharded" checkpoint stores it as sharded
      tensors in the checkpoint folder ("full": gathered into `checkpoint["ema"]` on rank 0);
    * on CPU torch FSDP needs `device_id=torch.device("cpu")` (Lightning passes the device index,
      None on CPU, which torch refuses: "FSDP needs a non-CPU accelerator device"), and a full
      state dict gathered without offloading (see `lightning_module_state_dict`).
    """

    def __init__(self, *args: Any, reduce_dtype: torch.dtype | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reduce_dtype = reduce_dtype

    @property
    def mixed_precision_config(self):
        # Lightning's bf16-mixed gathers parameters and reduces gradients in bf16; keep its
        # parameter and buffer dtypes and change only the reduction dtype.
        config = super().mixed_precision_config
        if config is None or self.reduce_dtype is None:
            return config
        return dataclasses.replace(config, reduce_dtype=self.reduce_dtype)

    @property
    def precision_plugin(self) -> FSDPPrecision:
        return super().precision_plugin

    @precision_plugin.setter
    def precision_plugin(self, plugin: Any) -> None:
        if isinstance(plugin, FSDPPrecision) and not isinstance(plugin, ShardedNormClippingPrecision):
            plugin = ShardedNormClippingPrecision(plugin.precision, plugin.scaler)
        FSDPStrategy.precision_plugin.fset(self, plugin)

    def _setup_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.fsdp import FullyShardedDataParallel

        if self.root_device.type == "cpu" and not any(isinstance(m, FullyShardedDataParallel) for m in model.modules()):
            from lightning.fabric.strategies.fsdp import _move_torchmetrics_to_device, _setup_activation_checkpointing

            # Lightning's FSDPStrategy._setup_model with the one argument CPU needs changed.
            model = FullyShardedDataParallel(
                module=model, cpu_offload=self.cpu_offload, mixed_precision=self.mixed_precision_config,
                sharding_strategy=self.sharding_strategy, device_id=self.root_device, **self.kwargs)
            _move_torchmetrics_to_device(model, self.root_device)
            _setup_activation_checkpointing(model, self._activation_checkpointing_kwargs)
        else:
            model = super()._setup_model(model)
        if isinstance(self._precision_plugin, ShardedNormClippingPrecision):
            self._precision_plugin.root_module = model
        ema = getattr(self.lightning_module, "ema", None)
        if ema is not None and not ema.is_sharded:
            ema.shard_for_fsdp(model, self._state_dict_type)
        return model

    def lightning_module_state_dict(self) -> dict[str, Any]:
        if self._state_dict_type != "full" or self.root_device.type != "cpu":
            return super().lightning_module_state_dict()
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        # Lightning gathers with offload_to_cpu=True; with the parameters already on the CPU, torch
        # FSDP's full state dict then clones freed memory (a segmentation fault, torch 2.13 CPU).
        with FSDP.state_dict_type(self.model, StateDictType.FULL_STATE_DICT,
                                  FullStateDictConfig(offload_to_cpu=False, rank0_only=True)):
            return self.model.state_dict()

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        ema = checkpoint.get("ema")
        if self._state_dict_type == "sharded" and isinstance(ema, dict) and isinstance(ema.get("shadow"), dict):
            # The metadata file is written by rank 0 alone; each rank's EMA shards go with the weights.
            checkpoint["state_dict"] = {**checkpoint["state_dict"],
                                        **{EMA_SHARDED_PREFIX + k: v for k, v in ema["shadow"].items()}}
            checkpoint["ema"] = {**ema, "shadow": EMA_IN_SHARDED_FOLDER}
        super().save_checkpoint(checkpoint, filepath, storage_options)

    @staticmethod
    def _saved_weights(path) -> dict[str, Any]:
        """{name: tensor or tensor metadata} of the model weights a full file or sharded folder holds."""
        if path.is_dir():
            from torch.distributed.checkpoint import FileSystemReader

            metadata = FileSystemReader(path).read_metadata().state_dict_metadata
            return {key[len("model."):]: value for key, value in metadata.items()
                    if key.startswith("model.") and not key.startswith("model." + EMA_SHARDED_PREFIX)}
        from lightning.fabric.utilities.load import _lazy_load

        return dict(_lazy_load(path).get("state_dict", {}))

    @contextmanager
    def _template_of_saved_weights(self, saved_weights: dict[str, Any] | None) -> Iterator[None]:
        """Lightning reads a sharded folder into the model's whole sharded state dict; our checkpoints
        hold the trainable weights only (the frozen ones come from the pretrained folder), so during the
        load the template is cut to the names the folder saved."""
        if saved_weights is None:
            yield
            return
        from torch.distributed.fsdp._common_utils import clean_tensor_name

        model = self.model
        whole_state_dict = model.state_dict

        def saved_part(*args: Any, **kwargs: Any) -> dict[str, Any]:
            state = whole_state_dict(*args, **kwargs)
            return {k: v for k, v in state.items() if clean_tensor_name(k) in saved_weights}

        model.state_dict = saved_part
        try:
            yield
        finally:
            del model.state_dict  # the instance attribute; the class's method is back

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict[str, Any]:
        from pathlib import Path

        from lightning.fabric.strategies.fsdp import _distributed_checkpoint_load

        path = Path(self.broadcast(checkpoint_path))
        saved_weights = self._saved_weights(path)
        with self._template_of_saved_weights(saved_weights if path.is_dir() else None):
            checkpoint = super().load_checkpoint(checkpoint_path, weights_only)
        # Lightning loads the weights into the FSDP model and drops them from the dict; put back what the
        # file holds (lazily read tensors, or the folder's tensor metadata) for the module's own checks
        # (`DiffusionModule.on_load_checkpoint` refuses a checkpoint that lacks trainable weights), under
        # the names the wrapped module's parameters now have (with FSDP's and checkpointing's prefixes).
        from torch.distributed.fsdp._common_utils import clean_tensor_name

        wrapped_names = {clean_tensor_name(n): n for n, _ in self.lightning_module.named_parameters()}
        checkpoint.setdefault("state_dict", {wrapped_names.get(k, k): v for k, v in saved_weights.items()})
        ema_state = checkpoint.get("ema")
        if not (isinstance(ema_state, dict) and ema_state.get("shadow") == EMA_IN_SHARDED_FOLDER):
            return checkpoint
        ema = getattr(self.lightning_module, "ema", None)
        if ema is None:  # a run without EMA resumes the weights only
            checkpoint.pop("ema")
            return checkpoint
        # The current EMA in sharded form is the template the folder's shards are read into
        # (any world size: the distributed checkpoint reshards).
        template = {EMA_SHARDED_PREFIX + k: v for k, v in ema.state_dict()["shadow"].items()}
        state = {"model": template}
        _distributed_checkpoint_load(state, path)
        checkpoint["ema"] = {**ema_state, "shadow": {k[len(EMA_SHARDED_PREFIX):]: v for k, v in state["model"].items()}}
        return checkpoint


def fsdp_strategy(
    *,
    wrap_modules: Sequence[str | type] = TEMPORAL_BLOCKS,  # FSDP units: each instance is sharded on its own
    activation_checkpointing: bool = True,  # recompute the same units in backward
    sharding_strategy: str = "FULL_SHARD",  # FULL_SHARD (ZeRO-3) | SHARD_GRAD_OP (ZeRO-2) | HYBRID_SHARD | NO_SHARD
    state_dict_type: str = "full",  # "full": one checkpoint file gathered on rank 0; "sharded": a folder
    use_orig_params: bool = True,  # keep the parameter names and requires_grad flags of the module
    reduce_dtype: str | None = "float32",  # gradient reduction dtype (null: the precision plugin's)
    cpu_offload: bool = False,
    limit_all_gathers: bool = True,  # cap in-flight all-gathers (memory spikes with many small units)
    process_group_backend: str | None = None,  # None: nccl on GPUs
    **kwargs: Any,  # passed on to lightning.pytorch.strategies.FSDPStrategy / torch FSDP
):
    """Lightning's FSDPStrategy with the STUNet's temporal blocks as wrap and checkpointing units.

    Why `use_orig_params=True` with frozen T2I weights: torch FSDP flattens the parameters of a
    unit into one FlatParameter, which must be all trainable or all frozen unless the original
    parameters are kept (`use_orig_params=True`). The temporal-block units are all trainable, but
    the root unit holds the frozen T2I U-Net and text encoder together with whatever else trains
    (the channel-expanded `conv_in` of the conditional stage, Sec. 4.2; the text encoder of the
    stage-0 T2I model); with the original parameters kept, this mix is legal, the optimizer sees
    only the trainable ones, and checkpoints keep their names. The frozen weights are sharded like
    the rest (memory / N) and all-gathered for the forward; they get no gradients, so backward only
    reduces the temporal blocks' gradients.

    Under bf16-mixed, parameters are gathered in bf16 and gradients reduce in `reduce_dtype`
    (float32 by default): only the trainable weights have gradients, so this costs little.
    """
    classes = resolve_module_classes(wrap_modules)
    if state_dict_type not in ("full", "sharded"):
        raise ConfigError(f"state_dict_type must be 'full' or 'sharded', got {state_dict_type!r}")
    dtype = None
    if reduce_dtype is not None:
        dtype = getattr(torch, str(reduce_dtype), None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"reduce_dtype must name a torch dtype such as float32, got {reduce_dtype!r}")
    return TemporalBlockFSDPStrategy(
        auto_wrap_policy=classes,
        activation_checkpointing_policy=classes if activation_checkpointing else None,
        sharding_strategy=sharding_strategy,
        state_dict_type=state_dict_type,
        use_orig_params=use_orig_params,
        reduce_dtype=dtype,
        cpu_offload=cpu_offload,
        limit_all_gathers=limit_all_gathers,
        process_group_backend=process_group_backend,
        **kwargs,
    )


@dataclasses.dataclass
class WrapPlan:
    """Where the parameters of a module land when `classes` are the FSDP units."""

    units: list[str]  # names of the modules that become their own FSDP unit
    trainable_in_root: list[str]  # trainable parameters left to the root unit (mixed with frozen ones)
    frozen_in_units: list[str]  # frozen parameters inside a unit (a unit mixing frozen and trainable)


def fsdp_wrap_plan(module: nn.Module, classes: Iterable[str | type]) -> WrapPlan:
    """Which submodules `classes` makes FSDP units and which parameters stay in the root unit.

    Nested matches would become nested units; a parameter's unit is its outermost one here,
    which is all the frozen/trainable question needs."""
    unit_classes = tuple(resolve_module_classes(classes))
    units: list[str] = []
    for name, sub in module.named_modules():
        if name and isinstance(sub, unit_classes) and not any(name.startswith(u + ".") for u in units):
            units.append(name)
    trainable_in_root, frozen_in_units = [], []
    for name, param in module.named_parameters():
        inside = any(name.startswith(u + ".") for u in units)
        if param.requires_grad and not inside:
            trainable_in_root.append(name)
        elif not param.requires_grad and inside:
            frozen_in_units.append(name)
    return WrapPlan(units, trainable_in_root, frozen_in_units)


def is_sharded_fsdp(strategy: Any) -> bool:
    """True for an FSDP strategy that shards parameters (anything but NO_SHARD)."""
    if not isinstance(strategy, FSDPStrategy):
        return False
    return getattr(strategy.sharding_strategy, "name", str(strategy.sharding_strategy)) != "NO_SHARD"


def check_model_for_strategy(strategy: Any, module: nn.Module) -> None:
    """Refuse, before any compute, a model that the strategy would break at its first step.

    Under sharded FSDP the EMA (`lumiere.training.ema`) follows each original parameter to its
    shard, which needs the original parameters kept (`use_orig_params=True`): without them FSDP
    replaces the parameters by flat ones and the EMA would average tensors no longer trained."""
    if (is_sharded_fsdp(strategy) and getattr(module, "ema_decay", None)
            and not strategy.kwargs.get("use_orig_params", False)):
        raise ConfigError("the EMA under sharded FSDP needs trainer.strategy.use_orig_params=true "
                          "(or model.ema_decay=null for no EMA)")


@contextmanager
def gathered_weights(model: nn.Module, ema: Any | None = None) -> Iterator[None]:
    """On every rank: the EMA weights swapped in and, under FSDP, gathered to full shape on rank 0.

    For exporting from rank 0 after an FSDP fit: every rank must enter (FSDP all-gathers each
    unit), and inside it rank 0's module holds full-shape parameters (offloaded to the CPU), so `export_pretrained`
    writes the same files as after a single-device run. `model` is `trainer.strategy.model`; with
    no FSDP module in it only the EMA is swapped in. The EMA is swapped in first, while the
    parameters are still shards; the export's own EMA swap inside is then a no-op."""
    from torch.distributed.fsdp import FullyShardedDataParallel

    with ema.swapped_in() if ema is not None else nullcontext():
        if isinstance(model, FullyShardedDataParallel):
            # Offloading parameters that are on the CPU already segfaults (as in lightning_module_state_dict).
            offload = getattr(model, "compute_device", torch.device("cpu")).type != "cpu"
            with FullyShardedDataParallel.summon_full_params(model, writeback=False, rank0_only=True,
                                                             offload_to_cpu=offload):
                yield
        else:
            yield


# ---------------------------------------------------------------------------- launching
def slurm_plugins() -> list:
    """Under SLURM: the SLURM cluster environment with Lightning's auto-requeue off.

    Lightning's handler would save a checkpoint inside the SIGUSR1 handler (mid-step, and in DDP
    while other ranks sit in a collective) and requeue; `PreemptionCheckpoint` owns both instead."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def check_launch(strategy: Any, *, multirun: bool) -> None:
    """Refuse DDP processes started by re-running the command line inside a Hydra multirun.

    Lightning's default launcher re-runs `sys.argv` for ranks > 0, with `hydra.run.dir` pinned to
    the parent's run folder. In a multirun `sys.argv` holds `-m` and the sweep: every rank would
    start the whole sweep again, in other folders. SLURM tasks (launcher=submitit_slurm) or
    processes Lightning forks/spawns itself do not have that problem."""
    if not multirun:
        return
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    launcher = getattr(strategy, "launcher", None)
    environment = getattr(strategy, "cluster_environment", None)
    if isinstance(launcher, _SubprocessScriptLauncher) and not (
            environment is not None and environment.creates_processes_externally):
        raise ConfigError(
            "a multirun job cannot let Lightning start DDP processes by re-running the command line "
            "(each would re-run the sweep): use launcher=submitit_slurm (one SLURM task per device) or "
            "trainer.strategy.start_method=spawn")
