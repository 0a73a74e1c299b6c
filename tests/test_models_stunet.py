"""Properties of the STUNet inflation (paper Sec. 3.1, Fig. 4, App. B) on tiny IF-I, SD and IF-II U-Nets."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from einops import rearrange
from safetensors.torch import load_file, save_file

from lumiere.errors import ConfigError
from lumiere.models import STUNet, build_fixed_resolution_inflation, build_unet
from lumiere.models.t2i import unet_text_dim
from lumiere.models.temporal import FactorizedSpaceTimeConvBlock, TemporalAttentionBlock
from lumiere.models.temporal_conditioning import TemporalConditioning

PRESETS = ["if_stage1_tiny", "sd_tiny", "if_stage2_tiny"]
TOL = 1e-5


def _inputs(unet, batch=2, frames=8, size=16, seed=0, text_len=6):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, unet.config.in_channels, frames, size, size, generator=g)
    timestep = torch.tensor([17, 640][:batch])
    text = torch.randn(batch, text_len, unet_text_dim(unet), generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.bool)
    mask[0, text_len // 2 :] = False  # a padded prompt: the mask must matter
    class_labels = torch.tensor([20, 250][:batch]) if unet.config.class_embed_type is not None else None
    return sample, timestep, text, mask, class_labels


def _unet_per_frame(unet, sample, timestep, text, mask, class_labels):
    """The 2D U-Net applied to every frame independently, via diffusers' own forward."""
    b, _, t, _, _ = sample.shape
    frames = rearrange(sample, "b c t h w -> (b t) c h w")
    repeat = lambda x: None if x is None else x.repeat_interleave(t, dim=0)  # noqa: E731
    out = unet(
        frames,
        repeat(timestep),
        repeat(text),
        encoder_attention_mask=repeat(mask),
        class_labels=repeat(class_labels),
    ).sample
    return rearrange(out, "(b t) c h w -> b c t h w", b=b)


