"""Temporal blocks of the STUNet (Fig. 4, App. B): initialisation behaviour and frame awareness."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from lumiere.errors import ConfigError
from lumiere.models import FactorizedSpaceTimeConvBlock, TemporalAttentionBlock, TemporalDownsample, TemporalUpsample

B, C, T, H, W = 2, 8, 6, 5, 4


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def video():
    return torch.randn(B, C, T, H, W, generator=torch.Generator().manual_seed(0))


def _fold(video):
    return rearrange(video, "b c t h w -> (b t) c h w")


def _unfold(x, b=B):
    return rearrange(x, "(b t) c h w -> b c t h w", b=b)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_identity_initialised_downsample_is_exactly_frame_striding(video, kernel_size):
    down = TemporalDownsample(C, kernel_size=kernel_size)
    out = _unfold(down(_fold(video), T))
    assert out.shape == (B, C, T // 2, H, W)
    assert torch.equal(out, video[:, :, ::2])


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_identity_initialised_upsample_is_exactly_frame_duplication(video, kernel_size):
    up = TemporalUpsample(C, kernel_size=kernel_size)
    out = _unfold(up(_fold(video), T))
    assert out.shape == (B, C, 2 * T, H, W)
    assert torch.equal(out, video.repeat_interleave(2, dim=2))


def test_he_initialised_resampling_mixes_frames(video):
    torch.manual_seed(0)
    down, up = TemporalDownsample(C, init="he"), TemporalUpsample(C, init="he")
    assert not torch.allclose(_unfold(down(_fold(video), T)), video[:, :, ::2], atol=1e-3)
    assert not torch.allclose(_unfold(up(_fold(video), T)), video.repeat_interleave(2, dim=2), atol=1e-3)
    with pytest.raises(ConfigError, match="init"):
        TemporalDownsample(C, init="xavier")


def test_downsample_rejects_odd_frame_count(video):
    with pytest.raises(ConfigError, match="even"):
        TemporalDownsample(C)(_fold(video[:, :, :5]), 5)


@pytest.mark.parametrize("block", [FactorizedSpaceTimeConvBlock(C), TemporalAttentionBlock(C, num_heads=2)], ids=["conv", "attention"])
def test_inflation_blocks_are_identity_at_init(video, block):
    x = _fold(video)
    assert torch.equal(block(x, T), x)


def _with_random_projection(block, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        block.proj_out.weight.copy_(0.3 * torch.randn(block.proj_out.weight.shape, generator=g))
    return block


def test_factorized_conv_block_mixes_neighbouring_frames_only(video):
    block = _with_random_projection(FactorizedSpaceTimeConvBlock(C, temporal_kernel=3))
    changed = video.clone()
    # perturb frame 0 (not by a constant, which the per-frame GroupNorm would remove):
    # a 3-tap temporal conv carries the change to frame 1, not to frame 2
    changed[:, :, 0] += torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(1))
    # GroupNorm statistics are per frame, so frames beyond the kernel's reach see no change at all.
    delta = _unfold(block(_fold(changed), T)) - _unfold(block(_fold(video), T))
    assert delta[:, :, 1].abs().max() > 1e-4
    assert torch.allclose(delta[:, :, 2:], torch.zeros_like(delta[:, :, 2:]), atol=1e-6)


def test_temporal_attention_knows_frame_order(video):
    """With the frame position encoding, reversing the frames does not just reverse the output."""
    torch.manual_seed(0)
    block = _with_random_projection(TemporalAttentionBlock(C, num_heads=2))
    forward = _unfold(block(_fold(video), T))
    reversed_in = _unfold(block(_fold(video.flip(2)), T))
    assert (reversed_in.flip(2) - forward).abs().max() > 1e-4
    # ... and every frame attends to the others: changing frame 0 changes the last frame's output.
    changed = video.clone()
    changed[:, :, 0] += torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(1))
    assert (_unfold(block(_fold(changed), T))[:, :, -1] - forward[:, :, -1]).abs().max() > 1e-5


def test_temporal_attention_rejects_bad_head_count():
    with pytest.raises(ConfigError, match="heads"):
        TemporalAttentionBlock(6, num_heads=4)


def test_attention_pooling_of_the_caption_starts_as_the_mean_and_can_single_out_a_word():
    from lumiere.models.temporal import PooledTextEmbedding

    torch.manual_seed(0)
    text = torch.randn(3, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3, [False] * 7])
    mean, attention = PooledTextEmbedding(16, 12), PooledTextEmbedding(16, 12, pooling="attention")
    attention.norm.load_state_dict(mean.norm.state_dict())
    attention.mlp.load_state_dict(mean.mlp.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(attention(text, mask), mean(text, mask), rtol=0, atol=1e-6)  # zero query: uniform
        # A query aligned with token 2's key puts nearly all weight on it (padding never gets any).
        states = attention.norm(text)
        attention.query.copy_(50 * attention.key(states)[0, 2] / attention.key(states)[0, 2].norm())
        pooled = attention(text, mask)
        assert (pooled[0] - attention.mlp(states[0, 2])).abs().max() < 1e-3
        assert torch.isfinite(pooled).all()  # the all-padding caption pools to zero, not NaN
    assert [n for n, p in attention.named_parameters() if n.startswith(("key", "query"))] == ["query", "key.weight"]
    with pytest.raises(ConfigError, match="pooling"):
        PooledTextEmbedding(16, 12, pooling="max")


def test_layout_shift_starts_at_zero_and_writes_a_resolution_independent_smooth_map():
    from lumiere.models.temporal import SpatialLayoutShift

    layout = SpatialLayoutShift(emb_dim=6, channels=3, frequencies=4)
    emb = torch.randn(5, 6, generator=torch.Generator().manual_seed(1))
    assert layout(emb, 8, 8).abs().max() == 0  # zero projection: no shift at initialisation
    basis = layout.basis(8, 8)
    assert basis.shape == (16, 8, 8)
    # DCT-II: the first map is constant, and the maps are orthogonal (with norms h w / (2^[u>0] 2^[v>0])).
    assert torch.allclose(basis[0], torch.ones(8, 8))
    gram = torch.einsum("khw,lhw->kl", basis, basis)
    assert torch.allclose(gram, torch.diag(torch.diagonal(gram)), atol=1e-4)
    # The same coefficients mean the same layout at every level: pooling the 16x16 map to 8x8 gives
    # nearly the 8x8 map (exactly so for the constant term), e.g. "object on the left" at every level.
    with torch.no_grad():
        layout.proj.weight.normal_(generator=torch.Generator().manual_seed(2))
    fine, coarse = layout(emb, 16, 16), layout(emb, 8, 8)
    pooled = torch.nn.functional.avg_pool2d(fine, 2)
    assert (pooled - coarse).abs().max() < 0.15 * coarse.abs().max()
    with pytest.raises(ConfigError, match="frequency"):
        SpatialLayoutShift(6, 3, frequencies=0)


@pytest.mark.parametrize("block_type", [FactorizedSpaceTimeConvBlock, TemporalAttentionBlock])
def test_layout_shift_lets_the_embedding_say_where(block_type):
    # A frame whose features are the same at every pixel: FiLM alone (a per-frame scale and shift) keeps
    # the attention block's output the same at every pixel; the layout shift makes it depend on the place.
    torch.manual_seed(3)
    features = torch.randn(T, C, 1, 1).expand(T, C, H, W).contiguous()  # one video, constant in space
    emb = torch.randn(T, 16)

    def spatial_spread(block):
        with torch.no_grad():
            # past initialisation (the same draw for both blocks): the block's output shows its inside
            block.proj_out.weight.normal_(generator=torch.Generator().manual_seed(0))
            out = block(features, num_frames=T, emb=emb)
        return (out - out.mean(dim=(-2, -1), keepdim=True)).abs().max().item()

    plain = block_type(C, emb_dim=16)
    with_layout = block_type(C, emb_dim=16, layout_frequencies=3)
    with_layout.load_state_dict(plain.state_dict(), strict=False)
    assert spatial_spread(with_layout) == pytest.approx(spatial_spread(plain), abs=1e-6)  # zero at init: same block
    with torch.no_grad():
        with_layout.layout_shift.proj.weight.normal_()
    if block_type is TemporalAttentionBlock:
        assert spatial_spread(plain) < 1e-5
    assert spatial_spread(with_layout) > spatial_spread(plain) + 1e-2
    with pytest.raises(ConfigError, match="temporal_conditioning"):
        block_type(C, layout_frequencies=3)


def test_positional_pooling_keeps_a_one_word_change_large_where_the_mean_shrinks_it():
    from lumiere.models.temporal import PooledTextEmbedding

    torch.manual_seed(0)
    text = torch.randn(2, 40, 16)
    text[1] = text[0]
    text[1, 10:13] = torch.randn(3, 16)  # caption 1 differs from caption 0 in one short word (3 of 40 tokens)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mean = PooledTextEmbedding(16, 12)
    positional = PooledTextEmbedding(16, 12, pooling="positional", num_tokens=48)
    positional.norm.load_state_dict(mean.norm.state_dict())
    positional.mlp.load_state_dict(mean.mlp.state_dict())
    with torch.no_grad():
        pooled_mean, pooled_positional = mean(text, mask), positional(text, mask)

        def relative_change(pooled):
            return float((pooled[0] - pooled[1]).norm() / pooled[0].norm())

        assert relative_change(pooled_positional) > 3 * relative_change(pooled_mean)
        # Its mean part is the mean pooling; the sequence part reads padding (and masked tokens) as zeros.
        sequence = positional.norm(text) * mask[..., None]
        expected = pooled_mean + positional.sequence(torch.nn.functional.pad(sequence, (0, 0, 0, 8)).flatten(1))
        torch.testing.assert_close(pooled_positional, expected)
        short_mask = mask.clone()
        short_mask[:, 30:] = False
        cut = positional(text[:, :30], short_mask[:, :30])
        torch.testing.assert_close(positional(text, short_mask), cut)  # masked tokens = absent tokens
        assert positional(torch.randn(2, 60, 16), torch.ones(2, 60, dtype=torch.bool)).shape == (2, 12)  # cut to 48
    with pytest.raises(ConfigError, match="num_tokens"):
        PooledTextEmbedding(16, 12, pooling="positional", num_tokens=0)


def test_whitened_pooling_gives_a_rare_word_the_scale_of_a_common_one():
    """Captions = a shared prefix + one of 4 'colour' words (6 distinct tokens) + one of 4 'direction'
    words (one token, nearly the same for all four): after whitening both factors reach the MLP at
    comparable scale."""
    from lumiere.models.temporal import PooledTextEmbedding

    torch.manual_seed(0)
    prefix, colours = torch.randn(20, 16), torch.randn(4, 6, 16)
    directions = torch.randn(1, 1, 16) + 0.3 * torch.randn(4, 1, 16)
    text = torch.stack([torch.cat([prefix, colours[c], directions[d]]) for c in range(4) for d in range(4)])
    mask = torch.ones(text.shape[:2], dtype=torch.bool)
    pooling = PooledTextEmbedding(16, 12, pooling="whitened")
    assert pooling.norm is None and pooling.needs_whitening
    summary = pooling.fit_whitening(text, mask)
    assert not pooling.needs_whitening and summary["captions"] == 16

    def factor_spread(vectors, factor):  # mean distance between the factor's group means
        groups = vectors.view(4, 4, -1).mean(dim=1 - factor)
        return float(torch.pdist(groups).mean())

    raw = pooling.pooled_for_whitening(text, mask)
    whitened = (raw - pooling.whitening_mean) @ pooling.whitening_matrix
    assert factor_spread(raw, 1) < 0.2 * factor_spread(raw, 0)  # the direction word is drowned out ...
    assert factor_spread(whitened, 1) > 0.5 * factor_spread(whitened, 0)  # ... and whitened, it is not
    torch.testing.assert_close(whitened.mean(dim=0), torch.zeros(16), atol=1e-4, rtol=0)
    assert torch.linalg.eigvalsh(whitened.T @ whitened / 15).max() <= 1.0 + 1e-4  # no direction above unit variance

    # the whitening is part of the module's state: a copy loaded from it pools identically
    copy = PooledTextEmbedding(16, 12, pooling="whitened")
    copy.load_state_dict(pooling.state_dict())
    assert not copy.needs_whitening
    with torch.no_grad():
        torch.testing.assert_close(copy(text, mask), pooling(text, mask))
    with pytest.raises(ConfigError, match="whitened"):
        PooledTextEmbedding(16, 12).fit_whitening(text, mask)
    with pytest.raises(ConfigError, match="at least 2"):
        PooledTextEmbedding(16, 12, pooling="whitened").fit_whitening(text[:1], mask[:1])
