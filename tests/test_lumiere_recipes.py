"""The paper's recipes on DeepFloyd IF (issue 20, items 6 and 7): every recipe composes as
``--cfg job`` prints it, and runs end to end on the rehearsal's tiny IF-I / IF-II pipeline folders
(the real layout and configuration keys, random weights) through overrides only: lumiere_base trains
2 steps, lumiere_ssr trains 2 steps, the lumiere_cascade samples clips of the configured size and
frame count, and the UCF101 protocol scores the base checkpoint on a small UCF101-style folder.

The overrides shrink the run (16 px, 16 frames: the rehearsal IF-I has three spatial downsamplers,
so the STUNet needs a multiple of 8 and at least 16 frames), move it to the CPU in float32 and log to
CSV; everything else (the STUNet's paper settings, activation checkpointing, the learned-variance
objective, the folders' scheduler settings, EMA, caption dropout) is the recipe's own.
"""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from training_helpers import compose_config, make_tiny_dataset

PROMPTS = ["a red circle moving right at medium speed on a plain background",
           "a blue square moving up at medium speed on a plain background"]


def tiny_run(root, stage: str) -> list[str]:
    """Overrides that make a GPU recipe a seconds-long CPU run in `root/stage`."""
    return [f"paths.output_dir={root / stage}", f"paths.artifacts_dir={root / 'artifacts'}",
            f"paths.log_dir={root / 'logs'}", "trainer=cpu", "trainer.precision=32-true", "logger=csv",
            "trainer.enable_progress_bar=false", "trainer.max_steps=2", "trainer.val_check_interval=2",
            "trainer.limit_val_batches=1", "trainer.log_every_n_steps=1",
            "callbacks.model_checkpoint.every_n_train_steps=2", f"data.root={root / 'data' / 'tiny'}",
            "data.num_workers=0", "data.pin_memory=false", "data.batch_size=1", "data.target_fps=16",
            "model.lr_warmup_steps=1", "model.sampler.num_inference_steps=2"]


# ---------------------------------------------------------------------------------------------- composition
def resolved(config_name: str, overrides: list[str], tmp_path) -> dict:
    """The config as `python <entry>.py ... --cfg job` resolves it (no folder is read)."""
    cfg = compose_config(config_name, overrides, tmp_path)
    return OmegaConf.to_container(cfg, resolve=True)


def test_lumiere_base_composes_as_the_papers_base_model_on_if_stage_1(tmp_path):
    cfg = resolved("train", ["experiment=lumiere_base", "model.t2i_path=/weights/IF-I-XL-v1.0",
                             "data.root=/data/shards"], tmp_path)
    data, model, stunet = cfg["data"], cfg["model"], cfg["model"]["stunet"]
    assert data["_target_"] == "lumiere.data.VideoDataModule" and data["root"] == "/data/shards"
    assert (data["num_frames"], data["target_fps"], data["resolution"]) == (80, 16, 64)  # Sec. 5; IF-I's 64
    assert model["_target_"] == "lumiere.training.TextToVideoModule"
    assert model["t2i_path"] == "/weights/IF-I-XL-v1.0" and model["unet_path"] is None
    assert model["text_encoder_path"] is None and model["resolution"] == 64
    assert stunet["temporal_resampling"] and stunet["resampling_init"] == "identity"
    assert stunet["temporal_conditioning"] is None  # no demo extension
    assert stunet["activation_checkpointing"] == "all"
    objective = model["objective"]
    assert (objective["prediction_type"], objective["beta_schedule"]) == ("epsilon", "squaredcos_cap_v2")
    assert (objective["variance_loss"], objective["loss_weighting"]) == ("vlb", "uniform")
    assert model["caption_dropout"] == 0.1 and model["ema_decay"] and model["frozen_dtype"] == "auto"
    assert model["val_num_frames"] == 80 and model["sampler"]["scheduler"] == "ddpm"
    assert cfg["trainer"]["precision"] == "bf16-mixed" and cfg["trainer"]["accelerator"] == "gpu"
    assert cfg["run_name"] == "lumiere_base" and "wandb" in cfg["logger"]


def test_lumiere_base_at_the_papers_128_is_one_override(tmp_path):
    cfg = resolved("train", ["experiment=lumiere_base", "model.t2i_path=/w", "data.root=/d", "data.resolution=128"],
                   tmp_path)
    assert cfg["data"]["resolution"] == cfg["model"]["resolution"] == 128


