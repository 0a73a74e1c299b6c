"""Frozen parts in the compute dtype (issue 20, item 5): `frozen_dtype` casts the frozen U-Net and text
encoder, the temporal weights keep float32 master copies, checkpoints stay trainable-only and load
across frozen dtypes (fingerprints taken before the cast)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_pipeline_folder import stage_kwargs, write_pipeline_folder
from torch import nn

from lumiere.errors import ConfigError
from lumiere.training import TextToVideoModule, load_module_from_checkpoint
from lumiere.training.base import CHECKPOINT_KEY, auto_frozen_dtype, parse_frozen_dtype

STAGE_CONFIG = {"_target_": "lumiere.training.TextToVideoModule",
                "stunet": {"_target_": "lumiere.models.STUNet", "_partial_": True, "num_temporal_attention_layers": 1},
                "objective": {"_target_": "lumiere.diffusion.DiffusionObjective"},
                "optimizer": {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4}, "ema_decay": None}


@pytest.fixture(scope="module")
def if_folder(tmp_path_factory):
    return write_pipeline_folder(tmp_path_factory.mktemp("if") / "IF-I-tiny")


def attach_trainer(module, precision: str, device: str = "cpu") -> None:
    module.trainer = SimpleNamespace(datamodule=None, precision=precision,
                                     strategy=SimpleNamespace(root_device=torch.device(device)))


def frozen_and_trainable(module):
    frozen = [(n, p) for n, p in module.named_parameters() if not p.requires_grad]
    trainable = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    return frozen, trainable


@pytest.mark.parametrize(("setting", "precision", "device", "expected"), [
    ("auto", "bf16-mixed", "cuda", torch.bfloat16), ("auto", "bf16-true", "cuda", torch.bfloat16),
    ("auto", "bf16-mixed", "cpu", torch.float32), ("auto", "32-true", "cuda", torch.float32),
    ("auto", "16-mixed", "cuda", torch.float32), (None, "bf16-mixed", "cuda", torch.bfloat16),
    ("fp16", "32-true", "cpu", torch.float16), ("bf16", "32-true", "cpu", torch.bfloat16),
    ("fp32", "bf16-mixed", "cuda", torch.float32),
])
def test_the_frozen_dtype_rule(setting, precision, device, expected):
    assert (parse_frozen_dtype(setting) or auto_frozen_dtype(precision, device)) == expected


def test_an_unknown_frozen_dtype_is_one_config_error():
    with pytest.raises(ConfigError, match="model.frozen_dtype='int8' is not a dtype: use auto, fp32, bf16 or fp16"):
        parse_frozen_dtype("int8")


def test_bf16_frozen_parts_with_fp32_temporal_weights_train_on_cpu(if_folder):
    torch.manual_seed(0)
    module = TextToVideoModule(t2i_path=str(if_folder), frozen_dtype="bf16", **stage_kwargs())
    attach_trainer(module, "32-true")
    module.setup("fit")
    frozen, trainable = frozen_and_trainable(module)
    norms = {f"{name}.{p}" for name, layer in module.named_modules() if isinstance(layer, (nn.LayerNorm, nn.GroupNorm))
             for p, _ in layer.named_parameters(recurse=False)}
    assert all(p.dtype == (torch.float32 if n in norms else torch.bfloat16) for n, p in frozen)
    assert any(n.startswith("text_encoder.") for n, p in frozen if p.dtype == torch.bfloat16)
    assert trainable and all(p.dtype == torch.float32 for _, p in trainable)  # fp32 master copies
    # temporal output projections start at zero (identity inflation): make them act, so gradients reach all
    with torch.no_grad():
        for _, parameter in trainable:
            parameter.add_(0.01 * torch.randn_like(parameter))
    batch = {"video": torch.rand(2, 3, 8, 16, 16) * 2 - 1, "caption": ["a red circle moving left", "a blue square"],
             "key": ["a", "b"]}
    loss = module.diffusion_loss(batch, module.sample_generators(batch, step=0))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for _, p in frozen)
    grads = [p.grad for _, p in trainable]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    videos = module.generate(["a red circle"], num_frames=8, num_inference_steps=2, progress=False)
    assert videos.shape == (1, 3, 8, 16, 16) and videos.dtype == torch.float32 and torch.isfinite(videos).all()


def _save_checkpoint(module, path):
    module.model_config = {**STAGE_CONFIG, "t2i_path": module.t2i_path, "frozen_dtype": "bf16"}
    checkpoint = {"state_dict": module.state_dict(), "global_step": 0}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return checkpoint


def test_a_checkpoint_made_under_bf16_loads_under_fp32_and_back(tmp_path, if_folder):
    trained = TextToVideoModule(t2i_path=str(if_folder), frozen_dtype="bf16", **stage_kwargs())
    attach_trainer(trained, "32-true")
    trained.setup("fit")
    checkpoint = _save_checkpoint(trained, tmp_path / "bf16.ckpt")
    frozen_names = {n for n, _ in frozen_and_trainable(trained)[0]}
    assert not frozen_names & set(checkpoint["state_dict"])  # trainable weights only
    assert set(checkpoint["state_dict"]) == {n for n, _ in frozen_and_trainable(trained)[1]}

    # the stored config says bf16; the loader without a trainer honours an explicit dtype ...
    as_stored = load_module_from_checkpoint(str(tmp_path / "bf16.ckpt"))
    assert as_stored.network.unet.conv_in.weight.dtype == torch.bfloat16
    # ... and the same checkpoint rebuilt with frozen_dtype fp32 passes the frozen-part check too
    checkpoint[CHECKPOINT_KEY]["model_config"]["frozen_dtype"] = "fp32"
    torch.save(checkpoint, tmp_path / "fp32.ckpt")
    as_fp32 = load_module_from_checkpoint(str(tmp_path / "fp32.ckpt"))
    assert as_fp32.network.unet.conv_in.weight.dtype == torch.float32
    assert as_fp32.frozen_fingerprints() == trained.frozen_fingerprints() == as_stored.frozen_fingerprints()
    for name, parameter in as_fp32.trainable_named_parameters():
        assert torch.equal(parameter, checkpoint["state_dict"][name])

    # and back: a checkpoint of an fp32 run loads into a module whose frozen parts are bf16 after its setup
    fp32_module = TextToVideoModule(t2i_path=str(if_folder), frozen_dtype="fp32", **stage_kwargs())
    attach_trainer(fp32_module, "32-true")
    fp32_module.setup("fit")
    fp32_checkpoint = {"state_dict": fp32_module.state_dict(), "global_step": 0}
    fp32_module.on_save_checkpoint(fp32_checkpoint)
    resumed = TextToVideoModule(t2i_path=str(if_folder), frozen_dtype="bf16", **stage_kwargs())
    attach_trainer(resumed, "32-true")
    resumed.setup("fit")  # casts to bf16 after taking the fingerprints
    resumed.on_load_checkpoint(fp32_checkpoint)  # the frozen-part check passes
    assert resumed.network.unet.conv_in.weight.dtype == torch.bfloat16


def test_conditional_and_sdedit_sampling_run_with_bf16_frozen_parts_on_cpu(tmp_path, if_folder):
    """Paths that call network_forward themselves (conditional sampling, SDEdit) run it inside
    frozen_compute_scope: without it a bf16 frozen layer meets a float32 input and raises."""
    from lumiere.apps import sdedit_video
    from lumiere.training.conditional import ConditionalVideoModule

    torch.manual_seed(0)
    base = TextToVideoModule(t2i_path=str(if_folder), frozen_dtype="bf16", **stage_kwargs())
    attach_trainer(base, "32-true")
    base.setup("fit")
    _save_checkpoint(base, tmp_path / "base.ckpt")
    loaded = load_module_from_checkpoint(str(tmp_path / "base.ckpt"))
    assert loaded.frozen_dtype == torch.bfloat16
    clip = torch.rand(1, 3, 8, 16, 16) * 2 - 1
    edited = sdedit_video(loaded, clip, "a blue square", 0.5, num_inference_steps=2, progress=False)
    assert edited.shape == clip.shape and edited.dtype == torch.float32 and torch.isfinite(edited).all()

    conditional = ConditionalVideoModule(base_ckpt_path=str(tmp_path / "base.ckpt"), frozen_dtype="bf16",
                                         optimizer=stage_kwargs()["optimizer"], ema_decay=None)
    attach_trainer(conditional, "32-true")
    conditional.setup("fit")
    assert conditional.frozen_dtype == torch.bfloat16
    mask = torch.zeros(1, 1, 8, 16, 16)
    mask[:, :, 0] = 1  # the first frame known: image-to-video
    video = conditional.generate_conditional(["a red circle"], clip, mask, num_inference_steps=2, progress=False)
    assert video.shape == clip.shape and video.dtype == torch.float32 and torch.isfinite(video).all()
