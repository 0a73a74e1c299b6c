"""Cluster configuration without training: global batch, FSDP wrap units, launch guards, launcher
and sweeper configs, W&B run identity. (The resumable data stream is tested in test_data_datamodule.)"""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate

from lumiere.errors import ConfigError
from lumiere.training import distributed

from training_helpers import CONFIG_DIR

TEMPORAL_CLASS_NAMES = {"FactorizedSpaceTimeConvBlock", "TemporalAttentionBlock", "TemporalDownsample",
                        "TemporalUpsample"}


def compose_train(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=True)


# ---------------------------------------------------------------------------- global batch
def test_per_device_batch_is_the_global_batch_over_devices_nodes_and_accumulation():
    assert distributed.per_device_batch_size(512, devices=8, num_nodes=4, accumulate_grad_batches=2) == 8
    assert distributed.per_device_batch_size(4, devices=1) == 4
    with pytest.raises(ConfigError, match="choose a multiple of 24"):
        distributed.per_device_batch_size(100, devices=8, num_nodes=3)
    with pytest.raises(ConfigError):
        distributed.per_device_batch_size(0, devices=1)


# ---------------------------------------------------------------------------- FSDP
def test_fsdp_config_wraps_and_checkpoints_exactly_the_temporal_blocks():
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    strategy = instantiate(compose_train(["experiment=tiny_stunet", "trainer=fsdp"]).trainer.strategy)
    assert isinstance(strategy, distributed.TemporalBlockFSDPStrategy)
    policy = strategy.kwargs["auto_wrap_policy"]
    assert isinstance(policy, ModuleWrapPolicy)
    assert {cls.__name__ for cls in policy._module_classes} == TEMPORAL_CLASS_NAMES
    checkpointed = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes
    assert {cls.__name__ for cls in checkpointed} == TEMPORAL_CLASS_NAMES
    assert strategy.kwargs["use_orig_params"] is True and strategy._state_dict_type == "full"
    # Under bf16-mixed: parameters gathered in bf16, gradients reduced in fp32.
    from lightning.pytorch.plugins.precision import FSDPPrecision

    strategy.precision_plugin = FSDPPrecision("bf16-mixed")
    config = strategy.mixed_precision_config
    assert config.param_dtype == torch.bfloat16 and config.reduce_dtype == torch.float32


def test_fsdp_units_hold_all_stunet_trainable_weights_and_no_frozen_ones():
    from lumiere.models import STUNet, build_unet

    stunet = STUNet(build_unet("if_stage1_tiny"), num_temporal_attention_layers=1)
    plan = distributed.fsdp_wrap_plan(stunet, distributed.TEMPORAL_BLOCKS)
    assert {type(stunet.get_submodule(name)).__name__ for name in plan.units} == TEMPORAL_CLASS_NAMES
    assert plan.trainable_in_root == [] and plan.frozen_in_units == []
    # The conditional stage (Sec. 4.2) also trains the frozen U-Net's conv_in: that weight sits in
    # the root unit with the frozen ones, which FSDP only accepts with use_orig_params=True.
    stunet.mark_unet_module_trainable("conv_in")
    plan = distributed.fsdp_wrap_plan(stunet, distributed.TEMPORAL_BLOCKS)
    assert plan.trainable_in_root == ["unet.conv_in.weight", "unet.conv_in.bias"]


def test_bad_wrap_class_names_are_config_errors():
    with pytest.raises(ConfigError, match="cannot import"):
        distributed.resolve_module_classes(["lumiere.models.temporal.NoSuchBlock"])
    with pytest.raises(ConfigError, match="not a torch.nn.Module"):
        distributed.resolve_module_classes(["lumiere.errors.ConfigError"])


# ---------------------------------------------------------------------------- launching
def test_a_multirun_job_cannot_let_lightning_rerun_the_command_line_for_ddp():
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import DDPStrategy

    def trainer(start_method: str) -> pl.Trainer:
        return pl.Trainer(accelerator="cpu", devices=2, logger=False, enable_checkpointing=False,
                          strategy=DDPStrategy(process_group_backend="gloo", start_method=start_method))

    with pytest.raises(ConfigError, match="re-run the sweep"):
        distributed.check_launch(trainer("popen").strategy, multirun=True)
    distributed.check_launch(trainer("popen").strategy, multirun=False)  # a single run: Hydra pins the folder
    distributed.check_launch(trainer("spawn").strategy, multirun=True)


def test_on_slurm_lightning_keeps_the_cluster_environment_but_not_its_requeue_handler(monkeypatch):
    assert distributed.slurm_plugins() == []
    srun_task = {"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_NAME": "stunet", "SLURM_JOB_ID": "77",
                 "SLURM_NODELIST": "gpu[01-02]", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    for name, value in srun_task.items():
        monkeypatch.setenv(name, value)
    (environment,) = distributed.slurm_plugins()
    assert type(environment).__name__ == "SLURMEnvironment" and environment.auto_requeue is False


def test_slurm_launcher_runs_one_task_per_device_and_signals_usr1_for_preemption():
    cfg = compose_train(["experiment=tiny_stunet", "launcher=submitit_slurm", "trainer=ddp", "trainer.devices=8",
                         "trainer.num_nodes=2"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.max_num_timeout == 0  # submitit never resubmits: PreemptionCheckpoint requeues
    assert launcher.additional_parameters.signal == f"USR1@{launcher.signal_delay_s}"
    assert launcher.additional_parameters.requeue is True
    # A trainer config without num_nodes still composes (one node).
    assert compose_train(["experiment=tiny_stunet", "launcher=submitit_slurm"]).hydra.launcher.nodes == 1


def test_optuna_search_is_a_multirun_minimising_the_returned_val_loss():
    cfg = compose_train(["experiment=tiny_stunet", "hparams_search=optuna", "launcher=submitit_local"])
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper") and cfg.hydra.sweeper.direction == "minimize"
    assert cfg.optimized_metric == "val/loss"
    assert "model.optimizer.lr" in cfg.hydra.sweeper.params
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher")


# ---------------------------------------------------------------------------- W&B
def test_a_requeued_run_appends_to_the_same_wandb_run(tmp_path):
    from omegaconf import OmegaConf

    from lumiere.tasks.training import stable_wandb_id

    def wandb_cfg():
        return OmegaConf.create({"logger": {"wandb": {"id": None, "offline": True}}})

    first, second = wandb_cfg(), wandb_cfg()
    stable_wandb_id(first, str(tmp_path))
    stable_wandb_id(second, str(tmp_path))  # the requeued job, same run folder
    assert first.logger.wandb.id and first.logger.wandb.id == second.logger.wandb.id
    assert second.logger.wandb.resume == "allow"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wandb_id.txt"]


def test_wandb_settings_that_cannot_work_fail_before_training(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from lumiere.tasks.training import check_wandb_config

    def cfg(**wandb):
        return OmegaConf.create({"logger": {"wandb": wandb}})

    with pytest.raises(ConfigError, match="log_model needs an online run"):
        check_wandb_config(cfg(offline=True, log_model=True))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.setenv("NETRC", str(tmp_path / ".netrc"))
    with pytest.raises(ConfigError, match="WANDB_API_KEY"):
        check_wandb_config(cfg(offline=False))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    check_wandb_config(cfg(offline=False, log_model=True))
    check_wandb_config(cfg(offline=True))