def test_lumiere_ssr_composes_as_the_papers_ssr_on_if_stage_2(tmp_path):
    cfg = resolved("train", ["experiment=lumiere_ssr", "model.t2i_path=/weights/IF-II-L-v1.0",
                             "data.root=/data/shards"], tmp_path)
    data, model = cfg["data"], cfg["model"]
    assert (data["resolution"], data["hr_resolution"]) == (64, 256)
    assert (model["low_res_size"], model["resolution"]) == (64, 256)
    assert model["_target_"] == "lumiere.training.ssr.SuperResolutionModule"
    assert model["t2i_path"] == "/weights/IF-II-L-v1.0"
    assert model["unet_path"] is None and model["text_encoder_path"] is None  # all parts from the IF-II folder
    assert model["stunet"]["temporal_resampling"] is False  # Sec. 3.2
    assert (model["overlap"], model["window_weighting"]) == (2, "flat")  # App. C
    assert model["window"] == data["num_frames"]
    assert (model["sample_noise_level"], model["train_noise_level_max"]) == (250, 250)
    assert model["objective"]["prediction_type"] == "epsilon" and model["objective"]["variance_loss"] == "vlb"
    assert model["caption_dropout"] == 0.1 and cfg["trainer"]["precision"] == "bf16-mixed"


def test_lumiere_cascade_composes_for_generate(tmp_path):
    cfg = resolved("generate", ["experiment=lumiere_cascade", f"paths.log_dir={tmp_path / 'logs'}",
                                "prompts=[a dog swimming]"], tmp_path)
    assert cfg["ckpt_path"] == str(tmp_path / "logs/lumiere_base/lumiere_base/checkpoints/last.ckpt")
    assert cfg["ssr_ckpt_path"] == str(tmp_path / "logs/lumiere_ssr/lumiere_ssr/checkpoints/last.ckpt")
    assert (cfg["num_frames"], cfg["fps"], cfg["scheduler"]) == (80, 16, "ddpm")
    assert cfg["ssr"]["overlap"] == 2 and cfg["ssr"]["noise_level"] == 250 and cfg["ssr"]["window"] == 16


def test_evaluation_ucf101_composes_with_the_base_checkpoint(tmp_path):
    ckpt = tmp_path / "logs/lumiere_base/lumiere_base/checkpoints/last.ckpt"
    cfg = resolved("evaluate", ["evaluation=ucf101", f"ckpt_path={ckpt}", "evaluation.ucf101_root=/data/UCF-101",
                                "evaluation.c3d_weights=/w/conv3d_deepnetA_ucf.npz", "evaluation.c3d_mean=/w/mean2.npz",
                                "run_name=ucf101_lumiere_base"], tmp_path)
    assert cfg["evaluation"]["mode"] == "ucf101" and cfg["ckpt_path"] == str(ckpt)
    assert cfg["evaluation"]["num_videos"] == 10235 and cfg["evaluation"]["num_frames"] is None


def test_a_recipe_without_its_pipeline_folder_is_one_line_naming_t2i_path(tmp_path):
    from lumiere.errors import LumiereError
    from lumiere.utils import instantiate_config

    for experiment in ("lumiere_base", "lumiere_ssr"):
        cfg = compose_config("train", [f"experiment={experiment}", "data.root=/data/shards"], tmp_path)
        with pytest.raises(LumiereError, match="t2i_path") as error:
            instantiate_config(cfg.model, _convert_="partial")
        assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The rehearsal's IF-I / IF-II folders and the tiny synthetic benchmark (16 px clips with 32 px twins)."""
    from lumiere.models.rehearsal import write_rehearsal

    root = tmp_path_factory.mktemp("lumiere_recipes")
    folders = write_rehearsal(root / "weights")
    make_tiny_dataset(root / "data")
    return root, folders


@pytest.fixture(scope="module")
def base_run(rehearsal):
    from lumiere.tasks import train

    root, folders = rehearsal
    overrides = ["experiment=lumiere_base", f"model.t2i_path={folders['IF-I']}", *tiny_run(root, "base"),
                 "data.resolution=16", "data.num_frames=16", "model.val_num_frames=16", f"model.val_prompts=[{PROMPTS[0]}]"]
    metrics = train(compose_config("train", overrides, root / "base"))
    return root / "base", metrics


@pytest.fixture(scope="module")
def ssr_run(rehearsal):
    from lumiere.tasks import train

    root, folders = rehearsal
    overrides = ["experiment=lumiere_ssr", f"model.t2i_path={folders['IF-II']}", *tiny_run(root, "ssr"),
                 "data.resolution=16", "data.hr_resolution=32", "data.num_frames=8", "model.window=4"]
    metrics = train(compose_config("train", overrides, root / "ssr"))
    return root / "ssr", metrics


@pytest.mark.slow
def test_lumiere_base_trains_on_the_if_stage_1_rehearsal(base_run):
    from lumiere.training import load_module_from_checkpoint

    run, metrics = base_run
    assert torch.isfinite(torch.tensor(metrics["train/loss"])) and torch.isfinite(torch.tensor(metrics["val/loss"]))
    assert list((run / "samples").glob("step_*/*.mp4")), "no validation samples"
    module = load_module_from_checkpoint(str(run / "checkpoints" / "last.ckpt"), expected="TextToVideoModule")
    assert module.network.temporal_conditioning is None and module.network.checkpointing.enabled
    assert module.objective.variance_loss == "vlb" and module.network.out_channels == 6  # IF-I's learned variance
    assert module.scheduler_config["variance_type"] == "learned_range"  # the folder's sampler settings
    assert module.make_scheduler().config.thresholding
    assert module.text_encoder.tokenizer.model_max_length == 77
    assert module.sample_size == 16 and module.network.unet.config.sample_size == 64