def _perturb_trainable(model: STUNet, seed: int = 1, scale: float = 0.05) -> None:
    """Give every trainable parameter (incl. the zero-initialised projections) random values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def unets():
    torch.manual_seed(0)
    return {name: build_unet(name).eval() for name in PRESETS}


# ---- (a) no temporal resampling: the STUNet at init is the 2D U-Net frame by frame -------------


@pytest.mark.parametrize("preset", PRESETS)
def test_without_resampling_stunet_at_init_equals_2d_unet_per_frame(unets, preset):
    unet = unets[preset]
    model = STUNet(unet, temporal_resampling=False)
    assert model.temporal_factor == 1
    inputs = _inputs(unet)
    with torch.no_grad():
        video = model(*inputs)
        reference = _unet_per_frame(unet, *inputs)
    assert video.shape == reference.shape == (2, unet.config.out_channels, 8, 16, 16)
    assert (video - reference).abs().max() <= TOL


# ---- (b) with temporal resampling: every N-th frame equals the 2D output (App. B, Fig. 13) ---


@pytest.mark.parametrize("preset", ["if_stage1_tiny", "sd_tiny"])
def test_with_resampling_every_nth_output_frame_equals_2d_unet(unets, preset):
    unet = unets[preset]
    model = STUNet(unet)  # temporal downsampling after both spatial downsamplers: N = 4
    n = model.temporal_factor
    assert n == 4
    inputs = _inputs(unet, frames=8)
    with torch.no_grad():
        video = model(*inputs)
        reference = _unet_per_frame(unet, *inputs)
    assert (video[:, :, ::n] - reference[:, :, ::n]).abs().max() <= TOL
    # The frames in between are not the 2D output: they mix neighbouring frames (nearest-neighbour upsampling).
    assert (video[:, :, 1::n] - reference[:, :, 1::n]).abs().max() > 1e-3


def test_partial_temporal_downsampling_gives_factor_two(unets):
    unet = unets["if_stage1_tiny"]
    model = STUNet(unet, temporal_downsample_levels=[1])
    assert model.temporal_factor == 2
    inputs = _inputs(unet, frames=4)
    with torch.no_grad():
        video = model(*inputs)
        reference = _unet_per_frame(unet, *inputs)
    assert (video[:, :, ::2] - reference[:, :, ::2]).abs().max() <= TOL


# ---- (f) He initialisation of the resampling modules breaks the equality (Fig. 12/13) ------


def test_he_init_resampling_does_not_reproduce_2d_frames(unets):
    unet = unets["if_stage1_tiny"]
    torch.manual_seed(3)
    model = STUNet(unet, resampling_init="he")
    inputs = _inputs(unet, frames=8)
    with torch.no_grad():
        video = model(*inputs)
        reference = _unet_per_frame(unet, *inputs)
    n = model.temporal_factor
    assert (video[:, :, ::n] - reference[:, :, ::n]).abs().max() > 1e-2


# ---- (e) the block walk itself matches diffusers' UNet2DConditionModel.forward ---------------


@pytest.mark.parametrize("preset", ["if_stage1_tiny", "sd_tiny"])
@pytest.mark.parametrize("frames", [1, 3])
def test_block_walk_without_temporal_modules_matches_diffusers_forward(unets, preset, frames):
    unet = unets[preset]
    walk_only = STUNet(
        unet, temporal_resampling=False, conv_block_levels="none", attention_levels="none", num_temporal_attention_layers=0
    )
    assert sum(p.numel() for p in walk_only.trainable_parameters()) == 0
    inputs = _inputs(unet, frames=frames)
    with torch.no_grad():
        video = walk_only(*inputs)
        reference = _unet_per_frame(unet, *inputs)
        unmasked = _unet_per_frame(unet, *inputs[:3], None, inputs[4])
    assert (video - reference).abs().max() <= TOL
    assert (reference - unmasked).abs().max() > 1e-4  # the attention mask really changed the output


def test_block_walk_forwards_upsample_size_for_odd_spatial_sizes(unets):
    unet = unets["sd_tiny"]  # conv up-samplers honour upsample_size (18 -> 9 -> 5 -> 9 -> 18)
    model = STUNet(unet, temporal_resampling=False)
    inputs = _inputs(unet, frames=2, size=18)
    with torch.no_grad():
        video = model(*inputs)
        reference = _unet_per_frame(unet, *inputs)
    assert video.shape[-2:] == (18, 18)
    assert (video - reference).abs().max() <= TOL


# ---- SSR (Sec. 3.2): stage-II U-Net, noise level as class_labels, T kept ------------------


def test_ssr_stunet_uses_noise_level_and_keeps_coarsest_attention(unets):
    unet = unets["if_stage2_tiny"]
    model = STUNet(unet, temporal_resampling=False)
    assert len(model.mid_temporal.blocks) > 0
    assert any(len(stack.blocks) for stack in model.up_temporal[0].layers)  # attention after coarsest up layers
    sample, timestep, text, mask, class_labels = _inputs(unet, frames=4)
    with torch.no_grad():
        low_noise = model(sample, timestep, text, mask, class_labels)
        high_noise = model(sample, timestep, text, mask, class_labels + 500)
    assert low_noise.shape[2] == 4
    assert (low_noise - high_noise).abs().max() > 1e-4
    with pytest.raises(ConfigError, match="class_labels"):
        model(sample, timestep, text, mask, None)


# ---- (d) frame counts: clear ConfigError before any compute --------------------------------


@pytest.mark.parametrize("frames,reason", [(6, "not divisible"), (4, "too short")])
def test_bad_frame_count_raises_config_error_before_compute(unets, frames, reason):
    unet = unets["if_stage1_tiny"]
    model = STUNet(unet)  # N = 4: needs a multiple of 4 and at least 8 frames
    calls = []
    hooks = [m.register_forward_pre_hook(lambda *_: calls.append(1)) for m in (unet.conv_in, unet.time_embedding)]
    try:
        with pytest.raises(ConfigError, match=reason):
            model(*_inputs(unet, frames=frames))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == []
    with pytest.raises(ConfigError, match="divisible by the STUNet's temporal factor N=4"):
        model.check_num_frames(10)
    model.check_num_frames(80)  # the paper's clip length


def test_temporal_downsample_levels_must_follow_spatial_downsamplers(unets):
    with pytest.raises(ConfigError, match="without a spatial downsampler"):
        STUNet(unets["if_stage1_tiny"], temporal_downsample_levels=[2])


# ---- (c) only temporal parameters train; trainable state dict round trip -------------------


def test_gradients_reach_only_temporal_parameters(unets, tmp_path):
    unet = unets["if_stage1_tiny"]
    torch.manual_seed(0)
    model = STUNet(unet)
    trainable = dict(model.trainable_named_parameters())
    assert trainable and all(not name.startswith("unet.") for name in trainable)
    assert all(not p.requires_grad for p in unet.parameters())

    inputs = _inputs(unet, frames=8)
    model(*inputs).square().mean().backward()
    assert all(p.grad is None for p in unet.parameters())
    projections = {n: p for n, p in trainable.items() if n.endswith("proj_out.weight")}
    assert projections and all(p.grad is not None and p.grad.abs().sum() > 0 for p in projections.values())

    # After one step the zero projections are non-zero, so every temporal parameter gets gradient.
    optimizer = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model(*inputs).square().mean().backward()
    no_grad = [n for n, p in trainable.items() if p.grad is None or p.grad.abs().sum() == 0]
    assert no_grad == []
    assert all(p.grad is None for p in unet.parameters())

    state = model.trainable_state_dict()
    assert set(state) == set(trainable)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "temporal.safetensors"))
    torch.manual_seed(123)
    restored = STUNet(unet)
    restored.load_trainable_state_dict(load_file(str(tmp_path / "temporal.safetensors")))
    with torch.no_grad():
        assert torch.equal(model(*inputs), restored(*inputs))


def test_load_trainable_state_dict_rejects_mismatched_keys(unets):
    model = STUNet(unets["if_stage1_tiny"])
    state = model.trainable_state_dict()
    state.pop(next(iter(state)))
    with pytest.raises(ConfigError, match="missing"):
        model.load_trainable_state_dict(state)
    other = STUNet(unets["if_stage1_tiny"], num_temporal_attention_layers=1)
    with pytest.raises(ConfigError, match="unexpected"):
        other.load_trainable_state_dict(model.trainable_state_dict())


# ---- (h) activation checkpointing gives the same gradients ----------------------------------


def test_gradient_checkpointing_gives_same_gradients(unets):
    unet = unets["if_stage1_tiny"]
    torch.manual_seed(0)
    model = STUNet(unet)
    _perturb_trainable(model)
    inputs = _inputs(unet, frames=8)

    def grads(checkpointing: bool):
        model.gradient_checkpointing = checkpointing
        model.zero_grad(set_to_none=True)
        loss = model(*inputs).square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.trainable_named_parameters()}

    loss_plain, plain = grads(False)
    loss_ckpt, ckpt = grads(True)
    assert torch.allclose(loss_plain, loss_ckpt, atol=1e-6)
    assert plain.keys() == ckpt.keys()
    # the earliest temporal layer (level 0, first down layer) is reached through frozen blocks
    assert ckpt["down_temporal.0.layers.0.blocks.0.spatial_conv.weight"].abs().sum() > 0
    for name in plain:
        assert torch.allclose(plain[name], ckpt[name], rtol=1e-4, atol=1e-6), name
    assert all(p.grad is None for p in unet.parameters())


# ---- fixed-resolution baseline (benchmark) ---------------------------------------------------


def test_fixed_resolution_inflation_has_temporal_blocks_everywhere_and_keeps_frames(unets):
    unet = unets["if_stage1_tiny"]
    baseline = build_fixed_resolution_inflation(unet)
    assert baseline.temporal_factor == 1
    for level in list(baseline.down_temporal) + list(baseline.up_temporal):
        assert level.resample is None
        assert all(len(stack.blocks) == 2 for stack in level.layers)  # conv + attention after every layer
    inputs = _inputs(unet, frames=3)
    with torch.no_grad():
        assert (baseline(*inputs) - _unet_per_frame(unet, *inputs)).abs().max() <= TOL


# ---- the CPU demo's temporal conditioning (not in the paper): App. B's equalities hold, the embedding matters --


def _conditioning(**options):
    return partial(TemporalConditioning, **options)


DEMO_CONDITIONING = dict(pooling="whitened", frame_embedding=True, caption_frame_product=True, layout_frequencies=4)


def _modulated_blocks(model):
    return [m for m in model.modules() if getattr(m, "modulation", None) is not None]


def _temporal_blocks(model):
    return [m for m in model.modules() if isinstance(m, (FactorizedSpaceTimeConvBlock, TemporalAttentionBlock))]


def test_the_papers_stunet_has_no_conditioning_path(unets):
    model = STUNet(unets["if_stage1_tiny"])
    assert model.temporal_conditioning is None and not _modulated_blocks(model)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("options", [{}, DEMO_CONDITIONING], ids=["mean", "demo"])
def test_temporally_conditioned_stunet_at_init_keeps_the_2d_equality(unets, preset, options):
    unet = unets[preset]
    torch.manual_seed(4)
    model = STUNet(unet, temporal_resampling=False, temporal_conditioning=_conditioning(**options), num_temporal_attention_layers=2)
    inputs = _inputs(unet)
    with torch.no_grad():
        assert (model(*inputs) - _unet_per_frame(unet, *inputs)).abs().max() <= TOL


@pytest.mark.parametrize("preset", ["if_stage1_tiny", "sd_tiny"])
def test_with_the_demos_conditioning_every_nth_output_frame_equals_2d_unet(unets, preset):
    unet = unets[preset]
    torch.manual_seed(4)
    model = STUNet(unet, temporal_conditioning=_conditioning(**DEMO_CONDITIONING), num_temporal_attention_layers=2)
    n = model.temporal_factor
    inputs = _inputs(unet, frames=8)
    with torch.no_grad():
        video, reference = model(*inputs), _unet_per_frame(unet, *inputs)
    assert (video[:, :, ::n] - reference[:, :, ::n]).abs().max() <= TOL


def test_whitened_pooling_keeps_the_2d_equality_before_and_after_its_fit(unets):
    unet = unets["if_stage1_tiny"]
    torch.manual_seed(6)
    whitened = STUNet(unet, temporal_resampling=False, temporal_conditioning=_conditioning(pooling="whitened"),
                      num_temporal_attention_layers=2)
    inputs = _inputs(unet)
    conditioning = whitened.temporal_conditioning
    for fitted in (False, True):
        assert conditioning.needs_fit is not fitted
        with torch.no_grad():
            assert (whitened(*inputs) - _unet_per_frame(unet, *inputs)).abs().max() <= TOL
        conditioning.fit_on_captions(["a", "b"], lambda captions: (inputs[2][: len(captions)], inputs[3][: len(captions)]))
    with pytest.raises(ConfigError, match="pooling"):
        STUNet(unet, temporal_conditioning=_conditioning(pooling="max"))


def test_temporal_conditioning_feeds_the_embedding_to_every_temporal_block(unets):
    unet = unets["if_stage1_tiny"]
    torch.manual_seed(5)
    model = STUNet(unet, temporal_conditioning=_conditioning(), num_temporal_attention_layers=2)
    modulated = _modulated_blocks(model)
    assert modulated and len(modulated) == len(_temporal_blocks(model))
    _perturb_trainable(model)
    sample, timestep, text, mask, labels = _inputs(unet)
    with torch.no_grad():
        reference = model(sample, timestep, text, mask, labels)
        for block in modulated:  # silence only the embedding path: the output must change
            block.modulation.film.weight.zero_()
            block.modulation.film.bias.zero_()
        without = model(sample, timestep, text, mask, labels)
    assert (reference - without).abs().max() > 1e-3
    # Only the new modulation layers are added to the trainable set.
    names = [n for n, _ in model.trainable_named_parameters() if ".modulation." in n]
    assert len(names) == 2 * len(modulated) and not any(n.startswith("unet.") for n in names)


def _record_embeddings(model):
    """The embedding every modulation receives in the next forward, keyed by block name."""
    seen = {}

    def keep(name):
        def hook(module, args, output):
            seen[name] = args[1].detach().clone()  # returns None: the output stays
        return hook

    handles = [block.modulation.register_forward_hook(keep(name))
               for name, block in model.named_modules() if getattr(block, "modulation", None) is not None]
    return seen, handles


@pytest.mark.parametrize("resampling", [False, True])
def test_frame_time_embedding_keeps_the_init_equality_and_makes_the_modulation_depend_on_the_frame(unets, resampling):
    unet = unets["if_stage1_tiny"]
    torch.manual_seed(7)
    model = STUNet(unet, temporal_resampling=resampling, temporal_conditioning=_conditioning(frame_embedding=True),
                   num_temporal_attention_layers=2)
    inputs = _inputs(unet)
    with torch.no_grad():
        at_init = model(*inputs)
        if resampling:  # App. B: every N-th output frame is the 2D U-Net's output on that frame
            n = model.temporal_factor
            reference = _unet_per_frame(unet, *inputs)[:, :, ::n]
            assert (at_init[:, :, ::n] - reference).abs().max() <= TOL
        else:
            assert (at_init - _unet_per_frame(unet, *inputs)).abs().max() <= TOL

    # The conditioning the blocks read now differs from frame to frame, at every level's frame count.
    conditioning, _ = _record_embeddings(model)
    with torch.no_grad():
        model(*inputs)
    batch, frames = inputs[0].shape[0], inputs[0].shape[2]
    frame_counts = set()
    for emb in conditioning.values():
        per_video = emb.reshape(batch, -1, emb.shape[-1])  # ((b t), d), frame-major
        frame_counts.add(per_video.shape[1])
        assert (per_video[:, 0] - per_video[:, -1]).abs().max() > 1e-4  # first and last frame differ
    # every level's frame count: T, T/2, ... T/N (only T without resampling)
    assert frame_counts == {frames >> k for k in range(len(model.temporal_downsample_levels) + 1)}
    # Trainable, and part of the temporal checkpoint.
    names = [n for n, _ in model.trainable_named_parameters()]
    assert any(n.startswith("temporal_conditioning.frame_embedding.") for n in names)


@pytest.mark.parametrize("product", [False, True])
def test_caption_frame_product_makes_the_captions_effect_depend_on_the_frame(unets, product):
    """Summed, caption and frame embeddings give every frame the same caption difference; with the
    product term the difference between two captions changes from frame to frame."""
    unet = unets["if_stage1_tiny"]
    torch.manual_seed(9)
    model = STUNet(unet, temporal_resampling=False,
                   temporal_conditioning=_conditioning(frame_embedding=True, caption_frame_product=product),
                   num_temporal_attention_layers=1)
    sample, timestep, text, mask, labels = _inputs(unet)
    timestep = torch.full_like(timestep, 300)  # the two videos differ in their captions only
    with torch.no_grad():
        torch.testing.assert_close(model(sample, timestep, text, mask, labels),
                                   _unet_per_frame(unet, sample, timestep, text, mask, labels), atol=TOL, rtol=0)
    seen = []
    block = _modulated_blocks(model)[0]
    handle = block.modulation.register_forward_hook(lambda module, args, output: seen.append(args[1].detach()))
    with torch.no_grad():
        model(sample, timestep, text, mask, labels)
    handle.remove()
    per_video = seen[0].reshape(sample.shape[0], sample.shape[2], -1)  # (b, t, d), frame-major fold
    caption_effect = per_video[0] - per_video[1]  # (t, d): what the caption changes, frame by frame
    varies = (caption_effect - caption_effect[:1]).abs().max() > 1e-4
    assert bool(varies) is product
    with pytest.raises(ConfigError, match="needs frame_embedding"):
        STUNet(unet, temporal_conditioning=_conditioning(caption_frame_product=True))


@pytest.mark.parametrize("resampling", [False, True])
def test_layout_shift_keeps_the_init_equality_and_trains(unets, resampling):
    unet = unets["if_stage1_tiny"]
    torch.manual_seed(8)
    model = STUNet(unet, temporal_resampling=resampling,
                   temporal_conditioning=_conditioning(frame_embedding=True, layout_frequencies=3),
                   num_temporal_attention_layers=2)
    inputs = _inputs(unet)
    n = model.temporal_factor
    with torch.no_grad():
        assert (model(*inputs)[:, :, ::n] - _unet_per_frame(unet, *inputs)[:, :, ::n]).abs().max() <= TOL
    layouts = [block.modulation.layout for block in _modulated_blocks(model)]
    assert all(layout is not None for layout in layouts)
    assert layouts and len(layouts) == len(_temporal_blocks(model))  # every temporal block, conv and attention, at every level
    names = [name for name, _ in model.trainable_named_parameters() if ".modulation.layout." in name]
    assert len(names) == 2 * len(layouts) and set(names) <= set(model.trainable_state_dict())
    # Past initialisation the layout path changes the output (it is wired in, not just built).
    _perturb_trainable(model)
    with torch.no_grad():
        reference = model(*inputs)
        for layout in layouts:
            layout.proj.weight.zero_()
            layout.proj.bias.zero_()
        assert (reference - model(*inputs)).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="layout_frequencies"):
        STUNet(unet, temporal_conditioning=_conditioning(layout_frequencies=-1))


def test_frame_time_embedding_encodes_clip_time_consistently_across_levels():
    from lumiere.models.temporal import sinusoidal_encoding
    from lumiere.models.temporal_conditioning import FrameTimeEmbedding

    embedding = FrameTimeEmbedding(16)
    # A level with 4 of 16 frames: frame i stands for input frames 4i..4i+3, encoded at their centre 4i + 1.5.
    coarse = embedding(4, 16)
    expected = embedding.mlp(sinusoidal_encoding(torch.tensor([1.5, 5.5, 9.5, 13.5]), 16))
    assert torch.allclose(coarse, expected)
    # At full resolution the frames are encoded at their own index.
    assert torch.allclose(embedding(16, 16), embedding.mlp(sinusoidal_encoding(torch.arange(16.0), 16)))


def test_temporal_block_built_with_conditioning_refuses_a_missing_embedding():
    from lumiere.models.temporal_conditioning import FeatureModulation

    block = FactorizedSpaceTimeConvBlock(8, modulation=FeatureModulation(16, 8))
    with pytest.raises(ConfigError, match="needs a conditioning embedding"):
        block(torch.randn(4, 8, 4, 4), num_frames=2)
    with pytest.raises(ConfigError, match="was built without"):
        FactorizedSpaceTimeConvBlock(8)(torch.randn(4, 8, 4, 4), num_frames=2, emb=torch.randn(4, 16))
