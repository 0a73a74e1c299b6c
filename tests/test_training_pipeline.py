"""End to end through the real configs: T2I stage -> export -> STUNet stage -> checkpoint -> sampling.

One module-scoped run of each stage (a few steps at 16x16) is shared by the tests below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from training_helpers import REPO_ROOT, compose_config, make_tiny_dataset

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    make_tiny_dataset(root / "data")
    return root


def path_overrides(root, stage: str) -> list[str]:
    return [f"paths.data_dir={root / 'data'}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.output_dir={root / stage}", "logger=csv", "trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def t2i_run(workspace):
    from lumiere.tasks import train

    cfg = compose_config("train", ["experiment=tiny_t2i", f"export_dir={workspace / 'artifacts' / 't2i'}",
                                   *path_overrides(workspace, "t2i")], workspace / "t2i")
    metrics = train(cfg)
    return cfg, metrics


@pytest.fixture(scope="module")
def stunet_run(workspace, t2i_run):
    from lumiere.tasks import train

    cfg = compose_config("train", ["experiment=tiny_stunet", *path_overrides(workspace, "stunet")],
                         workspace / "stunet")
    metrics = train(cfg)
    return cfg, metrics


def test_t2i_stage_trains_and_exports_loadable_components(workspace, t2i_run):
    from lumiere.models import FrozenTextEncoder, load_unet

    _, metrics = t2i_run
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert "val/loss" in metrics
    unet = load_unet(workspace / "artifacts" / "t2i" / "unet")
    encoder = FrozenTextEncoder.from_pretrained(workspace / "artifacts" / "t2i" / "text_encoder")
    assert unet.config.sample_size == 16
    hidden, mask = encoder(["a red circle"])
    assert hidden.shape[0] == 1 and mask.dtype == torch.bool


def test_stunet_refuses_an_objective_other_than_the_exported_t2is(workspace, t2i_run):
    """The export records its parameterisation: epsilon temporal layers on a v-prediction T2I
    would train and sample garbage silently."""
    from lumiere.errors import ConfigError
    from lumiere.tasks import train

    meta = json.loads((workspace / "artifacts" / "t2i" / "unet" / "lumiere_t2i.json").read_text())
    assert meta == {"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2"}
    cfg = compose_config("train", ["experiment=tiny_stunet", "model.objective.prediction_type=epsilon",
                                   *path_overrides(workspace, "stunet_eps")], workspace / "stunet_eps")
    # raised as itself (not wrapped by Hydra's instantiate), so train.py prints it as one line
    with pytest.raises(ConfigError, match="prediction_type='v_prediction'.*model.objective.prediction_type"):
        train(cfg)


def test_stunet_stage_logs_losses_samples_and_a_trainable_only_checkpoint(workspace, stunet_run):
    _, metrics = stunet_run
    assert torch.isfinite(torch.tensor(metrics["val/loss"]))
    run_dir = workspace / "stunet"
    csv = (run_dir / "csv" / "metrics.csv").read_text()
    assert "train/loss" in csv.splitlines()[0]
    samples = sorted((run_dir / "samples").glob("step_*/*.mp4"))
    assert samples, "validation wrote no sample videos"
    assert list((run_dir / "samples").glob("step_*/*_xt.png")), "no X-T slice images"
    assert (run_dir / "samples" / "first_batch" / "sheet.png").is_file()
    assert list((run_dir / "samples").glob("step_*/all.gif")), "no side-by-side GIF of the validation clips"

    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    keys = list(checkpoint["state_dict"])
    assert keys and not any(key.startswith("network.unet.") for key in keys), \
        "frozen T2I weights leaked into the STUNet checkpoint"
    assert not any(key.startswith("text_encoder.") for key in keys)
    assert checkpoint["lumiere"]["model_config"]["_target_"].endswith("TextToVideoModule")
    # the paper's STUNet: the EMA follows every weight the checkpoint holds
    assert set(keys) == set(checkpoint["ema"]["shadow"])
    assert not any(".modulation." in key or "temporal_conditioning" in key for key in keys)
    assert checkpoint["global_step"] == 4


DEMO_CONDITIONING = ("model.stunet.temporal_conditioning={_target_:lumiere.models.TemporalConditioning,_partial_:true,"
                     "pooling:whitened,frame_embedding:true,caption_frame_product:true,layout_frequencies:2}")


def test_the_demos_conditioning_is_fitted_on_the_training_captions_before_the_first_step(workspace, t2i_run):
    """With the demo's extension, training fits the whitened caption pooling on the training captions
    and saves it with the checkpoint (buffers, outside the EMA)."""
    from lumiere.tasks import train

    overrides = ["experiment=tiny_stunet", DEMO_CONDITIONING, "trainer.max_steps=2", "run_name=conditioned",
                 *path_overrides(workspace, "stunet_conditioned")]
    train(compose_config("train", overrides, workspace / "stunet_conditioned"))
    checkpoint = torch.load(workspace / "stunet_conditioned" / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=True)
    state = checkpoint["state_dict"]
    buffers = {f"network.temporal_conditioning.caption.whitening_{name}" for name in ("mean", "matrix", "fitted")}
    assert set(state) - set(checkpoint["ema"]["shadow"]) == buffers
    assert bool(state["network.temporal_conditioning.caption.whitening_fitted"])
    whitening = state["network.temporal_conditioning.caption.whitening_matrix"]
    assert not torch.equal(whitening, torch.eye(whitening.shape[0]))
    assert any(".modulation.layout." in key for key in state) and any("frame_embedding" in key for key in state)


def test_only_temporal_parameters_are_optimised(stunet_run):
    from hydra.utils import instantiate

    cfg, _ = stunet_run
    module = instantiate(cfg.model, _convert_="partial")
    trainable = [name for name, _ in module.trainable_named_parameters()]
    assert trainable and all(name.startswith("network.") and not name.startswith("network.unet.")
                             for name in trainable)


def test_checkpoint_rebuilds_the_stage_and_samples_deterministically(workspace, stunet_run):
    from lumiere.training import load_module_from_checkpoint

    module = load_module_from_checkpoint(str(workspace / "stunet" / "checkpoints" / "last.ckpt"))
    first = module.generate(["a red circle moving right"], num_frames=8, seed=3, num_inference_steps=2,
                            progress=False)
    second = module.generate(["a red circle moving right"], num_frames=8, seed=3, num_inference_steps=2,
                             progress=False)
    assert first.shape == (1, 3, 8, 16, 16)
    assert first.min() >= -1 and first.max() <= 1
    assert torch.equal(first, second)


def test_resume_restores_step_optimizer_ema_and_lr_schedule(workspace, stunet_run):
    """Resuming from the step-2 checkpoint restores every piece of training state exactly."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    cfg, _ = stunet_run
    ckpt = workspace / "stunet" / "checkpoints" / "step_0000002.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    module = instantiate(cfg.model, _convert_="partial")
    datamodule = instantiate(cfg.data)
    restored = {}

    class Capture(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if restored:
                return
            optimizer = trainer.optimizers[0]
            restored["step"] = trainer.global_step
            restored["lr"] = optimizer.param_groups[0]["lr"]
            restored["exp_avg"] = {k: v["exp_avg"].clone() for k, v in optimizer.state_dict()["state"].items()}
            restored["ema"] = {k: v.clone() for k, v in pl_module.ema.shadow.items()}
            restored["weights"] = {n: p.detach().clone() for n, p in pl_module.trainable_named_parameters()}
            trainer.should_stop = True  # stop right after restoring, before this batch trains
            return -1

    trainer = pl.Trainer(accelerator="cpu", max_steps=4, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, callbacks=[Capture()], num_sanity_val_steps=0,
                         limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt))
    assert restored["step"] == 2
    assert restored["lr"] == pytest.approx(saved["lr_schedulers"][0]["_last_lr"][0])
    for key, value in saved["optimizer_states"][0]["state"].items():
        assert torch.equal(restored["exp_avg"][key], value["exp_avg"])
    for name, value in saved["ema"]["shadow"].items():
        assert torch.equal(restored["ema"][name], value)
    for name, value in restored["weights"].items():
        assert torch.equal(value, saved["state_dict"][name])


def test_generate_command_writes_videos_and_rejects_bad_input(workspace, stunet_run):
    ckpt = workspace / "stunet" / "checkpoints" / "last.ckpt"
    env = {**os.environ, "PROJECT_ROOT": str(REPO_ROOT)}
    out_dir = workspace / "generated"
    common = [sys.executable, str(REPO_ROOT / "generate.py"), f"ckpt_path={ckpt}", f"out_dir={out_dir}",
              f"paths.log_dir={workspace / 'logs'}", "num_inference_steps=2"]
    done = subprocess.run([*common, "prompts=[a red circle moving right]", "num_frames=8"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(out_dir.glob("base/batch_00000/*.mp4"))
    assert list(out_dir.glob("base/batch_00000/*_xt.png"))

    bad = subprocess.run([*common, "prompts=[a red circle]", "num_frames=7"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error:")
    assert "7" in bad.stderr.strip().splitlines()[-1]