@pytest.mark.slow
def test_lumiere_ssr_trains_on_the_if_stage_2_rehearsal(ssr_run):
    from lumiere.training import load_module_from_checkpoint

    run, metrics = ssr_run
    assert torch.isfinite(torch.tensor(metrics["train/loss"]))
    assert list((run / "samples").glob("step_*/*.mp4")), "no validation upsamplings"
    module = load_module_from_checkpoint(str(run / "checkpoints" / "last.ckpt"), expected="SuperResolutionModule")
    assert module.inflated and module.network.temporal_factor == 1  # no temporal resampling
    assert module.unet.config.class_embed_type == "timestep" and module.sample_noise_level == 250
    assert (module.low_res_size, module.sample_size, module.overlap) == (16, 32, 2)
    assert module.scheduler_config["sample_max_value"] == 1.0  # IF-II's scheduler settings


@pytest.mark.slow
def test_lumiere_cascade_samples_clips_of_the_configured_size_and_length(rehearsal, base_run, ssr_run):
    from lumiere.tasks import generate
    from lumiere.viz.video import read_video

    root, _ = rehearsal
    out_dir = root / "cascade"
    overrides = ["experiment=lumiere_cascade", f"ckpt_path={base_run[0] / 'checkpoints' / 'last.ckpt'}",
                 f"ssr_ckpt_path={ssr_run[0] / 'checkpoints' / 'last.ckpt'}", f"out_dir={out_dir}",
                 f"prompts=[{PROMPTS[0]}]", "num_frames=16", "num_inference_steps=2", "ssr.num_inference_steps=2",
                 "ssr.window=8", "device=cpu"]
    assert generate(compose_config("generate", overrides, out_dir))["num_videos"] == 1
    (base_clip,) = sorted((out_dir / "base" / "batch_00000").glob("*.mp4"))
    (ssr_clip,) = sorted((out_dir / "ssr" / "batch_00000").glob("*.mp4"))
    assert tuple(read_video(base_clip).shape) == (3, 16, 16, 16)
    assert tuple(read_video(ssr_clip).shape) == (3, 16, 32, 32)  # 3 windows of 8 frames, overlap 2


@pytest.mark.slow
def test_ucf101_protocol_scores_the_base_checkpoint(rehearsal, base_run, monkeypatch):
    from test_evaluation_pipeline import TopColour, fake_ucf101, use_stand_in_i3d

    import lumiere.evaluation.ucf101 as ucf101_mode
    from lumiere.metrics import FrechetVideoDistance, VideoInceptionScore
    from lumiere.tasks import evaluate

    root, _ = rehearsal
    fake_ucf101(root / "UCF-101")  # one 16-frame clip per class
    # The real I3D (and its resize to 224) costs seconds per clip on a CPU: a cheap stand-in, no resize.
    use_stand_in_i3d(monkeypatch)
    monkeypatch.setattr(ucf101_mode, "fvd_metric", lambda i3d, settings, real_statistics=None: FrechetVideoDistance(
        feature_extractor=i3d, preprocess=False, ddof=1, real_statistics=real_statistics))
    monkeypatch.setattr(ucf101_mode, "load_c3d_inception_score",
                        lambda weights, mean, splits: VideoInceptionScore(classifier=TopColour(), splits=splits))
    run = root / "ucf101"
    cfg = compose_config("evaluate", [
        "evaluation=ucf101", f"ckpt_path={base_run[0] / 'checkpoints' / 'last.ckpt'}",
        f"paths.artifacts_dir={root / 'artifacts'}", f"paths.output_dir={run}", "progress=false", "device=cpu",
        "evaluation.num_videos=4", "evaluation.batch_size=2", f"evaluation.ucf101_root={root / 'UCF-101'}",
        f"evaluation.c3d_weights={root / 'conv3d_deepnetA_ucf.npz'}", f"evaluation.c3d_mean={root / 'mean2.npz'}",
        "evaluation.sampling.num_inference_steps=2"], run)
    metrics = evaluate(cfg)
    assert torch.isfinite(torch.tensor(metrics["model/fvd"])) and metrics["model/is"] >= 1.0
    rows = json.loads((run / "ucf101_eval.json").read_text())["rows"]
    assert rows[0]["num_videos"] == 4 and rows[0]["num_real"] == 101
    assert len(list((run / "generated" / "videos").glob("*.npy"))) == 4
